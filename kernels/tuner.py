"""Tune one (N, K, M) point: compile, check every config's numbers, screen, re-measure the best.

The winner is the fastest `ok` config (kernels.status) after the careful re-measure.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from kernels import compile as kcompile
from kernels import timing
from kernels.reference import MAX_RELATIVE_ERROR, random_operands, reference_matmul, relative_error
from kernels.search_space import Config
from kernels.status import LAUNCH_ERROR, OK, OUT_OF_RESOURCES, STATUSES, WRONG_RESULT


@dataclass
class Settings:
    backend: str = "cuda"            # "cuda" or "interpret"
    compile_workers: int = 1
    screen_budget_us: float = 300.0  # GPU time per screening batch
    screen_repeats: int = 3
    top_k: int = 5                   # configs re-measured carefully
    remeasure_budget_us: float = 2000.0
    remeasure_repeats: int = 15
    seed: int | None = None


@dataclass
class Result:
    config: Config
    status: str
    time_us: float = math.nan     # decisive median (re-measure if done, else screen)
    screen_us: float = math.nan
    rel_error: float = math.nan
    stage: str = ""               # "screen" or "remeasure"
    note: str = ""


@dataclass
class PointReport:
    results: list[Result]
    best: Config | None
    log: list[str] = field(default_factory=list)


class NoValidConfig(RuntimeError):
    pass


def _launcher(ops, weights, out, config: Config) -> Callable[[int], None]:
    from kernels.kernel import block_fp8_matmul_kernel, grid_size, launch_args

    M, N = ops.A.shape[0], ops.B.shape[0]
    grid = (grid_size(M, N, config),)
    kwargs = config.launch_kwargs()
    args = [launch_args(ops.A, B, out, ops.As, Bs, ops.block_shape) for B, Bs in weights]
    kernel = block_fp8_matmul_kernel[grid]

    def launch(copy: int) -> None:
        kernel(*args[copy], **kwargs)

    return launch


def tune_point(N: int, K: int, M: int, configs: list[Config], block_shape, out_dtype: str,
               settings: Settings, inject_wrong: Callable[[Config], bool] | None = None,
               log: Callable[[str], None] = print) -> PointReport:
    """Run the whole search for one point. `inject_wrong` (tests only) corrupts chosen outputs."""
    from kernels.kernel import OUT_DTYPES

    clock = _PhaseClock(log)
    interpret = settings.backend == "interpret"
    device = "cpu" if interpret else "cuda"
    point = kcompile.Point(M, N, K, tuple(block_shape), out_dtype)

    # 1. Compile everything first, in parallel (the interpreter compiles nothing).
    if interpret:
        compiled = {c: kcompile.CompileResult(OK) for c in configs}
    else:
        compiled = kcompile.precompile(point, configs, settings.compile_workers)
    results = {c: Result(c, compiled[c].status, note=compiled[c].note) for c in configs}
    clock.done(f"compile {len(configs)} configs: " + _count(results))

    # 2. Operands, reference, and weight copies to keep L2 cold.
    ops = random_operands(M, N, K, block_shape, device=device, seed=settings.seed)
    ref = reference_matmul(ops)
    if interpret:
        copies = 1
    else:
        l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
        copies = timing.weight_copies(ops.B.numel() + ops.Bs.numel() * 4, l2)
    weights = [(ops.B, ops.Bs)] + [(ops.B.clone(), ops.Bs.clone()) for _ in range(copies - 1)]
    out = torch.empty((M, N), dtype=OUT_DTYPES[out_dtype], device=device)

    # 3. Check each config's numbers once (output poisoned first), and time that first run.
    estimates: dict[Config, float] = {}
    for c, r in results.items():
        if r.status != OK:
            continue
        out.fill_(math.nan)
        launch = _launcher(ops, weights, out, c)
        try:
            if interpret:
                estimates[c] = timing.wall_time_us(lambda: launch(0))
            else:
                launch(0)  # loads the module; not timed
                estimates[c] = timing.time_batch(launch, 1, copies)
        except Exception as e:  # noqa: BLE001
            r.status = OUT_OF_RESOURCES if "OutOfResources" in type(e).__name__ else LAUNCH_ERROR
            r.note = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            continue
        if inject_wrong is not None and inject_wrong(c):
            out.view(-1)[:: max(1, out.numel() // 7)] += 1.0
        r.rel_error = relative_error(out, ref)
        if not r.rel_error <= MAX_RELATIVE_ERROR:
            r.status = WRONG_RESULT
            r.note = f"relative error {r.rel_error:.3g} > {MAX_RELATIVE_ERROR}"

    clock.done(f"check (load, run once, compare): {_count(results)}")
    ok = [c for c, r in results.items() if r.status == OK]
    if not ok:
        raise NoValidConfig(f"no config ran correctly for N={N} K={K} M={M}: {_count(results)}")

    # 4. Screen every correct config, then re-measure the best few carefully.
    if interpret:
        for c in ok:
            results[c].screen_us = results[c].time_us = estimates[c]
            results[c].stage = "screen"
        finalists = sorted(ok, key=lambda c: results[c].screen_us)[: settings.top_k]
        for c in finalists:
            results[c].stage = "remeasure"
    else:
        for c in ok:
            launch = _launcher(ops, weights, out, c)
            t = timing.median_time_us(launch, copies, settings.screen_budget_us,
                                      settings.screen_repeats, estimates[c])
            results[c].screen_us = results[c].time_us = t
            results[c].stage = "screen"
        clock.done(f"screen {len(ok)} configs")
        finalists = sorted(ok, key=lambda c: results[c].screen_us)[: settings.top_k]
        for c in finalists:
            launch = _launcher(ops, weights, out, c)
            results[c].time_us = timing.median_time_us(
                launch, copies, settings.remeasure_budget_us, settings.remeasure_repeats,
                results[c].screen_us)
            results[c].stage = "remeasure"
    clock.done(f"re-measure {len(finalists)} configs")
    best = min(finalists, key=lambda c: results[c].time_us)
    log(f"best {best.label()}: {results[best].time_us:.2f} us")
    return PointReport(list(results.values()), best)


def _count(results: dict[Config, Result]) -> str:
    return ", ".join(f"{s}={sum(r.status == s for r in results.values())}" for s in STATUSES)


class _PhaseClock:
    """Logs the wall time of each phase of a point's search."""

    def __init__(self, log):
        self.log, self.t = log, time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        self.log(f"[{now - self.t:7.2f} s] {what}")
        self.t = now
