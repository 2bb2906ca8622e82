"""Random block-quantized operands and the float32 reference product."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.blocks import cdiv

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


@dataclass
class Operands:
    A: torch.Tensor   # (M, K) fp8, activations
    B: torch.Tensor   # (N, K) fp8, weight
    As: torch.Tensor  # (M, cdiv(K, block_k)) fp32, per 1 x block_k token group
    Bs: torch.Tensor  # (cdiv(N, block_n), cdiv(K, block_k)) fp32, per block_n x block_k block
    block_shape: tuple[int, int]


def quantize_activations(x: torch.Tensor, block_k: int):
    """Per-token-group quantization (1 x block_k) of a float (M, K) tensor."""
    M, K = x.shape
    groups = cdiv(K, block_k)
    padded = torch.nn.functional.pad(x, (0, groups * block_k - K)).view(M, groups, block_k)
    scale = padded.abs().amax(dim=-1).clamp(min=1e-12) / FP8_MAX
    q = (padded / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q.view(M, groups * block_k)[:, :K].contiguous(), scale.float().contiguous()


def quantize_weight(w: torch.Tensor, block_n: int, block_k: int):
    """Per-block quantization (block_n x block_k) of a float (N, K) tensor."""
    N, K = w.shape
    bn, bk = cdiv(N, block_n), cdiv(K, block_k)
    padded = torch.nn.functional.pad(w, (0, bk * block_k - K, 0, bn * block_n - N))
    blocks = padded.view(bn, block_n, bk, block_k)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / FP8_MAX
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q.view(bn * block_n, bk * block_k)[:N, :K].contiguous(), scale.float().contiguous()


def random_operands(M: int, N: int, K: int, block_shape=(128, 128), device="cpu", seed=None) -> Operands:
    """Fresh random operands, quantized the way serving quantizes them."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    block_n, block_k = block_shape
    x = torch.randn(M, K, device=device, generator=gen)
    w = torch.randn(N, K, device=device, generator=gen) * 0.05
    A, As = quantize_activations(x, block_k)
    B, Bs = quantize_weight(w, block_n, block_k)
    return Operands(A, B, As, Bs, (block_n, block_k))


def dequantize(q: torch.Tensor, scale: torch.Tensor, block_rows: int, block_k: int) -> torch.Tensor:
    rows, K = q.shape
    s = scale.repeat_interleave(block_rows, dim=0)[:rows].repeat_interleave(block_k, dim=1)[:, :K]
    return q.float() * s


def reference_matmul(ops: Operands) -> torch.Tensor:
    """float32 reference: dequantize both operands, then matmul (no tf32)."""
    block_n, block_k = ops.block_shape
    a = dequantize(ops.A, ops.As, 1, block_k)
    b = dequantize(ops.B, ops.Bs, block_n, block_k)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return a @ b.T
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float32; inf if any element is not finite."""
    out = out.float()
    if not torch.isfinite(out).all():
        return float("inf")
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp(min=1e-30))
