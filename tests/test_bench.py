"""The bench: the GPU method on a simulated GPU (no host time in any number, even with a slow host),
the interleaved round order, and the interpreter's wall-clock variant."""

from collections import Counter

import pytest

from w8a8_tuner.search import bench as bench_module
from w8a8_tuner.search.bench import GpuBench, WallBench, _round_order, launches_for, weight_copies


class SimulatedGpu:
    """One CUDA stream: the host queues items (each costing it `host_us`); the GPU runs them in order,
    starting each when it is queued and the previous one is done. Events read the GPU's clock."""

    def __init__(self, host_us: float):
        self.host_us, self.host, self.gpu_free = host_us, 0.0, 0.0

    def queue(self, duration: float) -> float:
        self.host += self.host_us
        start = max(self.gpu_free, self.host)
        self.gpu_free = start + duration
        return self.gpu_free

    # what GpuBench uses of torch
    @property
    def cuda(self):
        return self

    def Event(self, enable_timing=True):  # noqa: N802 - torch's name
        sim = self

        class Event:
            t = None

            def record(self):
                self.t = sim.queue(0.0)

            def synchronize(self):
                sim.host = max(sim.host, self.t)

            def elapsed_time(self, other):
                return (other.t - self.t) / 1000.0  # ms, like torch

        return Event()

    def _sleep(self, cycles: int):
        self.queue(cycles / 2000.0)  # the bench assumes 2 GHz

    # a CUDA graph: its launches recorded once; a replay is one host call that queues them all
    def capture(self, launches, copies):
        recorded = []
        self.capturing = recorded
        for launch, copy in zip(launches, copies):
            launch(copy)
        self.capturing = None

        def replay():
            self.host += self.host_us
            for duration in recorded:
                start = max(self.gpu_free, self.host)
                self.gpu_free = start + duration
        return replay

    capturing = None


def gpu_bench(sim: SimulatedGpu, monkeypatch, graphs: bool = True) -> GpuBench:
    monkeypatch.setattr(bench_module.time, "perf_counter", lambda: sim.host / 1e6)
    monkeypatch.setattr(GpuBench, "learned_host_us", {"launch": 40.0, "graph": 20.0})
    b = GpuBench.__new__(GpuBench)
    GpuBench.__init__(b, graphs=graphs)
    b._torch = sim
    b._capture = lambda launches, copies: sim.capture(launches, copies)
    return b


def kernels(sim, durations):
    """Launchers of kernels that take `durations` us on the GPU; each records the copies it was given."""
    copies = [[] for _ in durations]

    def make(i):
        def launch(copy):
            copies[i].append(copy)
            if sim.capturing is not None:
                sim.capturing.append(durations[i])
            else:
                sim.queue(durations[i])
        return launch

    return [make(i) for i in range(len(durations))], copies


@pytest.mark.parametrize("graphs", [True, False])
@pytest.mark.parametrize("host_us", [5.0, 30.0, 400.0])
def test_no_host_time_in_any_number(monkeypatch, host_us, graphs):
    """Kernels far shorter than the host's launch cost are timed at their GPU time, single launches and
    batches (graph replays or launches) alike; a host slower than the bench assumed (400 us a launch
    against its 40 us start) is caught by the per-segment check and the segment queued again behind a
    longer hold."""
    sim = SimulatedGpu(host_us)
    b = gpu_bench(sim, monkeypatch, graphs)
    durations = [3.0, 7.5, 20.0, 1.25]
    launchers, copies = kernels(sim, durations)
    for launches in (1, [5, 2, 9, 40]):
        times = b.measure(launchers, launches, rounds=4)
        for got, want in zip(times, durations):
            assert got == pytest.approx([want] * 4, rel=1e-9)
    assert (b.retries > 0) == (host_us > 40.0)
    # consecutive launches read consecutive weight copies
    for c in copies:
        assert len(set(c)) == len(c)


def test_batches_are_graphs_captured_once_and_hold_the_stream_briefly(monkeypatch):
    """A contender of several launches a round is one graph, captured once and replayed every round: the host
    makes one call per contender a round, so the stream is held for far less GPU time than the launches
    would need; still every number is the kernels' GPU time."""
    durations = [3.0, 7.5, 20.0, 1.25]
    held = {}
    for graphs in (True, False):
        sim = SimulatedGpu(30.0)
        b = gpu_bench(sim, monkeypatch, graphs)
        sleeps = []
        real_sleep = sim._sleep
        sim._sleep = lambda cycles, sleeps=sleeps, real_sleep=real_sleep: (sleeps.append(cycles / 2000.0),
                                                                            real_sleep(cycles))
        launchers, copies = kernels(sim, durations)
        times = b.measure(launchers, 50, rounds=6)
        assert all(t == pytest.approx([d] * 6, rel=1e-9) for t, d in zip(times, durations))
        held[graphs] = sum(sleeps)
        assert b.captures == (4 if graphs else 0)
        # each contender's launches read consecutive, distinct weight copies
        assert all(len(set(c)) == len(c) for c in copies)
    assert held[True] < held[False] / 15


def test_a_slow_segment_is_forgotten_and_what_is_learned_carries_to_the_next_bench(monkeypatch):
    """One slow segment (a first launch, a collection) raises the expected host cost at once; it decays within
    a few segments, so later segments are not held for long for nothing; the next bench of the process
    starts from what this one learned."""
    sim = SimulatedGpu(2.0)
    b = gpu_bench(sim, monkeypatch)
    launchers, _ = kernels(sim, [3.0] * 8)
    sim.host_us = 400.0  # one-off
    b.measure(launchers, 1, rounds=1)
    assert b.host_us["launch"] >= 400.0
    sim.host_us = 2.0
    holds = []
    real_sleep = sim._sleep
    sim._sleep = lambda cycles: (holds.append(cycles / 2000.0), real_sleep(cycles))
    times = b.measure(launchers, 1, rounds=12)
    assert all(t == pytest.approx([3.0] * 12) for t in times)
    assert holds[-1] < holds[0] / 20
    after = GpuBench.__new__(GpuBench)
    GpuBench.__init__(after)
    assert after.host_us["launch"] == pytest.approx(b.host_us["launch"])


def test_what_the_check_prevents(monkeypatch):
    """Without the hold (the old first timing), an event bracket around one launch on an idle GPU
    measures the host's launch cost, not the kernel."""
    sim = SimulatedGpu(25.0)
    [launch], _ = kernels(sim, [4.0])
    start, end = sim.Event(), sim.Event()
    start.record()
    launch(0)
    end.record()
    # the GPU waited for the host to queue the launch and then the end event: 2 x 25 us, for a 4 us kernel
    assert start.elapsed_time(end) * 1000 == pytest.approx(2 * 25.0)


def test_segments_are_bounded_and_still_exact(monkeypatch):
    sim = SimulatedGpu(10.0)
    b = gpu_bench(sim, monkeypatch)
    b.max_segment_launches = 7
    launchers, _ = kernels(sim, [2.0] * 5)
    times = b.measure(launchers, 3, rounds=2)
    assert all(t == pytest.approx([2.0, 2.0]) for t in times)


def test_round_order_interleaves_fairly():
    """Every contender takes every position equally often over n rounds, and no two stay neighbours."""
    n = 5
    positions = Counter()
    for r in range(2 * n):
        order = _round_order(n, r)
        assert sorted(order) == list(range(n))
        positions.update((c, i) for i, c in enumerate(order))
    assert set(positions.values()) == {2}


def test_wall_bench_same_interface():
    calls = []
    launchers = [lambda copy, i=i: calls.append((i, copy)) for i in range(3)]
    times = WallBench().measure(launchers, [1, 2, 3], rounds=2)
    assert [len(t) for t in times] == [2, 2, 2] and all(x >= 0 for t in times for x in t)
    assert Counter(i for i, _ in calls) == {0: 2, 1: 4, 2: 6}
    with pytest.raises(ValueError, match="one per contender"):
        WallBench().measure(launchers, [1, 2], rounds=1)


def test_batch_sizes_and_copies():
    assert launches_for(10.0, 100.0) == 10 and launches_for(500.0, 100.0) == 1 and launches_for(0.01, 1e9) == 200
    assert weight_copies(4 << 20, 50 << 20) == 38 and weight_copies(1 << 30, 50 << 20) == 2
    assert weight_copies(1 << 20, 0) == 1  # the interpreter: no cache to defeat
