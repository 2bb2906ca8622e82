"""The W8A8 block-scaled GEMM, with the launch semantics of vLLM's
`_w8a8_triton_block_scaled_mm` (FP8 operands) and `_w8a8_block_int8_matmul` (INT8 operands), so
that a config tuned here means the same there.

C[m, n] = sum_k (A[m, k] * As[m, k // block_k]) * (B[n, k] * Bs[n // block_n, k // block_k])

The engines' FP8 and INT8 kernels (vLLM's fp8_utils.py and int8_utils.py, SGLang's fp8_kernel.py
and int8_kernel.py) are one source apart from the operand type: each K step's `tl.dot` (fp32 for
FP8, exact int32 for INT8) is converted to fp32 before the scales are applied. So this one kernel
is both; the operand dtype (kernels.reference.INPUT_DTYPES) picks the variant Triton compiles.

The argument list (and so Triton's specialization of it: which ints are 1 or
multiples of 16) is the one vLLM launches, so the compiled code we time is the
code vLLM runs.

SGLang's Hopper variant (`_w8a8_block_fp8_matmul_hopper` + `_reduce_block_fp8_split_k`, chosen on
sm90 when a config entry carries `SWAP_AB` or `SPLIT_K`) is `block_fp8_matmul_hopper_kernel` +
`split_k_reduce_kernel` here, with the same launch: a (tiles, SPLIT_K) grid writing fp32 partials
of shape (SPLIT_K, M, N) that the reduction sums into C (with SPLIT_K = 1 the kernel writes C
itself), and the K masks only where K is not a multiple of BLOCK_SIZE_K (`needs_masking`).
`run_block_fp8` launches a config the way each engine does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.blocks import activation_scale_shape, weight_scale_shape
from kernels.knobs import KNOBS, SPLIT_K_VALUES, has_knobs

OUT_DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}


@triton.jit
def _tile_of(pid, M, N, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, GROUP_SIZE_M: tl.constexpr):
    """(tile_m, tile_n) of program `pid` in the engines' grouped ("super-tile") program order: GROUP_SIZE_M
    row tiles share each column sweep, so that B tiles are reused from L2. Inlined (as every jit call)."""
    tiles_m = tl.cdiv(M, BLOCK_SIZE_M)
    tiles_n = tl.cdiv(N, BLOCK_SIZE_N)
    programs_per_group = GROUP_SIZE_M * tiles_n
    group = pid // programs_per_group
    group_first_m = group * GROUP_SIZE_M
    group_rows = min(tiles_m - group_first_m, GROUP_SIZE_M)
    tile_m = group_first_m + (pid % group_rows)
    tile_n = (pid % programs_per_group) // group_rows
    return tile_m, tile_n


@triton.jit
def _store_tile(C, acc, tile_m, tile_n, M, N, stride_cm, stride_cn, BLOCK_SIZE_M: tl.constexpr,
                BLOCK_SIZE_N: tl.constexpr):
    """The fp32 tile `acc` into C in C's dtype, the rows and columns past the edges masked out."""
    c = acc.to(C.dtype.element_ty)
    out_rows = tile_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    out_cols = tile_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_tile = C + out_rows[:, None] * stride_cm + out_cols[None, :] * stride_cn
    tl.store(c_tile, c, mask=(out_rows[:, None] < M) & (out_cols[None, :] < N))


@triton.jit
def block_fp8_matmul_kernel(
    A, B, C, As, Bs,
    M, N, K,
    group_n, group_k,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    stride_as_m, stride_as_k, stride_bs_k, stride_bs_n,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_N: tl.constexpr,
    BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
):
    tile_m, tile_n = _tile_of(tl.program_id(axis=0), M, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)
    # Rows and columns past the edge wrap around (modulo) instead of being
    # masked: loads stay in bounds and the store masks them out.
    rows = (tile_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)) % M
    cols = (tile_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N
    ks = tl.arange(0, BLOCK_SIZE_K)
    a_tile = A + rows[:, None] * stride_am + ks[None, :] * stride_ak
    b_tile = B + ks[:, None] * stride_bk + cols[None, :] * stride_bn
    a_scale_row = As + rows * stride_as_m
    b_scale_col = Bs + (cols // group_n) * stride_bs_n

    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        k_left = K - step * BLOCK_SIZE_K
        a = tl.load(a_tile, mask=ks[None, :] < k_left, other=0.0)
        b = tl.load(b_tile, mask=ks[:, None] < k_left, other=0.0)
        # One scale group per K step: BLOCK_SIZE_K divides group_k.
        scale_k = (step * BLOCK_SIZE_K) // group_k
        a_s = tl.load(a_scale_row + scale_k * stride_as_k)
        b_s = tl.load(b_scale_col + scale_k * stride_bs_k)
        # fp32 already for FP8; the int32 sums of INT8 become fp32 here, as in the engines.
        acc += tl.dot(a, b).to(tl.float32) * a_s[:, None] * b_s[None, :]
        a_tile += BLOCK_SIZE_K * stride_ak
        b_tile += BLOCK_SIZE_K * stride_bk
    _store_tile(C, acc, tile_m, tile_n, M, N, stride_cm, stride_cn, BLOCK_SIZE_M, BLOCK_SIZE_N)


@triton.jit
def block_fp8_matmul_hopper_kernel(
    A, B, C, As, Bs,
    M, N, K,
    group_n, group_k,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    stride_as_m, stride_as_k, stride_bs_k, stride_bs_n,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_N: tl.constexpr,
    BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
    needs_masking: tl.constexpr,
    SWAP_AB: tl.constexpr = False,
    SPLIT_K: tl.constexpr = 1,
):
    # Program (tile, part): `part` sums its share of the K steps into partial `part` of C, which is
    # then (SPLIT_K, M, N) fp32 (or C itself when SPLIT_K == 1).
    pid = tl.program_id(axis=0)
    part = tl.program_id(axis=1)
    k_steps = tl.cdiv(K, BLOCK_SIZE_K)
    steps_per_part = tl.cdiv(k_steps, SPLIT_K)
    first_step = part * steps_per_part
    end_step = tl.minimum(first_step + steps_per_part, k_steps)
    C += part * M * N

    tile_m, tile_n = _tile_of(pid, M, N, BLOCK_SIZE_M, BLOCK_SIZE_N, GROUP_SIZE_M)
    rows = (tile_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)) % M
    cols = (tile_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N
    ks = tl.arange(0, BLOCK_SIZE_K)
    a_tile = A + rows[:, None] * stride_am + (first_step * BLOCK_SIZE_K + ks)[None, :] * stride_ak
    b_tile = B + (first_step * BLOCK_SIZE_K + ks)[:, None] * stride_bk + cols[None, :] * stride_bn
    a_scale_row = As + rows * stride_as_m
    b_scale_col = Bs + (cols // group_n) * stride_bs_n

    # SWAP_AB: the weight tile takes the MMA's M side (C^T = B^T A^T), for tiny BLOCK_SIZE_M.
    if SWAP_AB:
        acc = tl.zeros((BLOCK_SIZE_N, BLOCK_SIZE_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for step in range(first_step, end_step):
        if needs_masking:
            k_left = K - step * BLOCK_SIZE_K
            a = tl.load(a_tile, mask=ks[None, :] < k_left, other=0.0)
            b = tl.load(b_tile, mask=ks[:, None] < k_left, other=0.0)
        else:
            a = tl.load(a_tile)
            b = tl.load(b_tile)
        scale_k = (step * BLOCK_SIZE_K) // group_k
        a_s = tl.load(a_scale_row + scale_k * stride_as_k)
        b_s = tl.load(b_scale_col + scale_k * stride_bs_k)
        if SWAP_AB:
            acc += tl.dot(tl.trans(b), tl.trans(a)).to(tl.float32) * b_s[:, None] * a_s[None, :]
        else:
            acc += tl.dot(a, b).to(tl.float32) * a_s[:, None] * b_s[None, :]
        a_tile += BLOCK_SIZE_K * stride_ak
        b_tile += BLOCK_SIZE_K * stride_bk
    if SWAP_AB:
        acc = tl.trans(acc)
    _store_tile(C, acc, tile_m, tile_n, M, N, stride_cm, stride_cn, BLOCK_SIZE_M, BLOCK_SIZE_N)


@triton.jit
def split_k_reduce_kernel(Parts, Out, ELEMENTS, SPLITS: tl.constexpr, BLOCK: tl.constexpr):
    """Out (contiguous, M x N = ELEMENTS) = sum of the SPLITS fp32 partials Parts (SPLITS, M, N)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    parts = tl.arange(0, SPLITS)
    values = tl.load(Parts + parts[:, None] * ELEMENTS + offsets[None, :], mask=offsets[None, :] < ELEMENTS,
                     other=0.0)
    tl.store(Out + offsets, tl.sum(values, axis=0), mask=offsets < ELEMENTS)


# Elements each program of the split-K reduction sums (SGLang's launch).
REDUCE_BLOCK = 256


def grid_size(M: int, N: int, config: Mapping[str, int]) -> int:
    """Programs of one launch: one per (BLOCK_SIZE_M x BLOCK_SIZE_N) output tile."""
    return triton.cdiv(M, config["BLOCK_SIZE_M"]) * triton.cdiv(N, config["BLOCK_SIZE_N"])


def check_operands(A, B, As, Bs, block_size) -> None:
    """The shape contract vLLM asserts, as errors that say what is wrong."""
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(f"A has K={A.shape[-1]} but B has K={B.shape[-1]}")
    if not A.is_contiguous() or not B.is_contiguous():
        raise ValueError("A and B must be contiguous (row-major)")
    if A.dtype != B.dtype:
        raise ValueError(f"A is {A.dtype} but B is {B.dtype}: both operands have one type (fp8 or int8)")
    K = A.shape[-1]
    N = B.shape[0]
    want_as = (*A.shape[:-1], activation_scale_shape(1, K, block_size)[1])
    if tuple(As.shape) != want_as:
        raise ValueError(f"As has shape {tuple(As.shape)}, expected {want_as}")
    want_bs = weight_scale_shape(N, K, block_size)
    if tuple(Bs.shape) != want_bs:
        raise ValueError(f"Bs has shape {tuple(Bs.shape)}, expected {want_bs}")


def launch_args(A, B, C, As, Bs, block_size):
    """Positional kernel arguments, in vLLM's order (also used to pre-compile)."""
    M = A.numel() // A.shape[-1]
    N, K = B.shape
    return (
        A, B, C, As, Bs, M, N, K, block_size[0], block_size[1],
        A.stride(-2), A.stride(-1), B.stride(1), B.stride(0), C.stride(-2), C.stride(-1),
        As.stride(-2), As.stride(-1), Bs.stride(1), Bs.stride(0),
    )


@dataclass(frozen=True)
class Kernels:
    """The Triton functions one call runs: the plain kernel, and SGLang's Hopper kernel with its reduction
    (this module's, or an installed engine's: kernels.engines)."""

    plain: object
    hopper: object = block_fp8_matmul_hopper_kernel
    reduce: object = split_k_reduce_kernel


BUILTIN = Kernels(block_fp8_matmul_kernel)


def _declares(fn, name: str) -> bool:
    return name in getattr(fn, "arg_names", ())


@dataclass(frozen=True)
class _Launch:
    fn: object    # a Triton function
    grid: tuple
    args: tuple
    kwargs: dict


def _launches(kernels: Kernels, A, B, C, As, Bs, block_size, config: Mapping, parts=None) -> list[_Launch]:
    """The launches one call of `config` makes, as the engine makes them: the plain kernel, or (an entry with a
    knob) the Hopper kernel over a (tiles, SPLIT_K) grid and, with SPLIT_K > 1, the reduction of its fp32
    partials `parts` (SPLIT_K, M, N) into C. The engines' newer kernels take `needs_masking` (K not a multiple of
    BLOCK_SIZE_K) and get it. The one place run_block_fp8, warmup_block_fp8 and bind_block_fp8 take it from."""
    M = A.numel() // A.shape[-1]
    N, K = B.shape
    six = {k: v for k, v in config.items() if k not in KNOBS}
    masking = {"needs_masking": K % six["BLOCK_SIZE_K"] != 0}
    tiles = grid_size(M, N, six)
    if not has_knobs(config):
        extra = masking if _declares(kernels.plain, "needs_masking") else {}
        return [_Launch(kernels.plain, (tiles,), launch_args(A, B, C, As, Bs, block_size), {**six, **extra})]
    split = int(config.get("SPLIT_K", 1))
    target = C if split == 1 else parts
    args = launch_args(A, B, target, As, Bs, block_size)
    args = args[:14] + (C.stride(-2), C.stride(-1)) + args[16:]  # the engine passes C's strides
    knobs = {"SWAP_AB": bool(config.get("SWAP_AB", False)), "SPLIT_K": split}
    launches = [_Launch(kernels.hopper, (tiles, split), args, {**six, **masking, **knobs})]
    if split > 1:
        launches.append(_Launch(kernels.reduce, (triton.cdiv(M * N, REDUCE_BLOCK),),
                                (parts, C, M * N, split, REDUCE_BLOCK), {}))
    return launches


def _partials(config: Mapping, C, M: int, N: int):
    """The fp32 split-K partials of one call (allocated per call, as SGLang allocates them), or None."""
    split = int(config.get("SPLIT_K", 1))
    return torch.empty((split, M, N), dtype=torch.float32, device=C.device) if split > 1 else None


def run_block_fp8(kernels: Kernels, A, B, C, As, Bs, block_size, config: Mapping) -> None:
    """One call as the engine makes it: `config` (the six launch parameters, plus SWAP_AB/SPLIT_K for SGLang's
    Hopper kernel) writes C (_launches)."""
    parts = _partials(config, C, A.numel() // A.shape[-1], B.shape[0])
    for launch in _launches(kernels, A, B, C, As, Bs, block_size, config, parts):
        launch.fn[launch.grid](*launch.args, **launch.kwargs)


def warmup_block_fp8(kernels: Kernels, A, B, C, As, Bs, block_size, config: Mapping, parts=None) -> list:
    """Compile every Triton function one call of `config` runs, without launching, and return them. A, B, C, As,
    Bs may be placeholders (Triton specializes on dtypes, alignment and int values); `parts` stands for the fp32
    partials (SPLIT_K, M, N) when SPLIT_K > 1."""
    return [launch.fn.warmup(*launch.args, grid=launch.grid, **launch.kwargs)
            for launch in _launches(kernels, A, B, C, As, Bs, block_size, config, parts)]


def _bound_launch(fn, grid: tuple, args: tuple, kwargs: dict):
    """(launch(*values), values): `fn`'s compiled kernel for these arguments, launched with every argument
    bound ahead: what Triton's dispatch does per call (bind the arguments, compute the specialization key,
    look the kernel up) is done once. None where that cannot be done here (the interpreter, a launch hook
    set by a profiler, a Triton without compiled launchers of this form: Triton 3.6 to 3.9 have it)."""
    try:
        from triton import knobs
        from triton.runtime import driver
    except ImportError:
        return None
    hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
    if not hasattr(fn, "device_caches") or any(h is not None and getattr(h, "calls", True) for h in hooks):
        return None  # a hook to call per launch (a profiler's): Triton's own dispatch prepares its metadata
    try:
        compiled = fn.warmup(*args, grid=grid, **kwargs)
        compiled = compiled.result() if hasattr(compiled, "result") else compiled
        run, function, packed = compiled.run, compiled.function, compiled.packed_metadata
        signature = inspect.signature(fn.fn)
        bound = signature.bind(*args, **{k: v for k, v in kwargs.items() if k in signature.parameters})
        bound.apply_defaults()
        device = driver.active.get_current_device()
        stream_of = driver.active.get_current_stream
    except (AttributeError, TypeError):
        return None
    values = tuple(bound.arguments.values())  # every parameter in order, as Triton's binder passes them
    grid3 = tuple(grid) + (1,) * (3 - len(grid))

    def launch(*values):
        # no launch metadata and no hooks: Triton's hook chains are empty here (checked above)
        run(grid3[0], grid3[1], grid3[2], stream_of(device), function, packed, None, None, None, *values)

    return launch, values


def bind_block_fp8(kernels: Kernels, A, B, C, As, Bs, block_size, config: Mapping) -> Callable | None:
    """call(B, Bs, C): one call of `config` on weight B with scales Bs into C, as run_block_fp8 makes it (the
    split-K buffer allocated per call too), with the kernels looked up once here for these operands: a few
    microseconds of host time a call instead of tens. A call's B, Bs and C are these or others of the same
    shape, dtype and layout (weight copies, other outputs); a C that is not 16-byte aligned, which the
    binaries here may assume, is launched through run_block_fp8. None where bound launches are not
    available (then use run_block_fp8)."""
    M, N = A.numel() // A.shape[-1], B.shape[0]
    parts = _partials(config, C, M, N)
    bound = [_bound_launch(launch.fn, launch.grid, launch.args, launch.kwargs)
             for launch in _launches(kernels, A, B, C, As, Bs, block_size, config, parts)]
    if any(b is None for b in bound):
        return None
    # Where each launch takes the operands a call swaps in (0: B, 1: Bs, 2: C, 3: the partials), by identity.
    slots = {id(B): 0, id(Bs): 1, id(C): 2, id(parts): 3}
    swaps = [[(i, slots[id(v)]) for i, v in enumerate(values) if id(v) in slots and v is not None]
             for _, values in bound]
    aligned = C.data_ptr() % 16 == 0

    def call(B, Bs, C) -> None:
        if aligned and C.data_ptr() % 16:
            return run_block_fp8(kernels, A, B, C, As, Bs, block_size, config)
        operands = (B, Bs, C, _partials(config, C, M, N))
        for (launch, values), swap in zip(bound, swaps):
            values = list(values)
            for i, which in swap:
                values[i] = operands[which]
            launch(*values)

    return call


def check_config(config: Mapping, block_size) -> None:
    """What a config must satisfy for this kernel to compute the right product (as errors naming it)."""
    if block_size[1] % config["BLOCK_SIZE_K"]:
        raise ValueError(f"BLOCK_SIZE_K={config['BLOCK_SIZE_K']} does not divide block_k={block_size[1]}")
    split = int(config.get("SPLIT_K", 1))
    if split not in SPLIT_K_VALUES:
        raise ValueError(f"SPLIT_K={split}: the split-K reduction takes {list(SPLIT_K_VALUES)}")


def block_fp8_matmul(A, B, As, Bs, block_size, config: Mapping, out_dtype=torch.bfloat16, out=None,
                     kernels: Kernels = BUILTIN):
    """C = dequant(A, As) @ dequant(B, Bs).T with the given launch parameters (an engine's JSON entry:
    BLOCK_SIZE_M/N/K, GROUP_SIZE_M, num_warps, num_stages, and SGLang's SWAP_AB/SPLIT_K)."""
    check_operands(A, B, As, Bs, block_size)
    check_config(config, block_size)
    N = B.shape[0]
    C = out if out is not None else A.new_empty((*A.shape[:-1], N), dtype=out_dtype)
    if has_knobs(config) and not C.is_contiguous():
        raise ValueError("the split-K reduction writes C as one contiguous M x N block")
    run_block_fp8(kernels, A, B, C, As, Bs, block_size, config)
    return C
