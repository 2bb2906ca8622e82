"""Tune one (N, K, M) point: compile, check every config's numbers, then a staged timing search.

Stages, each on fewer configs and with more care:
  1. prune   configs whose program order equals another's at this M (exact: same schedule)
  2. check   every remaining config runs once on poisoned output, compared with the float32
             reference, then once more under events for a first timing ("estimate")
  3. screen  configs whose estimate is within `screen_cutoff` of the best estimate (at least
             `screen_min` of them): median of a few short back-to-back batches
  4. remeasure the `top_k` screened configs: median of many long batches; the winner comes from here
Statuses are in kernels.status; `stage` in the TSV says how far each config got.
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
from kernels.search_space import Config, prune_equivalent
from kernels.settings import Settings
from kernels.status import OK, PRUNED, STATUSES, WRONG_RESULT, error_note, launch_failure

__all__ = ["Settings", "Result", "PointReport", "NoValidConfig", "tune_point", "make_launcher"]


@dataclass
class Result:
    config: Config
    status: str
    time_us: float = math.nan     # decisive median of the furthest stage reached
    screen_us: float = math.nan
    rel_error: float = math.nan
    stage: str = ""               # "estimate", "screen" or "remeasure"
    note: str = ""


@dataclass
class PointReport:
    results: list[Result]
    best: Config | None
    log: list[str] = field(default_factory=list)


class NoValidConfig(RuntimeError):
    pass


def make_launcher(ops, weights, out, config: Config) -> Callable[[int], torch.Tensor]:
    """launch(copy) runs `config` on weight copy `copy`, writing and returning `out`."""
    from kernels.kernel import block_fp8_matmul_kernel, grid_size, launch_args

    M, N = ops.A.shape[0], ops.B.shape[0]
    kernel = block_fp8_matmul_kernel[(grid_size(M, N, config),)]
    kwargs = config.launch_kwargs()
    args = [launch_args(ops.A, B, out, ops.As, Bs, ops.block_shape) for B, Bs in weights]

    def launch(copy: int) -> torch.Tensor:
        kernel(*args[copy], **kwargs)
        return out

    return launch


def _error_tensor(out: torch.Tensor, ref: torch.Tensor, ref_norm: torch.Tensor) -> torch.Tensor:
    """||out - ref|| / ||ref|| on the device, inf if any output is not finite; no host sync."""
    out = out.float()
    err = torch.linalg.vector_norm(out - ref) / ref_norm
    return torch.where(torch.isfinite(out).all(), err, torch.full_like(err, math.inf))


def _launch_failure(r: Result, e: Exception) -> None:
    r.status, r.note = launch_failure(e), error_note(e)


def tune_point(N: int, K: int, M: int, configs: list[Config], block_shape, out_dtype: str,
               settings: Settings, inject_wrong: Callable[[Config], bool] | None = None,
               log: Callable[[str], None] = print) -> PointReport:
    """Run the whole search for one point. `inject_wrong` (tests only) corrupts chosen outputs."""
    from kernels.kernel import OUT_DTYPES

    clock = _PhaseClock(log)
    interpret = settings.backend == "interpret"
    device = "cpu" if interpret else "cuda"
    point = kcompile.Point(M, N, K, tuple(block_shape), out_dtype)

    # 1. Prune exact duplicates of program order, then compile the rest (in parallel, cached).
    rep = prune_equivalent(configs, M)
    results = {c: Result(c, PRUNED, note=f"same program order as {rep[c].label()} at M={M}")
               for c in configs if rep[c] != c}
    todo = [c for c in configs if rep[c] == c]
    if interpret:
        compiled = {c: kcompile.CompileResult(OK) for c in todo}
    else:
        compiled = kcompile.precompile(point, todo, settings.compile_workers)
    results.update({c: Result(c, compiled[c].status, note=compiled[c].note) for c in todo})
    clock.done(f"compile {len(todo)} configs ({len(configs) - len(todo)} pruned): {_count(results)}")

    # 2. Operands, reference, and weight copies to keep L2 cold.
    ops = random_operands(M, N, K, block_shape, device=device, seed=settings.seed)
    ref = reference_matmul(ops)
    weights = timing.rotating_weights(ops.B, ops.Bs, on_gpu=not interpret)
    copies = len(weights)
    out = torch.empty((M, N), dtype=OUT_DTYPES[out_dtype], device=device)

    # 3. Check each config's numbers once (output poisoned first), then time one more launch.
    candidates = [c for c in todo if results[c].status == OK]
    estimates: dict[Config, float] = {}
    if interpret:
        for c in candidates:
            out.fill_(math.nan)
            try:
                estimates[c] = timing.wall_time_us(lambda: make_launcher(ops, weights, out, c)(0))
            except Exception as e:  # noqa: BLE001 - a failing config is a result, not a crash
                _launch_failure(results[c], e)
                continue
            if inject_wrong is not None and inject_wrong(c):
                out.view(-1)[:: max(1, out.numel() // 7)] += 1.0
            results[c].rel_error = relative_error(out, ref)
    else:
        # No host sync inside the loop: errors and events are read once at the end.
        ref_norm = torch.linalg.vector_norm(ref)
        errors, events = {}, {}
        for c in candidates:
            launch = make_launcher(ops, weights, out, c)
            out.fill_(math.nan)
            try:
                launch(0)  # the first launch also loads the module: not timed
            except Exception as e:  # noqa: BLE001
                _launch_failure(results[c], e)
                continue
            if inject_wrong is not None and inject_wrong(c):
                out.view(-1)[:: max(1, out.numel() // 7)] += 1.0
            errors[c] = _error_tensor(out, ref, ref_norm)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            launch(1 % copies)
            end.record()
            events[c] = (start, end)
        torch.cuda.synchronize()
        for c, e in errors.items():
            results[c].rel_error = float(e)
        estimates = {c: s.elapsed_time(e) * 1000.0 for c, (s, e) in events.items()}
    for c in estimates:
        r = results[c]
        if not r.rel_error <= MAX_RELATIVE_ERROR:
            r.status, r.note = WRONG_RESULT, f"relative error {r.rel_error:.3g} > {MAX_RELATIVE_ERROR}"
        else:
            r.time_us, r.stage = estimates[c], "estimate"
    clock.done(f"check and estimate {len(candidates)} configs: {_count(results)}")
    ok = sorted((c for c in candidates if results[c].status == OK), key=lambda c: results[c].time_us)
    if not ok:
        raise NoValidConfig(f"no config ran correctly for N={N} K={K} M={M}: {_count(results)}")

    # 4. Screen the promising ones, then re-measure the best few carefully.
    cutoff = results[ok[0]].time_us * settings.screen_cutoff
    screened = [c for i, c in enumerate(ok) if i < settings.screen_min or results[c].time_us <= cutoff]
    for c in ok[len(screened):]:
        results[c].note = f"not screened: first timing over {settings.screen_cutoff}x the best"
    if interpret:
        finalists = screened[: settings.top_k]
        for c in screened:
            results[c].screen_us, results[c].stage = results[c].time_us, "screen"
    else:
        for c in screened:
            launch = make_launcher(ops, weights, out, c)
            results[c].screen_us = results[c].time_us = timing.median_time_us(
                launch, copies, settings.screen_budget_us, settings.screen_repeats, estimates[c])
            results[c].stage = "screen"
        clock.done(f"screen {len(screened)} configs")
        finalists = sorted(screened, key=lambda c: results[c].screen_us)[: settings.top_k]
        for c in finalists:
            launch = make_launcher(ops, weights, out, c)
            results[c].time_us = timing.median_time_us(
                launch, copies, settings.remeasure_budget_us, settings.remeasure_repeats, results[c].screen_us)
    for c in finalists:
        results[c].stage = "remeasure"
    clock.done(f"re-measure {len(finalists)} configs")
    best = min(finalists, key=lambda c: results[c].time_us)
    log(f"best {best.label()}: {results[best].time_us:.2f} us")
    return PointReport([results[c] for c in configs], best)


def _count(results: dict[Config, Result]) -> str:
    return ", ".join(f"{s}={n}" for s in STATUSES if (n := sum(r.status == s for r in results.values())))


class _PhaseClock:
    """Logs the wall time of each phase of a point's search."""

    def __init__(self, log):
        self.log, self.t = log, time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        self.log(f"[{now - self.t:7.2f} s] {what}")
        self.t = now
