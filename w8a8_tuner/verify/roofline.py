"""The roofline of a point, max(bytes / bandwidth, flops / FP8 peak), with bandwidth and FP8 peak
measured on the job's GPU by the same bench as every other time."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from kernels.blocks import activation_scale_shape, weight_scale_shape
from w8a8_tuner.search.status import error_note


@dataclass
class DeviceLimits:
    """What the roofline is made of, measured on the job's GPU."""

    bandwidth_gbs: float = math.nan    # large device-to-device copy, bytes read + written
    fp8_peak_tflops: float = math.nan  # large torch._scaled_mm, per-tensor scales
    note: str = ""

    @property
    def usable(self) -> bool:
        return math.isfinite(self.bandwidth_gbs) or math.isfinite(self.fp8_peak_tflops)


def point_bytes(M: int, N: int, K: int, block_shape, out_bytes: int) -> int:
    """Bytes one launch must move at least: A, B (fp8), both scales (fp32), C."""
    scales = math.prod(activation_scale_shape(M, K, block_shape)) + math.prod(weight_scale_shape(N, K, block_shape))
    return M * K + N * K + 4 * scales + M * N * out_bytes


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


def measure_bandwidth_gbs(bench, nbytes: int = 1 << 30) -> float:
    """Device memory bandwidth: a large device-to-device copy, bytes read plus bytes written."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    [us] = bench.median_us([lambda _: dst.copy_(src)], 3, 7)
    return 2 * nbytes / (us * 1e-6) / 1e9


def measure_fp8_peak_tflops(bench, size: int = 8192) -> float:
    """FP8 tensor-core throughput: a large torch._scaled_mm with per-tensor scales (the better of
    normal and fast accumulation, so that the roofline is an upper bound)."""
    import torch

    from kernels.reference import FP8

    a = torch.randn(size, size, device="cuda").to(FP8)
    b = torch.randn(size, size, device="cuda").to(FP8)
    one = torch.ones((), dtype=torch.float32, device="cuda")
    launchers = [lambda _, fast=fast: torch._scaled_mm(a, b.t(), one, one, out_dtype=torch.bfloat16,
                                                         use_fast_accum=fast) for fast in (False, True)]
    for launch in launchers:
        launch(0)  # raises here if this torch or GPU has no FP8 matmul
    return max(point_flops(size, size, size) / (us * 1e-6) / 1e12 for us in bench.median_us(launchers, 3, 7))


def measure_limits(bench, log: Callable[[str], None] = print) -> DeviceLimits:
    limits, notes = DeviceLimits(), []
    try:
        limits.bandwidth_gbs = measure_bandwidth_gbs(bench)
    except Exception as e:  # noqa: BLE001
        notes.append(f"bandwidth not measured: {error_note(e)}")
    try:
        limits.fp8_peak_tflops = measure_fp8_peak_tflops(bench)
    except Exception as e:  # noqa: BLE001
        notes.append(f"FP8 peak not measured: {error_note(e)}")
    limits.note = "; ".join(notes)
    log(f"device limits: bandwidth {limits.bandwidth_gbs:.0f} GB/s, FP8 peak {limits.fp8_peak_tflops:.0f} TFLOPS"
        + (f" ({limits.note})" if limits.note else ""))
    return limits
