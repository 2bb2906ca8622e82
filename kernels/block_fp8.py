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
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import triton
import triton.language as tl

from kernels.blocks import activation_scale_shape, weight_scale_shape

OUT_DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}


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
    # Grouped ("super-tile") program order: GROUP_SIZE_M row-tiles share each
    # column sweep so that B tiles are reused from L2.
    pid = tl.program_id(axis=0)
    tiles_m = tl.cdiv(M, BLOCK_SIZE_M)
    tiles_n = tl.cdiv(N, BLOCK_SIZE_N)
    programs_per_group = GROUP_SIZE_M * tiles_n
    group = pid // programs_per_group
    group_first_m = group * GROUP_SIZE_M
    group_rows = min(tiles_m - group_first_m, GROUP_SIZE_M)
    tile_m = group_first_m + (pid % group_rows)
    tile_n = (pid % programs_per_group) // group_rows

    # Rows and columns past the edge wrap around (modulo) instead of being
    # masked: loads stay in bounds and the store below masks them out.
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

    c = acc.to(C.dtype.element_ty)
    out_rows = tile_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    out_cols = tile_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    c_tile = C + out_rows[:, None] * stride_cm + out_cols[None, :] * stride_cn
    tl.store(c_tile, c, mask=(out_rows[:, None] < M) & (out_cols[None, :] < N))


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


def block_fp8_matmul(A, B, As, Bs, block_size, config: Mapping[str, int], out_dtype=torch.bfloat16, out=None):
    """C = dequant(A, As) @ dequant(B, Bs).T with the given launch parameters (the six keys of an
    engine's JSON entry: BLOCK_SIZE_M/N/K, GROUP_SIZE_M, num_warps, num_stages)."""
    check_operands(A, B, As, Bs, block_size)
    if block_size[1] % config["BLOCK_SIZE_K"]:
        raise ValueError(f"BLOCK_SIZE_K={config['BLOCK_SIZE_K']} does not divide block_k={block_size[1]}")
    M = A.numel() // A.shape[-1]
    N = B.shape[0]
    C = out if out is not None else A.new_empty((*A.shape[:-1], N), dtype=out_dtype)
    block_fp8_matmul_kernel[(grid_size(M, N, config),)](
        *launch_args(A, B, C, As, Bs, block_size), **config
    )
    return C
