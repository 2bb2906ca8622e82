"""Verify tuned configs: per (N, K, M), check and time the tuned config against the alternatives.

Contenders at each point, each checked against the float32 reference (kernels.reference)
before it is timed; one with wrong numbers is reported `wrong_result` and never timed:

- `tuned`: the config the shape's JSON holds for M;
- `default`: vLLM's fallback config (kernels.search_space.vllm_default_config);
- `compare`: the config an existing folder of JSON files (an installed vLLM's or SGLang's)
  gives: the file is picked by the naming rule, the batch size by the nearest key, as
  the engine does;
- `cublas`: cuBLAS blockwise FP8 through torch._scaled_mm (1x128 activation scales,
  128x128 weight scales), where the installed torch accepts it.

and the roofline max(bytes / bandwidth, flops / FP8 peak), with bandwidth and FP8 peak
measured on the same GPU in the same job. Times are taken like the tuner's
(kernels.timing: back-to-back launches behind a sleep, weight copies rotating to keep L2
cold, median over batches). With the interpreter backend the Triton contenders are
checked and wall-timed (meaningless), and cuBLAS and the roofline are skipped.

Plain Python: the Snakemake adapter is workflow/scripts/verify.py.
"""

from __future__ import annotations

import io
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from kernels.naming import compare_file_for, config_file_name, load_config_file, pick_config, write_atomic
from kernels.search_space import Config, vllm_default_config
from kernels.status import OK, WRONG_RESULT, error_note, launch_failure

# Statuses a verify row uses besides kernels.status's.
UNSUPPORTED = "unsupported"  # the library refused the call (cuBLAS: shape, batch size, torch version)
SKIPPED = "skipped"          # not run: interpreter backend, or switched off in verify_settings
MISSING = "missing"          # compare_dir not given, or it has no file for this shape

CONTENDERS = ("tuned", "default", "compare", "cublas")
_PER_CONTENDER = ("config", "status", "us", "rel_error", "note")
COLUMNS = (
    "N", "K", "M", "device_name", "backend",
    *(f"{c}_{f}" for c in CONTENDERS[:3] for f in _PER_CONTENDER),
    "compare_key", "compare_file",  # the batch-size key and the file the compare config came from
    *(f"cublas_{f}" for f in _PER_CONTENDER),
    "roofline_us", "roofline_note", "bandwidth_gbs", "fp8_peak_tflops", "bytes", "flops",
    "speedup_vs_default", "speedup_vs_compare", "speedup_vs_cublas", "pct_roofline",
)
TEXT_COLUMNS = tuple(c for c in COLUMNS if c.endswith(("_config", "_status", "_note", "_file"))) + (
    "device_name", "backend")

# Test hook: corrupt the output of the named contenders ("tuned,default,compare,cublas") after
# they run, to show through the real workflow that wrong numbers are caught. Never set in production.
INJECT_WRONG_ENV = "W8A8_VERIFY_INJECT_WRONG"


@dataclass
class VerifySettings:
    backend: str = "cuda"        # "cuda" or "interpret"
    budget_us: float = 2000.0    # GPU time of one timed batch (as the tuner's re-measure)
    repeats: int = 15            # batches; the median is reported
    cublas: bool = True          # time cuBLAS blockwise FP8 (torch._scaled_mm)
    roofline: bool = True        # measure bandwidth and FP8 peak, compute the roofline
    seed: int | None = 0


@dataclass
class Outcome:
    status: str
    time_us: float = math.nan
    rel_error: float = math.nan
    config: str = ""
    note: str = ""


@dataclass
class DeviceLimits:
    """What the roofline is made of, measured on the job's GPU."""

    bandwidth_gbs: float = math.nan    # large device-to-device copy, bytes read + written
    fp8_peak_tflops: float = math.nan  # large torch._scaled_mm, per-tensor scales
    note: str = ""

    @property
    def usable(self) -> bool:
        return math.isfinite(self.bandwidth_gbs) or math.isfinite(self.fp8_peak_tflops)


def injected_wrong() -> set[str]:
    value = os.environ.get(INJECT_WRONG_ENV, "")
    return {v.strip() for v in value.split(",") if v.strip()}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------------------------
# Roofline


def point_bytes(M: int, N: int, K: int, block_shape, out_bytes: int) -> int:
    """Bytes one launch must move at least: A, B, both scales (fp32), C."""
    block_n, block_k = block_shape
    groups = _cdiv(K, block_k)
    return M * K + N * K + 4 * M * groups + 4 * _cdiv(N, block_n) * groups + M * N * out_bytes


def point_flops(M: int, N: int, K: int) -> int:
    return 2 * M * N * K


def roofline_us(M: int, N: int, K: int, block_shape, out_bytes: int, limits: DeviceLimits) -> float:
    """max(bytes / bandwidth, flops / FP8 peak) in microseconds (a missing limit is left out)."""
    terms = []
    if math.isfinite(limits.bandwidth_gbs) and limits.bandwidth_gbs > 0:
        terms.append(point_bytes(M, N, K, block_shape, out_bytes) / (limits.bandwidth_gbs * 1e9))
    if math.isfinite(limits.fp8_peak_tflops) and limits.fp8_peak_tflops > 0:
        terms.append(point_flops(M, N, K) / (limits.fp8_peak_tflops * 1e12))
    return max(terms) * 1e6 if terms else math.nan


def _median_batch_us(launch: Callable[[int], object], launches: int, repeats: int) -> float:
    import statistics

    from kernels import timing

    return statistics.median(timing.time_batch(launch, launches, 1) for _ in range(repeats))


def measure_bandwidth_gbs(nbytes: int = 1 << 30, repeats: int = 7) -> float:
    """Device memory bandwidth: a large device-to-device copy, bytes read plus bytes written."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)

    def launch(_):
        dst.copy_(src)

    launch(0)
    torch.cuda.synchronize()
    us = _median_batch_us(launch, 5, repeats)
    return 2 * nbytes / (us * 1e-6) / 1e9


def measure_fp8_peak_tflops(size: int = 8192, repeats: int = 7) -> float:
    """FP8 tensor-core throughput: a large torch._scaled_mm with per-tensor scales (best of
    normal and fast accumulation, so that the roofline is an upper bound)."""
    import torch

    from kernels.reference import FP8

    a = torch.randn(size, size, device="cuda").to(FP8)
    b = torch.randn(size, size, device="cuda").to(FP8)
    one = torch.ones((), dtype=torch.float32, device="cuda")
    best = 0.0
    for fast in (False, True):
        def launch(_, fast=fast):
            torch._scaled_mm(a, b.t(), one, one, out_dtype=torch.bfloat16, use_fast_accum=fast)

        launch(0)
        torch.cuda.synchronize()
        us = _median_batch_us(launch, 5, repeats)
        best = max(best, point_flops(size, size, size) / (us * 1e-6) / 1e12)
    return best


def measure_limits(log: Callable[[str], None] = print) -> DeviceLimits:
    limits, notes = DeviceLimits(), []
    try:
        limits.bandwidth_gbs = measure_bandwidth_gbs()
    except Exception as e:  # noqa: BLE001
        notes.append(f"bandwidth not measured: {error_note(e)}")
    try:
        limits.fp8_peak_tflops = measure_fp8_peak_tflops()
    except Exception as e:  # noqa: BLE001
        notes.append(f"FP8 peak not measured: {error_note(e)}")
    limits.note = "; ".join(notes)
    log(f"device limits: bandwidth {limits.bandwidth_gbs:.0f} GB/s, FP8 peak {limits.fp8_peak_tflops:.0f} TFLOPS"
        + (f" ({limits.note})" if limits.note else ""))
    return limits


# ---------------------------------------------------------------------------------------------
# Contenders: each builds `launch(copy) -> output tensor` for one point's operands.


def cublas_scale_layouts(As, Bs):
    """Scales in the layouts torch._scaled_mm(A, B.t(), scale_a, scale_b) takes for blockwise
    1x128 (A) x 128x128 (B), most recent torch first.

    scale_a: (M, ceil(K/128)), outer-dim-major (stride (1, M)) in every version.
    scale_b: (ceil(K/128), ceil(N/128)) with stride (1, L4), L4 = ceil(K/128) rounded up to 4,
    what cuBLASLt requires and torch checks after pytorch#166752; before that torch took the
    unpadded stride (1, ceil(K/128)), which cuBLAS reads wrong unless ceil(K/128) % 4 == 0.
    """
    import torch

    M, groups = As.shape
    scale_a = torch.empty_strided((M, groups), (1, M), dtype=As.dtype, device=As.device)
    scale_a.copy_(As)
    padded_groups = _cdiv(groups, 4) * 4
    layouts = []
    if padded_groups != groups:
        padded = torch.zeros((Bs.shape[0], padded_groups), dtype=Bs.dtype, device=Bs.device)
        padded[:, :groups] = Bs
        layouts.append(("scale_b K-padded to 4", scale_a, padded[:, :groups].t()))
    layouts.append(("scale_b unpadded" if padded_groups != groups else "scale_b", scale_a, Bs.t()))
    return layouts


def _cublas_launcher(ops, weights, out_dtype):
    """(description, launch) for the first scale layout the installed torch accepts, or raise
    the errors of every layout tried. Acceptance is decided by torch's checks and cuBLAS's
    heuristics only; whether the numbers are right is checked afterwards, like any contender."""
    import torch

    if tuple(ops.block_shape) != (128, 128):
        raise NotImplementedError(f"cuBLAS blockwise FP8 needs 128x128 blocks, not {list(ops.block_shape)}")
    if not hasattr(torch, "_scaled_mm"):
        raise NotImplementedError(f"torch {torch.__version__} has no torch._scaled_mm")
    errors = []
    for i, (name, _, _) in enumerate(cublas_scale_layouts(ops.As, weights[0][1])):
        per_copy = [(B.t(), cublas_scale_layouts(ops.As, Bs)[i]) for B, Bs in weights]

        def launch(copy: int, per_copy=per_copy):
            Bt, (_, sa, sb) = per_copy[copy]
            return torch._scaled_mm(ops.A, Bt, sa, sb, out_dtype=out_dtype)

        try:
            launch(0)
            if ops.A.is_cuda:
                torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001 - torch's checks and cuBLAS NOT_SUPPORTED
            errors.append(f"{name}: {error_note(e)}")
            continue
        return name, launch
    raise NotImplementedError("; ".join(errors))


def _check_and_time(name: str, launch: Callable[[int], object], ref, copies: int,
                    settings: VerifySettings, inject: set[str], out=None) -> Outcome:
    """Run once on a poisoned output, compare with the reference, and time only if right."""
    from kernels import timing
    from kernels.reference import MAX_RELATIVE_ERROR, relative_error

    interpret = settings.backend == "interpret"
    if out is not None:
        out.fill_(math.nan)
    try:
        if interpret:
            # The interpreter's wall time of this checking run is its (meaningless) time, as in the
            # tuner; it is kept only if the numbers below are right.
            started = time.perf_counter()
            result = launch(0)
            wall_us = (time.perf_counter() - started) * 1e6
        else:
            import torch

            result = launch(0)
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        return Outcome(launch_failure(e), note=error_note(e))
    if name in inject:
        result = result.clone()
        result.view(-1)[:: max(1, result.numel() // 7)] += 1.0
    err = relative_error(result, ref)
    if not err <= MAX_RELATIVE_ERROR:
        return Outcome(WRONG_RESULT, rel_error=err, note=f"relative error {err:.3g} > {MAX_RELATIVE_ERROR}; not timed")
    if interpret:
        t = wall_us
    else:
        estimate = timing.time_batch(launch, 1, copies)
        t = timing.median_time_us(launch, copies, settings.budget_us, settings.repeats, estimate)
    return Outcome(OK, time_us=t, rel_error=err)


# ---------------------------------------------------------------------------------------------
# One shape


def torch_device(backend: str) -> str:
    return "cpu" if backend == "interpret" else "cuda"


@dataclass
class ShapeInputs:
    N: int
    K: int
    tuned: dict[int, Config]
    compare: dict[int, Config] | None = None
    compare_file: str = ""
    block_shape: tuple[int, int] = (128, 128)
    out_dtype: str = "bfloat16"
    extra: dict = field(default_factory=dict)  # columns copied into every row (device, backend)


def verify_point(shape: ShapeInputs, M: int, settings: VerifySettings, limits: DeviceLimits | None,
                 inject: set[str] = frozenset(), log: Callable[[str], None] = print) -> dict:
    import torch

    from kernels import timing
    from kernels.kernel import OUT_DTYPES
    from kernels.reference import random_operands, reference_matmul
    from kernels.tuner import make_launcher

    N, K, block_shape = shape.N, shape.K, tuple(shape.block_shape)
    interpret = settings.backend == "interpret"
    device = torch_device(settings.backend)
    out_dtype = OUT_DTYPES[shape.out_dtype]
    ops = random_operands(M, N, K, block_shape, device=device, seed=settings.seed)
    ref = reference_matmul(ops)
    weights = timing.rotating_weights(ops.B, ops.Bs, on_gpu=not interpret)
    copies = len(weights)
    out = torch.empty((M, N), dtype=out_dtype, device=device)

    row: dict[str, object] = {"N": N, "K": K, "M": M, **shape.extra}
    outcomes: dict[str, Outcome] = {}

    triton_configs: dict[str, Config | None] = {
        "tuned": shape.tuned[M] if M in shape.tuned else pick_config(shape.tuned, M),
        "default": vllm_default_config(block_shape),
        "compare": pick_config(shape.compare, M) if shape.compare else None,
    }
    for name, config in triton_configs.items():
        if config is None:
            outcomes[name] = Outcome(MISSING, note="no compare_dir given" if not shape.compare_file
                                     else f"no file {shape.compare_file}")
            continue
        launch = make_launcher(ops, weights, out, config)
        outcomes[name] = _check_and_time(name, launch, ref, copies, settings, inject, out=out)
        outcomes[name].config = config.label()
    row["compare_key"] = min(shape.compare, key=lambda k: abs(k - M)) if shape.compare else ""
    row["compare_file"] = os.path.basename(shape.compare_file) if shape.compare else ""

    if interpret or not settings.cublas:
        outcomes["cublas"] = Outcome(SKIPPED, note="interpreter backend: no GPU" if interpret
                                     else "verify_settings.cublas is false")
    else:
        try:
            layout, launch = _cublas_launcher(ops, weights, out_dtype)
        except Exception as e:  # noqa: BLE001
            outcomes["cublas"] = Outcome(UNSUPPORTED, note=error_note(e) if not isinstance(e, NotImplementedError)
                                         else str(e)[:400])
        else:
            outcomes["cublas"] = _check_and_time("cublas", launch, ref, copies, settings, inject)
            outcomes["cublas"].config = f"torch._scaled_mm 1x128 x 128x128, {layout}"

    for name in CONTENDERS:
        o = outcomes[name]
        row.update({f"{name}_config": o.config, f"{name}_status": o.status, f"{name}_us": o.time_us,
                    f"{name}_rel_error": o.rel_error, f"{name}_note": o.note})

    out_bytes = out.element_size()
    row["bytes"] = point_bytes(M, N, K, block_shape, out_bytes)
    row["flops"] = point_flops(M, N, K)
    if limits is None or not limits.usable:
        row["roofline_us"] = math.nan
        row["roofline_note"] = ("skipped: interpreter backend, no GPU" if interpret
                                else "skipped: verify_settings.roofline is false" if not settings.roofline
                                else f"not measured: {limits.note if limits else ''}")
        row["bandwidth_gbs"] = row["fp8_peak_tflops"] = math.nan
    else:
        row["roofline_us"] = roofline_us(M, N, K, block_shape, out_bytes, limits)
        row["roofline_note"] = limits.note
        row["bandwidth_gbs"] = limits.bandwidth_gbs
        row["fp8_peak_tflops"] = limits.fp8_peak_tflops
    add_ratios(row)
    log(f"M={M}: " + ", ".join(
        f"{n} {outcomes[n].status}" + (f" {outcomes[n].time_us:.2f} us" if outcomes[n].status == OK else "")
        for n in CONTENDERS) + (f", roofline {row['roofline_us']:.2f} us" if math.isfinite(row["roofline_us"]) else ""))
    return row


def _ratio(num: float, den: float) -> float:
    return num / den if math.isfinite(num) and math.isfinite(den) and den > 0 else math.nan


def add_ratios(row: dict) -> None:
    """Speedups of the tuned config (other / tuned: > 1 means tuned is faster) and percent of roofline.

    A ratio is left empty unless both sides were checked right and timed."""
    tuned = row["tuned_us"] if row["tuned_status"] == OK else math.nan
    for other in ("default", "compare", "cublas"):
        t = row[f"{other}_us"] if row[f"{other}_status"] == OK else math.nan
        row[f"speedup_vs_{other}"] = _ratio(t, tuned)
    row["pct_roofline"] = 100 * _ratio(row["roofline_us"], tuned)


def verify_shape(shape: ShapeInputs, settings: VerifySettings, limits: DeviceLimits | None,
                 inject: set[str] = frozenset(), log: Callable[[str], None] = print) -> list[dict]:
    return [verify_point(shape, M, settings, limits, inject, log) for M in sorted(shape.tuned)]


# ---------------------------------------------------------------------------------------------
# Files


def render_rows(rows: list[dict]) -> str:
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    buf = io.StringIO()
    df.to_csv(buf, sep="\t", index=False, na_rep="", float_format="%.6g")
    return buf.getvalue()


def write_rows(path, rows: list[dict]) -> None:
    write_atomic(path, render_rows(rows))


class VerifyFileError(ValueError):
    pass


def read_rows(path) -> pd.DataFrame:
    """One verify TSV (per shape or merged), columns checked; text columns as '' when empty."""
    try:
        df = pd.read_csv(path, sep="\t", dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                         na_values={c: [""] for c in COLUMNS if c not in TEXT_COLUMNS})
    except Exception as e:  # noqa: BLE001
        raise VerifyFileError(f"{path}: unreadable: {e}") from e
    if tuple(df.columns) != COLUMNS:
        raise VerifyFileError(f"{path}: columns {list(df.columns)}, expected {list(COLUMNS)}")
    return df


def merge(paths, out_path) -> pd.DataFrame:
    frames = [read_rows(p) for p in paths]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    df = df.sort_values(["N", "K", "M"]).reset_index(drop=True)
    write_rows(out_path, df.to_dict("records"))
    return df


# ---------------------------------------------------------------------------------------------
# One job


def verify_job(out_tsv: str, N: int, K: int, tuned_json: str, compare_dir: str | None, device_name: str,
               block_shape, out_dtype: str, settings: VerifySettings, log: Callable[[str], None] = print) -> None:
    """Take a GPU slot (as kernels.jobs does), check the GPU, verify every batch size of the shape's JSON."""
    from kernels import slots
    from kernels.jobs import check_device

    started = time.time()
    slot = None
    if settings.backend == "cuda" or os.environ.get(slots.FAKE_GPUS_ENV):
        slot = slots.acquire()
        log(f"slot {slot.uuid} (index {slot.index}) on {socket.gethostname()} pid {os.getpid()} "
            f"waited {time.time() - started:.2f}s")
    try:
        limits = None
        if settings.backend == "cuda":
            index = slots.pin_to(slot)
            import torch

            torch.cuda.set_device(index)
            check_device(device_name, index, out_tsv)
            log(f"torch {torch.__version__}, GPU {torch.cuda.get_device_name(index)}")
            if settings.roofline:
                limits = measure_limits(log)
        compare_file = compare_file_for(compare_dir, N, K, device_name, block_shape)
        shape = ShapeInputs(
            N=N, K=K, tuned=load_config_file(tuned_json),
            compare=load_config_file(compare_file) if compare_file else None,
            compare_file=compare_file or (os.path.join(compare_dir, config_file_name(N, K, device_name, block_shape))
                                          if compare_dir else ""),
            block_shape=tuple(block_shape), out_dtype=out_dtype,
            extra={"device_name": device_name, "backend": settings.backend})
        log(f"tuned: {tuned_json}; compare: {compare_file or 'none'}")
        inject = injected_wrong()
        if inject:
            log(f"TEST HOOK {INJECT_WRONG_ENV}: corrupting the output of {sorted(inject)}")
        rows = verify_shape(shape, settings, limits, inject, log)
        write_rows(out_tsv, rows)
        log(f"wrote {out_tsv} in {time.time() - started:.1f} s")
    finally:
        if slot is not None:
            slot.release()
