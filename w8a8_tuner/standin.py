"""The projection's stand-in for the GPU and the compiler: sleeps the measured time (benchmarks/projection.py).

Used only when w8a8_tuner.hooks.STANDIN_ENV names a costs file; never in production. What stays real:
Snakemake, the GPU slots (fake ones, W8A8_TUNER_FAKE_GPUS), the client, the persistent worker, the
compile pools, per-config locks and outcome files, streaming (`compile_stream`) and compile jobs'
prefetch. What sleeps instead: compiling one config (its measured seconds, on one of the node's
simulated cores) and the GPU work of a point (the measured first-round seconds per config of each
compiled batch, then the measured rest of the point). No torch, no triton, no GPU.

Costs file (JSON, written by `python3 -m benchmarks.projection costs|synthetic`):
  compile          {spec: {"mean_s": s, "configs": {label: [seconds, status]}}}; a missing config takes
                   its spec's mean, a missing spec `compile_mean_s`
  points           {"N<N>_K<K>_M<M>": {"first_round_s_per_config": s, "rest_s": s}}; a missing point
                   takes `defaults`
  worker_start_s   what a worker pays once before its first point (torch, CUDA context)
  time_scale       every sleep is divided by it (set by the projection run)
  cpu_semaphore    SysV semaphore id of the node's simulated compile cores, or null (no contention)
  compile_log      a file to append one line per compiled config to (time, spec, label, who, seconds), or null
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import time
import zlib
from dataclasses import dataclass, field

from w8a8_tuner.search.status import OK, PRUNED

FORMAT = "w8a8-standin-costs v1"


def point_key(N: int, K: int, M: int) -> str:
    return f"N{N}_K{K}_M{M}"


class CpuCores:
    """The simulated node's compile cores, shared by every process of a run: a SysV semaphore (the
    kernel queues waiters without polling, and gives a killed holder's core back: SEM_UNDO)."""

    class _SemBuf(ctypes.Structure):
        _fields_ = [("sem_num", ctypes.c_ushort), ("sem_op", ctypes.c_short), ("sem_flg", ctypes.c_short)]

    _IPC_PRIVATE, _IPC_CREAT, _IPC_RMID, _SETVAL, _SEM_UNDO = 0, 0o1000, 0, 16, 0x1000

    def __init__(self, semid: int):
        self.semid = semid
        self._libc = ctypes.CDLL(None, use_errno=True)

    @classmethod
    def create(cls, cores: int) -> CpuCores:
        libc = ctypes.CDLL(None, use_errno=True)
        semid = libc.semget(cls._IPC_PRIVATE, 1, cls._IPC_CREAT | 0o600)
        if semid < 0 or libc.semctl(semid, 0, cls._SETVAL, ctypes.c_int(cores)) < 0:
            raise OSError(ctypes.get_errno(), "cannot create the simulated cores' semaphore")
        return cls(semid)

    def remove(self) -> None:
        self._libc.semctl(self.semid, 0, self._IPC_RMID)

    def _op(self, delta: int) -> None:
        buf = self._SemBuf(0, delta, self._SEM_UNDO)
        while self._libc.semop(self.semid, ctypes.byref(buf), 1) < 0:
            if ctypes.get_errno() != errno.EINTR:
                raise OSError(ctypes.get_errno(), f"semop on the simulated cores' semaphore {self.semid}")

    @contextlib.contextmanager
    def held(self):
        self._op(-1)
        try:
            yield
        finally:
            self._op(+1)


@dataclass
class _Row:
    """One TSV row (w8a8_tuner.results.tsv reads these attributes, as of stages.Result)."""
    config: object
    status: str
    time_us: float = float("nan")
    screen_us: float = float("nan")
    rel_error: float = float("nan")
    stage: str = ""
    note: str = ""


@dataclass
class StandIn:
    costs: dict
    scale: float = 1.0
    cores: CpuCores | None = None
    _worker_started: bool = field(default=False, repr=False)

    @classmethod
    def load(cls, path: str) -> StandIn:
        with open(path) as f:
            costs = json.load(f)
        if costs.get("format") != FORMAT:
            raise ValueError(f"{path}: not a stand-in costs file ({FORMAT})")
        semid = costs.get("cpu_semaphore")
        return cls(costs, float(costs.get("time_scale", 1.0)), CpuCores(semid) if semid is not None else None)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.scale)

    # --- compiling ------------------------------------------------------------------------------
    def compile_cost(self, spec: str, label: str) -> tuple[float, str]:
        """(measured seconds, status) of one config; a config not measured takes its spec's mean, ok."""
        by_spec = self.costs.get("compile", {}).get(spec, {})
        seconds, status = by_spec.get("configs", {}).get(label, (None, OK))
        if seconds is None:
            seconds = by_spec.get("mean_s", self.costs.get("compile_mean_s", 0.0))
        return float(seconds), status

    def compile_config(self, point, config):
        """What w8a8_tuner.search.compile.compile_config returns, after sleeping the measured time on a core."""
        from w8a8_tuner.search.compile import CompileResult, specialization_key

        spec = specialization_key(point)
        seconds, status = self.compile_cost(spec, config.label())
        with self.cores.held() if self.cores else contextlib.nullcontext():
            self.sleep(seconds)
        if self.costs.get("compile_log"):  # one line per compile: the projection counts them
            with open(self.costs["compile_log"], "a") as f:
                f.write(f"{time.time():.3f}\t{spec}\t{config.label()}\t{_compiler_kind()}\t{seconds}\n")
        return CompileResult(status, "stand-in" if status != OK else "")

    # --- one point on the GPU -------------------------------------------------------------------
    def point_cost(self, N: int, K: int, M: int) -> tuple[float, float]:
        """(first-round GPU seconds per compiled config, GPU seconds of the rest of the search)."""
        cost = self.costs.get("points", {}).get(point_key(N, K, M)) or self.costs.get("defaults", {})
        return float(cost.get("first_round_s_per_config", 0.0)), float(cost.get("rest_s", 0.0))

    def _start_worker(self, arch: int, workers: int, log) -> None:
        """What a real worker pays before its first point (torch, CUDA context: slept), then its compile pool,
        started here so that its start (real processes: not scaled) is not taken for compile time."""
        from w8a8_tuner.search.compile import _pool

        self._worker_started = True
        self.sleep(self.costs.get("worker_start_s", 0.0))
        t0 = time.perf_counter()
        _pool(arch, max(1, workers), compile_config)  # the pool compile_stream takes
        log(f"stand-in: worker start {self.costs.get('worker_start_s', 0.0):.2f} s, compile pool of {workers} "
            f"processes started in {time.perf_counter() - t0:.2f} s")

    def run_point(self, request: dict, log) -> str:
        """w8a8_tuner.jobs.point.run_point with the GPU's work slept: the real compile stream, a valid TSV."""
        from w8a8_tuner.plan.settings import settings_point
        from w8a8_tuner.results.tsv import point_meta, write_tsv
        from w8a8_tuner.search.compile import target_arch
        from w8a8_tuner.search.settings import SearchSettings
        from w8a8_tuner.search.space import pruned_at, settings_configs

        s = request["settings"]
        arch, workers = target_arch(s["device_name"]), int(request["compile_workers"])
        if not self._worker_started:
            self._start_worker(arch, workers, log)
        started = time.time()
        N, K, M = request["N"], request["K"], request["M"]
        configs = list(settings_configs(s, M))  # as run_point: the same configs, point and compile stream
        reasons = pruned_at(configs, M, K, SearchSettings(**s["search"]).prune_accumulators)
        rows = {c: _Row(c, PRUNED, note=reasons[c]) for c in configs if c in reasons}
        todo = [c for c in configs if c not in reasons]
        per_config_s, rest_s = self.point_cost(N, K, M)
        point = settings_point(s, N, K, M)
        ok = self._first_round(point, todo, workers, arch, per_config_s, rows, log)
        t0 = time.perf_counter()
        self.sleep(rest_s)
        log(f"[{time.perf_counter() - t0:7.2f} s] estimate, screen, re-measure (stand-in: the measured rest)")

        best, best_plain = _made_up_times(ok, rows, any(c.knobs for c in configs))
        meta = point_meta(s, N, K, M, "made up (projection stand-in)", request["slot"], os.uname().nodename,
                          started, time.time())
        write_tsv(request["tsv"], meta, [rows[c] for c in configs], best, best_plain)
        return f"{best.label()} {rows[best].time_us:.2f} us (stand-in)"

    def _first_round(self, point, todo: list, workers: int, arch: int, per_config_s: float, rows: dict, log) -> list:
        """The real compile stream; each batch's check and first timing round slept as it comes. The configs
        that compiled ok; the log line the costs are read back from (as stages._PhaseClock writes it)."""
        from w8a8_tuner.search.compile import compile_stream

        t0, gpu_s = time.perf_counter(), 0.0
        for batch in compile_stream(point, todo, workers, arch, compile_config):
            rows.update({c: _Row(c, r.status, note=r.note) for c, r in batch.items()})
            compiled_ok = sum(r.status == OK for r in batch.values())
            gpu_s += per_config_s * compiled_ok / self.scale
            self.sleep(per_config_s * compiled_ok)
        ok = [c for c in todo if rows[c].status == OK]
        took = time.perf_counter() - t0
        log(f"[{took:7.2f} s] compile {len(todo)} configs ({len(rows) - len(todo)} pruned), check {len(ok)}, "
            f"time {len(ok)} once (stand-in: GPU {gpu_s:.2f} s, waiting for compiles {took - gpu_s:.2f} s)")
        if not ok:
            raise RuntimeError(f"stand-in: no config of {point} compiled ok")
        return ok


def _compiler_kind() -> str:
    """Who this compile process works for: a tune job's worker or a compile job."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return "tune workers" if b"w8a8_tuner.jobs" in f.read() else "compile jobs"
    except OSError:
        return "unknown"


def _made_up_times(ok: list, rows: dict, knobs: bool):
    """Give every ok config a stable made-up time (from its label), the best three of each family (without and
    with a Hopper knob) re-measured; (the best, the best without a knob where the space has knobs, else None)."""
    for c in ok:
        r = rows[c]
        r.time_us = 10.0 + zlib.crc32(c.label().encode()) % 100000 / 1000
        r.rel_error, r.stage = 0.0, "estimate"
    ranked = sorted(ok, key=lambda c: (rows[c].time_us, c))
    plain = [c for c in ranked if not c.knobs]
    for c in plain[:3] + [c for c in ranked if c.knobs][:3]:
        rows[c].stage, rows[c].screen_us = "remeasure", rows[c].time_us
    return ranked[0], (plain[0] if knobs and plain else None)


_ACTIVE: dict[str, StandIn] = {}


def active() -> StandIn:
    """This process's stand-in, from the costs file w8a8_tuner.hooks.STANDIN_ENV names (loaded once)."""
    from w8a8_tuner.hooks import STANDIN_ENV

    path = os.environ[STANDIN_ENV]
    if path not in _ACTIVE:
        _ACTIVE[path] = StandIn.load(path)
    return _ACTIVE[path]


def compile_config(point, config, arch: int):
    """The compile function of the stand-in's pools (w8a8_tuner.search.compile.compile_stream's compile_fn)."""
    return active().compile_config(point, config)
