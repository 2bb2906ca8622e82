"""Compile candidate configs ahead of timing, in parallel processes, into Triton's file cache.

Compiling dominates a naive sweep (0.5-1.7 s per config on an H100 host) and is CPU work with no
need of a GPU: every config is compiled for the device's architecture (a `GPUTarget`, from
`target_arch`) by processes that never touch CUDA, with `warmup` (no launch, no tensors). The
binaries land in TRITON_CACHE_DIR under the keys a real launch looks up, so the process that
times the configs later only loads them.

Who compiles: a tune job compiles what its point lacks and times configs as they come out
(`compile_stream`); compile jobs (workflow rule `compile`, no GPU) compile whole specializations
ahead, on the cores the GPU jobs leave. Each config's outcome is one small file, written under a
lock per config, so any number of jobs can compile the same specialization at once without doing
a config twice, and a killed job loses only the configs it was compiling.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from kernels.blocks import activation_scale_shape, cdiv, weight_scale_shape
from w8a8_tuner.results.files import write_atomic
from w8a8_tuner.search.space import Config, timed_at
from w8a8_tuner.search.status import COMPILE_ERROR, OK, OUT_OF_RESOURCES, error_note

# GPU architecture (compute capability x 10) by device name, as the engines name devices.
ARCH_BY_DEVICE = (
    (r"H100|H200|H800|H20\b|GH200", 90),
    (r"B200|B300|GB200|GB300", 100),
    (r"L40|L4\b|L20|RTX_40\d0|Ada", 89),
    (r"A100|A800|A30\b", 80),
    (r"A10\b|A10G|A40|A16\b|A2\b|RTX_A\d|RTX_30\d0", 86),
)
# Shared memory one program may use (opt-in maximum per block), bytes, by architecture.
MAX_SHARED_BYTES = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448, 120: 101376}


class UnknownArch(ValueError):
    pass


def target_arch(device_name: str) -> int | None:
    """The architecture to compile for, from the device name; None if the name is not known."""
    for pattern, arch in ARCH_BY_DEVICE:
        if re.search(pattern, device_name):
            return arch
    return None


@dataclass(frozen=True)
class Point:
    M: int
    N: int
    K: int
    block_shape: tuple[int, int]
    out_dtype: str
    input_type: str = "fp8"     # operand type: fp8 or int8 (kernels.engines)
    kernel: str = "builtin"     # which Triton function: builtin, vllm or sglang (kernels.engines)


@dataclass
class CompileResult:
    status: str
    note: str = ""
    seconds: float = 0.0
    retry: bool = False  # the compiler failed, not the config (compiler_failure): never cached, compiled again


# A compile the compiler did not finish (compiler_failure) is tried this many times, then reported, not cached.
MAX_COMPILE_ATTEMPTS = 3

# How Triton reports a ptxas that did not exit by itself: subprocess gives a signal as -N, a shell between
# Triton and ptxas 128 + N, and Triton names SIGSEGV (triton/backends/nvidia/compiler.py, make_cubin).
_PTXAS_STATUS = re.compile(r"`ptxas` (?:failed with error code (-?\d+)|raised (SIG[A-Z]+))")
# Notes of failures of the machine, not the config: memory, files, processes (OSError notes carry errno).
_SYSTEM_NOTE = re.compile(r"^(MemoryError\b|\w+: \[Errno \d+\])")


def compiler_failure(note: str) -> str | None:
    """Why a failure, by its note (error_note), says nothing about the config: ptxas killed or crashed by a signal
    (an out-of-memory kill, a node going down), or memory or the file system failing; None if the compiler
    refused the config itself, which is final. Only a final outcome may be cached."""
    if _SYSTEM_NOTE.match(note):
        return "memory or files failed, not the config"
    m = _PTXAS_STATUS.search(note)
    if m is None:
        return None
    if m[2]:
        return f"ptxas crashed ({m[2]})"
    code = int(m[1])
    number = -code if code < 0 else code - 128 if 128 < code < 128 + 65 else None
    if number is None:
        return None
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"ptxas killed by {name}"


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


class _OfflineDriver:
    """What Triton's launcher asks the driver for, answered without a GPU: compiling then needs
    only the target (the binary and its cache key are the ones a launch on that GPU uses)."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def is_active(self):
        return True


def use_offline_target(arch: int) -> None:
    """Make this process compile for `arch` without a GPU (compile processes only: nothing can launch)."""
    from triton.runtime import driver

    driver.set_active(_OfflineDriver(arch))


def compile_config(point: Point, config: Config, arch: int) -> CompileResult:
    """Compile one config for one specialization; classify what went wrong."""
    import torch
    from triton.runtime.errors import OutOfResources

    from kernels import engines
    from kernels.block_fp8 import OUT_DTYPES, warmup_block_fp8
    from kernels.reference import INPUT_DTYPES

    M, N, K = point.M, point.N, point.K
    operand = INPUT_DTYPES[point.input_type]  # fp8 or int8: Triton specializes on the pointer dtype
    A, B = _placeholder(operand, (M, K)), _placeholder(operand, (N, K))
    C = _placeholder(OUT_DTYPES[point.out_dtype], (M, N))
    As = _placeholder(torch.float32, activation_scale_shape(M, K, point.block_shape))
    Bs = _placeholder(torch.float32, weight_scale_shape(N, K, point.block_shape))
    parts = _placeholder(torch.float32, (config.SPLIT_K, M, N))  # the split-K partials (unused without)
    kernels = engines.load(point.kernel, point.input_type)
    if config.knobs and kernels.hopper is None:
        return CompileResult(COMPILE_ERROR, f"{point.kernel} has no Hopper kernel for SWAP_AB/SPLIT_K")
    try:
        compiled = warmup_block_fp8(kernels, A, B, C, As, Bs, point.block_shape, config.as_dict(), parts)
    except OutOfResources as e:
        return CompileResult(OUT_OF_RESOURCES, error_note(e))
    except Exception as e:  # noqa: BLE001 - a property of the config, unless the compiler itself failed
        return _failed(e)
    # A launch would refuse this (Triton checks it when it loads the binary): no need to try.
    limit = MAX_SHARED_BYTES.get(arch)
    shared = max(c.metadata.shared for c in compiled)
    if limit is not None and shared > limit:
        return CompileResult(OUT_OF_RESOURCES, f"shared memory {shared} > {limit} bytes")
    return CompileResult(OK)


def _failed(e: BaseException) -> CompileResult:
    note = error_note(e)
    why = compiler_failure(note)
    return CompileResult(COMPILE_ERROR, f"{why}: {note}" if why else note, retry=why is not None)


# compile_fn(point, config, arch) -> CompileResult: compile_config, or the projection's stand-in.
CompileFn = Callable[[Point, Config, int], CompileResult]


def int_args(M: int, N: int, K: int, block_shape) -> tuple[int, ...]:
    """The int arguments of a launch for contiguous operands, in kernels.block_fp8.launch_args order."""
    block_n, block_k = block_shape
    kb = cdiv(K, block_k)
    # M N K group_n group_k | stride_am ak bk bn cm cn | stride_as_m as_k bs_k bs_n
    return (M, N, K, block_n, block_k, K, 1, 1, K, N, 1, kb, 1, 1, kb)


# K's power-of-two factor beyond which no BLOCK_SIZE_K of a space needs masks (spaces go up to 128 here).
MASK_ALIGN = 128


def specialization_key(point: Point) -> str:
    """What Triton specializes a launch of this point on, besides the config.

    Triton specializes each int argument on being 1, a multiple of 16, or
    neither, and pointers on dtype (alignment is always 16 here). Points with the
    same key share every compiled binary. Pure arithmetic: no torch import.
    """
    ints = int_args(point.M, point.N, point.K, point.block_shape)
    cls = "".join("1" if v == 1 else "x" if v % 16 == 0 else "n" for v in ints)
    # Another operand type or kernel function is another binary; the defaults keep their old keys.
    extra = "".join(f"-{v}" for v, default in ((point.input_type, "fp8"), (point.kernel, "builtin")) if v != default)
    # Kernels that drop the K masks where BLOCK_SIZE_K divides K (SGLang's `needs_masking`) differ by K's
    # largest power-of-two factor up to 128 (every BLOCK_SIZE_K divides 128 or a multiple of it).
    k_align = min(point.K & -point.K, MASK_ALIGN)
    extra += f"-k{k_align}" if k_align < MASK_ALIGN else ""
    return f"{cls}-{point.out_dtype}{extra}"


# --- one config's outcome on disk, shared by every job of the node ---------------------------------
def outcome_folder(point: Point, arch: int) -> Path:
    cache = os.environ.get("TRITON_CACHE_DIR")
    if not cache:
        raise RuntimeError("TRITON_CACHE_DIR is not set: compiled outcomes need the shared cache folder")
    return Path(cache) / "w8a8_compiled" / f"sm{arch}" / specialization_key(point)


def _read_outcome(path: Path) -> CompileResult | None:
    try:
        result = CompileResult(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None  # a damaged outcome only costs a recompile
    # cached before compiler failures were told apart (a killed ptxas as the config's compile_error): not final
    return None if result.status == COMPILE_ERROR and compiler_failure(result.note) else result


def _compile_one(point: Point, config: Config, arch: int, wait_for_lock: bool, compile_fn: CompileFn
                 ) -> CompileResult | None:
    """Compile `config` unless another process has or is doing so; None: busy elsewhere, come back later."""
    folder = outcome_folder(point, arch)
    done = folder / f"{config.label()}.json"
    if (known := _read_outcome(done)) is not None:
        return known
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{config.label()}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait_for_lock else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        if (known := _read_outcome(done)) is not None:  # finished while we waited
            return known
        t0 = time.perf_counter()
        for _ in range(MAX_COMPILE_ATTEMPTS):
            try:
                result = compile_fn(point, config, arch)
            except (MemoryError, OSError) as e:  # of this process, not of the config
                result = _failed(e)
            if not result.retry:
                break
        result.seconds = round(time.perf_counter() - t0, 3)
        if result.retry:
            result.note = f"{result.note} ({MAX_COMPILE_ATTEMPTS} attempts; not cached: compiled again by the next job)"
            return result
        write_atomic(done, json.dumps(vars(result)))
        return result
    finally:
        os.close(fd)  # releases the lock


def _pool_init(arch: int, env: dict[str, str], offline: bool, nice: int, all_started=None) -> None:
    os.environ.update(env)
    if nice:
        os.nice(nice)
    os.environ.pop("TRITON_INTERPRET", None)  # compile processes build real binaries (tests run interpreted)
    if offline:  # (a stand-in compile function compiles nothing: no triton import)
        use_offline_target(arch)
    if all_started is not None:
        all_started.wait(timeout=600)  # see _pool


# Outcomes this process has read or made, by outcome folder (a worker tunes many points of one folder).
_SEEN: dict[Path, dict[Config, CompileResult]] = {}

# A tune worker keeps its pool between points: no process start and no imports per point.
_POOLS: dict[tuple, ProcessPoolExecutor] = {}


def _pool(arch: int, workers: int, compile_fn: CompileFn = compile_config, nice: int = 0) -> ProcessPoolExecutor:
    env = {k: os.environ[k] for k in ("TRITON_CACHE_DIR",) if k in os.environ}
    key = (arch, workers, env.get("TRITON_CACHE_DIR", ""), compile_fn, nice)
    if key in _POOLS and getattr(_POOLS[key], "_broken", False):  # a process of it died: a new pool
        _POOLS.pop(key).shutdown(wait=False, cancel_futures=True)
    if key not in _POOLS:
        # spawn: no CUDA state may be forked; the processes never see a GPU.
        ctx = multiprocessing.get_context("spawn")
        with _main_module_hidden():
            # Processes start on demand, one per submit while none is idle: each waits in its initializer
            # until all have started, so all start now, while __main__ is hidden (a process started later
            # would run the main script again: a compile job's Snakemake script fails there).
            all_started = ctx.Barrier(workers)
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_pool_init,
                                       initargs=(arch, {**env, "CUDA_VISIBLE_DEVICES": ""},
                                                 compile_fn is compile_config, nice, all_started))
            for f in [pool.submit(time.sleep, 0) for _ in range(workers)]:
                f.result()
        _POOLS[key] = pool
    return _POOLS[key]


def compile_cost(config: Config) -> float:
    """A config's expected compile time, up to a factor: it grows with the tile's accumulators, its K step and
    the stages the pipeline unrolls (rank correlation 0.67 with 3788 compile times measured on an H200's
    host, BENCHMARKS.md). Compiles start slowest first, so that no long compile is left at the end."""
    return config.accumulators_per_thread() * config.BLOCK_SIZE_K * config.num_stages


def compile_stream(point: Point, configs: Iterable[Config], workers: int, arch: int,
                   compile_fn: CompileFn = compile_config, nice: int = 0) -> Iterator[dict[Config, CompileResult]]:
    """Compile `configs` for `point` and yield their outcomes in batches as they are known: first
    every outcome already on disk, then whatever has finished since the last batch. Configs another
    process is compiling are waited for at the end, not compiled twice. `compile_fn` compiles one
    config in a pool process (a module-level function: it is sent there by name); `nice` lowers the
    pool's CPU priority (compile jobs compile ahead on the cores tune jobs leave idle)."""
    configs = list(configs)
    folder = outcome_folder(point, arch)
    seen = _SEEN.setdefault(folder, {})  # outcomes are final: read each file once per process
    known = {c: r for c in configs if (r := seen.get(c) or _read_outcome(folder / f"{c.label()}.json")) is not None}
    seen.update(known)
    if known:
        yield known
    todo = sorted((c for c in configs if c not in known), key=compile_cost, reverse=True)
    if not todo:
        return
    def submit(c: Config, wait_for_lock: bool) -> Future:
        return _pool(arch, max(1, workers), compile_fn, nice).submit(_compile_one, point, c, arch, wait_for_lock,
                                                                     compile_fn)

    busy: list[Config] = []
    deaths: dict[Config, int] = {}  # compile processes that died while compiling each config
    for wait_for_lock, batch in ((False, todo), (True, busy)):
        pending: dict[Future, Config] = {submit(c, wait_for_lock): c for c in batch}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            out = {}
            for f in finished:
                c = pending.pop(f)
                try:
                    r = f.result()
                except BrokenProcessPool as e:
                    # A compile process died (killed, out of memory): every config it or its pool had in hand is
                    # compiled again by a new pool; the config that kills it each time is reported, not cached.
                    deaths[c] = deaths.get(c, 0) + 1
                    if deaths[c] < MAX_COMPILE_ATTEMPTS:
                        pending[submit(c, wait_for_lock)] = c
                        continue
                    r = CompileResult(COMPILE_ERROR, f"the compile process died ({error_note(e)}) "
                                      f"({deaths[c]} attempts; not cached: compiled again by the next job)", retry=True)
                if r is None:
                    busy.append(c)
                else:
                    out[c] = r
            if out:
                seen.update({c: r for c, r in out.items() if not r.retry})  # only final outcomes are kept
                yield out


def _import_compiler() -> None:
    """What a compile process imports before its first compile (torch, triton, the kernels)."""
    import kernels.block_fp8  # noqa: F401


def prewarm_pool(arch: int, workers: int, compile_fn: CompileFn = compile_config) -> None:
    """Start the compile pool compile_stream will take, its processes importing the compiler, without waiting."""
    pool = _pool(arch, max(1, workers), compile_fn)
    for _ in range(max(1, workers)):
        pool.submit(_import_compiler)


def precompile(point: Point, configs: list[Config], workers: int, arch: int,
               compile_fn: CompileFn = compile_config, nice: int = 0) -> dict[Config, CompileResult]:
    """Compile every config for `point`, `workers` processes at a time; all outcomes at once."""
    outcomes: dict[Config, CompileResult] = {}
    for batch in compile_stream(point, configs, workers, arch, compile_fn, nice):
        outcomes.update(batch)
    return {c: outcomes[c] for c in configs}


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


def compile_for_points(points: list[Point], configs_at: Callable[[int], Iterable[Config]], workers: int, arch: int,
                       compile_fn: CompileFn = compile_config, nice: int = 0,
                       max_accumulators: int | None = None) -> dict[Config, CompileResult]:
    """Compile, once, what any of `points` (all of one specialization) will time; `configs_at(M)`: the
    configs of the space at batch size M; `max_accumulators`: the sweep's prune rule (space.pruned_at)."""
    keys = {specialization_key(p) for p in points}
    if len(keys) != 1:
        raise ValueError(f"points of several specializations given: {sorted(keys)}")
    needed = sorted({c for p in points for c in timed_at(list(configs_at(p.M)), p.M, p.K, max_accumulators)})
    return precompile(points[0], needed, workers, arch, compile_fn, nice)
