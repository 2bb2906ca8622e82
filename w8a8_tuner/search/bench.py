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
- A contender of several launches a round is captured once as a CUDA graph of those launches (over
  consecutive weight copies) and replayed every round: one host call a round, so the stream is held
  for microseconds instead of the host's launch cost per launch. The engines serve decode from CUDA
  graphs too; a replay's launches run back to back, as there.

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
    """CUDA events behind a held stream (see the module docstring); a contender of several launches a round
    is one CUDA graph, captured once and replayed every round."""

    learned_host_us = {"launch": 40.0, "graph": 20.0}  # what the last bench of this process learned
    # After a slow segment (a one-off: the first launch of a kernel, the garbage collector) the learned cost
    # decays by this factor a segment, so that later segments are not held for long for nothing.
    DECAY = 0.7

    def __init__(self, max_segment_launches: int = 192, attempts: int = 6, max_segment_graphs: int = 64,
                 graphs: bool = True):
        super().__init__()
        import torch

        self._torch = torch
        self.max_segment_launches = max_segment_launches
        self.max_segment_graphs = max_segment_graphs
        self.attempts = attempts
        self.graphs = graphs
        # host time to queue one call (a launch, or a graph replay, and the events beside them), learned per
        # kind and carried from bench to bench in a process (a worker tunes many points); a segment holds the
        # stream for 1.5x what its calls are expected to take
        self.host_us = dict(GpuBench.learned_host_us)
        self._events: list = []
        self._captured: dict = {}  # (launcher, launches) -> replay(), for the bench's life (one point)
        self.retries = 0     # segments queued again because the host was not done in time
        self.captures = 0    # graphs captured

    def _event_pool(self, n: int) -> list:
        while len(self._events) < n:
            self._events.append(self._torch.cuda.Event(enable_timing=True))
        return self._events[:n]

    def measure(self, launchers, launches, rounds):
        per = _per_contender(launches, len(launchers))
        times: list[list[float]] = [[] for _ in launchers]
        # A contender of several launches a round runs as one graph: one host call a round instead of one per
        # launch, so the stream is held for a few microseconds instead of tens per launch.
        items = [self._graph(launchers[i], per[i]) if self.graphs and per[i] > 1 else None
                 for i in range(len(launchers))]
        for r in range(rounds):
            segment: list[int] = []
            for i in _round_order(len(launchers), r):
                if segment and self._full(segment, i, per, items):
                    self._time_segment(launchers, items, segment, per, times)
                    segment = []
                segment.append(i)
            if segment:
                self._time_segment(launchers, items, segment, per, times)
        return times

    def _full(self, segment: list[int], i: int, per: list[int], items: list) -> bool:
        """Whether contender i starts a new segment: segments hold one kind of call, and a bounded number."""
        graph = items[i] is not None
        if graph != (items[segment[0]] is not None):
            return True
        if graph:
            return len(segment) >= self.max_segment_graphs
        return sum(per[j] for j in segment) + per[i] > self.max_segment_launches

    def _graph(self, launch, n: int):
        """replay(): the n launches of `launch` over the next n weight copies, captured once as a CUDA graph."""
        key = (launch, n)
        if key not in self._captured:
            self._captured[key] = self._capture([launch] * n, [self._next_copy() for _ in range(n)])
            self.captures += 1
        return self._captured[key]

    def _capture(self, launches, copies):
        torch = self._torch
        if not hasattr(self, "_capture_stream"):
            self._capture_stream = torch.cuda.Stream()
            self._graph_pool = torch.cuda.graph_pool_handle()  # graphs replay one at a time: one pool
        for launch, copy in zip(launches[:1], copies):
            launch(copy)  # anything a first launch does (loading the binary) happens outside the capture
        graph = torch.cuda.CUDAGraph()
        stream = self._capture_stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            graph.capture_begin(pool=self._graph_pool)
            try:
                for launch, copy in zip(launches, copies):
                    launch(copy)
            finally:
                graph.capture_end()
        torch.cuda.current_stream().wait_stream(stream)
        return graph.replay

    def _time_segment(self, launchers, items, segment: list[int], per: list[int], times) -> None:
        torch = self._torch
        kind = "graph" if items[segment[0]] is not None else "launch"
        calls = (len(segment) if kind == "graph" else sum(per[i] for i in segment)) + len(segment) + 1
        events = self._event_pool(len(segment) + 2)
        for _ in range(self.attempts):
            hold_us = 1.5 * self.host_us[kind] * calls + 100.0
            t0 = time.perf_counter()
            events[0].record()
            # torch.cuda._sleep spins for a number of GPU cycles; 2 GHz is above Hopper's clocks,
            # so this holds at least hold_us (what counts is the time the events measure).
            torch.cuda._sleep(int(hold_us * 2000))
            events[1].record()
            for j, i in enumerate(segment):
                if kind == "graph":
                    items[i]()
                else:
                    launch = launchers[i]
                    for _ in range(per[i]):
                        launch(self._next_copy())
                events[j + 2].record()
            host_us = (time.perf_counter() - t0) * 1e6
            events[len(segment) + 1].synchronize()
            held_us = events[0].elapsed_time(events[1]) * 1000.0
            per_call = host_us / calls
            self.host_us[kind] = max(self.DECAY * self.host_us[kind] + (1 - self.DECAY) * per_call, per_call)
            GpuBench.learned_host_us[kind] = self.host_us[kind]
            if host_us < held_us:
                for j, i in enumerate(segment):
                    times[i].append(events[j + 1].elapsed_time(events[j + 2]) * 1000.0 / per[i])
                return
            self.retries += 1
            self.host_us[kind] = max(self.host_us[kind], 2 * per_call)
            GpuBench.learned_host_us[kind] = self.host_us[kind]
        raise BenchError(f"the host could not queue {calls} launches and events within the sleep that held the "
                         f"stream ({self.attempts} attempts; last: queued in {host_us:.0f} us, held {held_us:.0f} us)")
