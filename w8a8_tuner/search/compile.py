"""Compile candidate configs ahead of timing, in parallel processes, into Triton's file cache.

Compiling dominates a naive sweep (0.5-1.7 s per config on an H100) and is CPU
work: it is done here by a pool of processes, one config at a time each, with
`warmup` (no launch, no tensors). Every process shares TRITON_CACHE_DIR, so the
process that times the configs later only loads finished binaries from it.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kernels.blocks import activation_scale_shape, cdiv, weight_scale_shape
from w8a8_tuner.results.files import write_atomic
from w8a8_tuner.search.space import Config, distinct_at
from w8a8_tuner.search.status import COMPILE_ERROR, OK, OUT_OF_RESOURCES, error_note


@dataclass(frozen=True)
class Point:
    M: int
    N: int
    K: int
    block_shape: tuple[int, int]
    out_dtype: str


@dataclass
class CompileResult:
    status: str
    note: str = ""
    seconds: float = 0.0


def _placeholder(dtype, shape):
    """Stands for a contiguous tensor: Triton specializes on dtype, alignment and strides only."""
    from triton.runtime.jit import MockTensor

    class Placeholder(MockTensor):
        def stride(self, dim=None):
            strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
            return tuple(strides) if dim is None else strides[dim]

        def numel(self):
            return math.prod(shape)

    return Placeholder(dtype, list(shape))


def compile_config(point: Point, config: Config) -> CompileResult:
    """Compile one config for one specialization; classify what went wrong."""
    import torch
    from triton.compiler.compiler import max_shared_mem
    from triton.runtime import driver
    from triton.runtime.errors import OutOfResources

    from kernels.block_fp8 import OUT_DTYPES, block_fp8_matmul_kernel, launch_args

    M, N, K = point.M, point.N, point.K
    fp8 = torch.float8_e4m3fn
    A, B = _placeholder(fp8, (M, K)), _placeholder(fp8, (N, K))
    C = _placeholder(OUT_DTYPES[point.out_dtype], (M, N))
    As = _placeholder(torch.float32, activation_scale_shape(M, K, point.block_shape))
    Bs = _placeholder(torch.float32, weight_scale_shape(N, K, point.block_shape))
    try:
        compiled = block_fp8_matmul_kernel.warmup(
            *launch_args(A, B, C, As, Bs, point.block_shape), grid=(1,), **config.as_dict())
    except OutOfResources as e:
        return CompileResult(OUT_OF_RESOURCES, error_note(e))
    except Exception as e:  # noqa: BLE001 - any compiler failure is a property of the config
        return CompileResult(COMPILE_ERROR, error_note(e))
    limit = max_shared_mem(driver.active.get_current_device())
    if compiled.metadata.shared > limit:
        return CompileResult(OUT_OF_RESOURCES, f"shared memory {compiled.metadata.shared} > {limit} bytes")
    return CompileResult(OK)


def _compile_chunk(point: Point, configs: list[Config]) -> list[CompileResult]:
    results = []
    for c in configs:
        t0 = time.perf_counter()
        r = compile_config(point, c)
        r.seconds = round(time.perf_counter() - t0, 3)
        results.append(r)
    return results


def int_args(M: int, N: int, K: int, block_shape) -> tuple[int, ...]:
    """The int arguments of a launch for contiguous operands, in kernels.block_fp8.launch_args order."""
    block_n, block_k = block_shape
    kb = cdiv(K, block_k)
    # M N K group_n group_k | stride_am ak bk bn cm cn | stride_as_m as_k bs_k bs_n
    return (M, N, K, block_n, block_k, K, 1, 1, K, N, 1, kb, 1, 1, kb)


def specialization_key(point: Point) -> str:
    """What Triton specializes a launch of this point on, besides the config.

    Triton specializes each int argument on being 1, a multiple of 16, or
    neither, and pointers on dtype (alignment is always 16 here). Points with the
    same key share every compiled binary. Pure arithmetic: no torch import.
    """
    ints = int_args(point.M, point.N, point.K, point.block_shape)
    cls = "".join("1" if v == 1 else "x" if v % 16 == 0 else "n" for v in ints)
    return f"{cls}-{point.out_dtype}"


def _summary_path(point: Point) -> Path | None:
    cache = os.environ.get("TRITON_CACHE_DIR")
    return Path(cache) / "w8a8_compiled" / f"{specialization_key(point)}.json" if cache else None


def _read_summary(path: Path | None) -> dict[str, CompileResult]:
    if path is None or not path.exists():
        return {}
    try:
        return {k: CompileResult(**v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, TypeError):
        return {}  # a damaged summary only costs a recompile


def precompile(point: Point, configs: list[Config], workers: int) -> dict[Config, CompileResult]:
    """Compile every config for `point`, `workers` processes at a time.

    Outcomes are remembered per specialization next to Triton's cache, so the
    next point with the same specialization compiles nothing and does not even
    start the pool; failed configs are not retried.
    """
    summary_path = _summary_path(point)
    known = _read_summary(summary_path)
    todo = [c for c in configs if c.label() not in known]
    if todo:
        fresh = _compile_all(point, todo, workers)
        known = {**_read_summary(summary_path), **{c.label(): r for c, r in fresh.items()}}
        if summary_path is not None:
            summary_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(summary_path, json.dumps({k: vars(v) for k, v in sorted(known.items())}))
    return {c: known[c.label()] for c in configs}


def _compile_all(point: Point, configs: list[Config], workers: int) -> dict[Config, CompileResult]:
    if workers <= 1 or len(configs) <= 1:
        return dict(zip(configs, _compile_chunk(point, configs)))
    # Interleaved chunks: expensive configs (big tiles, many stages) spread over workers.
    chunks = [configs[i::workers * 4] for i in range(workers * 4)]
    chunks = [c for c in chunks if c]
    ctx = multiprocessing.get_context("spawn")  # no CUDA state may be forked
    results: dict[Config, CompileResult] = {}
    with _main_module_hidden(), ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for chunk, outcome in zip(chunks, pool.map(_compile_chunk, [point] * len(chunks), chunks)):
            results.update(zip(chunk, outcome))
    return results


@contextlib.contextmanager
def _main_module_hidden():
    """Spawned processes re-run the parent's main script unless it has no file; a Snakemake
    script or a benchmark must not run again in each compile process, so hide it meanwhile."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__.pop(k) for k in ("__file__",) if k in main.__dict__}
    spec, main.__spec__ = getattr(main, "__spec__", None), None
    try:
        yield
    finally:
        main.__dict__.update(saved)
        main.__spec__ = spec


def compile_for_points(points: list[Point], configs: list[Config], workers: int) -> dict[Config, CompileResult]:
    """Compile, once, what any of `points` (all of one specialization) will time."""
    keys = {specialization_key(p) for p in points}
    if len(keys) != 1:
        raise ValueError(f"points of several specializations given: {sorted(keys)}")
    needed = sorted({c for p in points for c in distinct_at(configs, p.M)})
    return precompile(points[0], needed, workers)
