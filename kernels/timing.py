"""GPU timing of one kernel launch, without CPU launch overhead and with weights cold in L2.

How a number is taken: the stream is first held by a sleep kernel long enough
for the CPU to queue every launch of the batch behind it; events then bracket
`launches` back-to-back launches, each reading a different copy of the weight,
so the GPU never waits for the CPU and never finds the weight in L2 (as in
serving, where the other layers' weights pass through L2 between two calls of
one layer). The time of one launch is the batch time over `launches`; the
median over `repeats` batches is reported.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

# Host time to queue one launch, learned from the batches timed so far (starts high).
_host_us_per_launch = 60.0


def weight_copies(weight_bytes: int, l2_bytes: int, limit: int = 64) -> int:
    """How many copies of the weight to rotate through so that one pass evicts L2."""
    needed = -(-3 * l2_bytes // max(weight_bytes, 1))
    return max(2, min(limit, needed))


def rotating_weights(B: torch.Tensor, Bs: torch.Tensor, on_gpu: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The weight and its scales, plus enough copies to keep them cold in L2 (no copies on CPU)."""
    if not on_gpu:
        return [(B, Bs)]
    l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    copies = weight_copies(B.numel() * B.element_size() + Bs.numel() * Bs.element_size(), l2)
    return [(B, Bs)] + [(B.clone(), Bs.clone()) for _ in range(copies - 1)]


def _sleep_us(us: float) -> None:
    # torch.cuda._sleep spins for a number of cycles; ~2 GHz is an upper bound
    # for Hopper clocks, so this sleeps at least `us` in practice or a bit more.
    torch.cuda._sleep(int(us * 2000))


def time_batch(launch: Callable[[int], None], launches: int, copies: int) -> float:
    """Microseconds per launch for one batch of back-to-back launches."""
    global _host_us_per_launch
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    _sleep_us(launches * _host_us_per_launch * 1.5 + 20)
    t0 = time.perf_counter()
    start.record()
    for i in range(launches):
        launch(i % copies)
    end.record()
    host_us = (time.perf_counter() - t0) * 1e6 / launches
    _host_us_per_launch = max(0.8 * _host_us_per_launch + 0.2 * host_us, host_us)
    end.synchronize()
    return start.elapsed_time(end) * 1000.0 / launches


def launches_for(estimate_us: float, budget_us: float, lo: int = 2, hi: int = 100) -> int:
    return int(min(hi, max(lo, budget_us // max(estimate_us, 0.5))))


def median_time_us(launch: Callable[[int], None], copies: int, budget_us: float, repeats: int,
                   estimate_us: float) -> float:
    """Median over `repeats` batches, each sized to last about budget_us of GPU time."""
    launches = launches_for(estimate_us, budget_us)
    return statistics.median(time_batch(launch, launches, copies) for _ in range(repeats))


def wall_time_us(fn: Callable[[], None]) -> float:
    """Interpreter backend: wall time of one call. Meaningless as GPU speed."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e6
