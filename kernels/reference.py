"""Random block-quantized operands and the float32 reference product.

Two operand types, the two variants vLLM and SGLang ship (`input_type`): FP8 e4m3 (Hopper and
later) and INT8 (GPUs without FP8, such as Ampere). Both are quantized the same way, with a scale
per 1 x block_k token group (activations) and per block_n x block_k block (weights) equal to the
group's absolute maximum over the type's largest value (448 for FP8, 127 for INT8); FP8 rounds
on conversion, INT8 rounds to the nearest integer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.blocks import cdiv

FP8 = torch.float8_e4m3fn
# Operand dtype per `input_type` (the config key's values).
INPUT_DTYPES = {"fp8": FP8, "int8": torch.int8}


def quant_max(dtype: torch.dtype) -> float:
    """The largest magnitude a quantized value takes: a group's absolute maximum maps to it."""
    return float(torch.finfo(dtype).max if dtype.is_floating_point else torch.iinfo(dtype).max)


def to_quantized(scaled: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Values already divided by their scale, as `dtype` (integers round to nearest, not toward zero)."""
    limit = quant_max(dtype)
    if not dtype.is_floating_point:
        scaled = scaled.round()
    return scaled.clamp(-limit, limit).to(dtype)


@dataclass
class Operands:
    A: torch.Tensor   # (M, K) fp8 or int8, activations
    B: torch.Tensor   # (N, K) same dtype as A, weight
    As: torch.Tensor  # (M, cdiv(K, block_k)) fp32, per 1 x block_k token group
    Bs: torch.Tensor  # (cdiv(N, block_n), cdiv(K, block_k)) fp32, per block_n x block_k block
    block_shape: tuple[int, int]


def quantize_activations(x: torch.Tensor, block_k: int, dtype: torch.dtype):
    """Per-token-group quantization (1 x block_k) of a float (M, K) tensor."""
    M, K = x.shape
    groups = cdiv(K, block_k)
    padded = torch.nn.functional.pad(x, (0, groups * block_k - K)).view(M, groups, block_k)
    scale = padded.abs().amax(dim=-1).clamp(min=1e-12) / quant_max(dtype)
    q = to_quantized(padded / scale[..., None], dtype)
    return q.view(M, groups * block_k)[:, :K].contiguous(), scale.float().contiguous()


def quantize_weight(w: torch.Tensor, block_n: int, block_k: int, dtype: torch.dtype):
    """Per-block quantization (block_n x block_k) of a float (N, K) tensor."""
    N, K = w.shape
    bn, bk = cdiv(N, block_n), cdiv(K, block_k)
    padded = torch.nn.functional.pad(w, (0, bk * block_k - K, 0, bn * block_n - N))
    blocks = padded.view(bn, block_n, bk, block_k)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / quant_max(dtype)
    q = to_quantized(blocks / scale[:, None, :, None], dtype)
    return q.view(bn * block_n, bk * block_k)[:N, :K].contiguous(), scale.float().contiguous()


def random_operands(M: int, N: int, K: int, block_shape=(128, 128), device="cpu", seed=None, *,
                    input_type: str) -> Operands:
    """Fresh random operands of `input_type` (a key of INPUT_DTYPES), quantized the way serving
    quantizes them."""
    dtype = INPUT_DTYPES[input_type]
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    block_n, block_k = block_shape
    x = torch.randn(M, K, device=device, generator=gen)
    w = torch.randn(N, K, device=device, generator=gen) * 0.05
    A, As = quantize_activations(x, block_k, dtype)
    B, Bs = quantize_weight(w, block_n, block_k, dtype)
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
