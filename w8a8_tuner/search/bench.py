"""How every kernel time in this project is taken: `Bench.measure`, the one timing function of the
tuner, verify and the benchmarks (as Triton's autotuner takes its bench function as an argument).

`measure(launchers, launches, rounds)` times several contenders side by side. Each launcher is
`launch(copy)`: run the kernel once on weight copy number `copy` (the launcher takes it modulo
its number of copies). Result: per contender, its microseconds per launch in each round.

GPU (`GpuBench`), the method:
- Rounds, interleaved: in every round each contender is timed once, in an order rotated from
  round to round, so that drift (clocks, heat, a neighbour on the node) spreads over all
  contenders instead of favouring whoever ran first. Callers take the median over rounds.
- No host time in any number: a round is queued in segments, each behind a sleep kernel that
  holds the stream while the host queues the segment, with one CUDA event between consecutive
  contenders. A segment counts only if the host had queued all of it before the sleep ended on
  the GPU, checked per segment: host queueing time < sleep time measured by events (the sleep
  cannot start before it is queued). Otherwise it is queued again behind a longer sleep. So the
  GPU never waits for the host inside a timed interval, whatever the host's launch cost.
- Weights cold in L2, as in serving (where the other layers' weights pass through L2 between
  two calls of one layer): consecutive launches read consecutive weight copies
  (`rotating_weights`), enough of them that one cycle overflows L2 several times.
- A contender's time in a round is the time between its two events over its launches.

Interpreter (`WallBench`): the same calls timed with the host clock, one launch after another.
Its numbers mean nothing as GPU speed; they only let the CPU test suite run the same code.
"""

from __future__ import annotations

import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from kernels.blocks import cdiv

Launch = Callable[[int], object]


class BenchError(RuntimeError):
    pass


def launches_for(estimate_us: float, budget_us: float, lo: int = 1, hi: int = 200) -> int:
    """Launches that fill about `budget_us` of GPU time, for a kernel of `estimate_us`."""
    return int(min(hi, max(lo, budget_us // max(estimate_us, 0.5))))


def medians(samples: list[list[float]]) -> list[float]:
    return [statistics.median(s) for s in samples]


def weight_copies(weight_bytes: int, cache_bytes: int, limit: int = 64) -> int:
    """Copies of the weight to cycle through so that one cycle evicts the cache three times over."""
    if cache_bytes <= 0:
        return 1
    return max(2, min(limit, cdiv(3 * cache_bytes, max(weight_bytes, 1))))


def rotating_weights(B, Bs, cache_bytes: int) -> list:
    """The weight and its scales, plus copies enough to keep them cold in a cache of `cache_bytes`."""
    copies = weight_copies(B.numel() * B.element_size() + Bs.numel() * Bs.element_size(), cache_bytes)
    return [(B, Bs)] + [(B.clone(), Bs.clone()) for _ in range(copies - 1)]


class Bench(ABC):
    """Times contenders side by side; see the module docstring for the method."""

    def __init__(self):
        self._copy = 0

    def _next_copy(self) -> int:
        self._copy += 1
        return self._copy

    @abstractmethod
    def measure(self, launchers: Sequence[Launch], launches: int | Sequence[int], rounds: int) -> list[list[float]]:
        """Per launcher, its microseconds per launch in each of `rounds` rounds."""

    def median_us(self, launchers: Sequence[Launch], launches: int | Sequence[int], rounds: int) -> list[float]:
        return medians(self.measure(launchers, launches, rounds))


def _per_contender(launches: int | Sequence[int], n: int) -> list[int]:
    per = [launches] * n if isinstance(launches, int) else [int(x) for x in launches]
    if len(per) != n or min(per, default=1) < 1:
        raise ValueError(f"launches must be one positive count or one per contender, got {launches!r}")
    return per


def _round_order(n: int, r: int) -> list[int]:
    """Contenders in round r: rotated by r and reversed every other round (no fixed neighbours)."""
    order = [(i + r) % n for i in range(n)]
    return order[::-1] if r % 2 else order


class WallBench(Bench):
    """Host wall clock, one launch after another (interpreter on CPU: meaningless times)."""

    def measure(self, launchers, launches, rounds):
        per = _per_contender(launches, len(launchers))
        times: list[list[float]] = [[] for _ in launchers]
        for r in range(rounds):
            for i in _round_order(len(launchers), r):
                t0 = time.perf_counter()
                for _ in range(per[i]):
                    launchers[i](self._next_copy())
                times[i].append((time.perf_counter() - t0) * 1e6 / per[i])
        return times


class GpuBench(Bench):
    """CUDA events behind a held stream (see the module docstring)."""

    def __init__(self, max_segment_launches: int = 192, attempts: int = 6):
        super().__init__()
        import torch

        self._torch = torch
        self.max_segment_launches = max_segment_launches
        self.attempts = attempts
        self.host_us = 40.0  # host time to queue one launch or event, learned (starts high)
        self._events: list = []
        self.retries = 0     # segments queued again because the host was not done in time

    def _event_pool(self, n: int) -> list:
        while len(self._events) < n:
            self._events.append(self._torch.cuda.Event(enable_timing=True))
        return self._events[:n]

    def measure(self, launchers, launches, rounds):
        per = _per_contender(launches, len(launchers))
        times: list[list[float]] = [[] for _ in launchers]
        for r in range(rounds):
            segment: list[int] = []
            for i in _round_order(len(launchers), r):
                if segment and sum(per[j] for j in segment) + per[i] > self.max_segment_launches:
                    self._time_segment(launchers, segment, per, times)
                    segment = []
                segment.append(i)
            if segment:
                self._time_segment(launchers, segment, per, times)
        return times

    def _time_segment(self, launchers, segment: list[int], per: list[int], times) -> None:
        torch = self._torch
        queued = sum(per[i] for i in segment) + len(segment) + 1  # launches and events
        events = self._event_pool(len(segment) + 2)
        for _ in range(self.attempts):
            hold_us = 1.5 * self.host_us * queued + 100.0
            t0 = time.perf_counter()
            events[0].record()
            # torch.cuda._sleep spins for a number of GPU cycles; 2 GHz is above Hopper's clocks,
            # so this holds at least hold_us (what counts is the time the events measure).
            torch.cuda._sleep(int(hold_us * 2000))
            events[1].record()
            for j, i in enumerate(segment):
                launch, n = launchers[i], per[i]
                for _ in range(n):
                    launch(self._next_copy())
                events[j + 2].record()
            host_us = (time.perf_counter() - t0) * 1e6
            events[len(segment) + 1].synchronize()
            held_us = events[0].elapsed_time(events[1]) * 1000.0
            per_item = host_us / queued
            self.host_us = max(0.9 * self.host_us + 0.1 * per_item, per_item)
            if host_us < held_us:
                for j, i in enumerate(segment):
                    times[i].append(events[j + 1].elapsed_time(events[j + 2]) * 1000.0 / per[i])
                return
            self.retries += 1
            self.host_us = max(self.host_us, 2 * per_item)
        raise BenchError(f"the host could not queue {queued} launches and events within the sleep that held the "
                         f"stream ({self.attempts} attempts; last: queued in {host_us:.0f} us, held {held_us:.0f} us)")
