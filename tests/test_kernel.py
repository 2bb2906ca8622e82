"""The Triton kernel against the float32 reference, on fresh random inputs."""

import math

import pytest
import torch
from conftest import DEVICE

from kernels.block_fp8 import OUT_DTYPES, block_fp8_matmul
from kernels.reference import random_operands, reference_matmul, relative_error
from w8a8_tuner.search.space import Config, vllm_default_config
from w8a8_tuner.search.status import MAX_RELATIVE_ERROR

# (M, N, K): multiples of the blocks, ragged M/N/K, M=1, and a tail K smaller than one scale group.
SHAPES = [(1, 256, 512), (16, 128, 256), (33, 200, 300), (7, 384, 130), (70, 96, 384)]
CONFIGS = [
    Config(16, 32, 64, 1, 4, 2),
    Config(32, 64, 128, 4, 4, 3),   # GROUP_SIZE_M > 1 with several row tiles
    Config(64, 128, 128, 32, 4, 2),  # vLLM's fallback
]


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("out_dtype", list(OUT_DTYPES))
def test_matches_float32_reference(M, N, K, out_dtype):
    ops = random_operands(M, N, K, (128, 128), device=DEVICE)  # fresh seed every run
    ref = reference_matmul(ops)
    for config in CONFIGS:
        out = torch.full((M, N), math.nan, dtype=OUT_DTYPES[out_dtype], device=DEVICE)
        block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, (128, 128), config.as_dict(), OUT_DTYPES[out_dtype], out=out)
        assert torch.isfinite(out.float()).all(), f"{config}: unwritten (NaN) outputs remain"
        err = relative_error(out, ref)
        # bf16 rounding gives ~3e-3; fp16/fp32 outputs are much tighter
        limit = {"bfloat16": 8e-3, "float16": 2e-3, "float32": 1e-3}[out_dtype]
        assert err < limit, f"{config} {out_dtype}: relative error {err:.2e}"


def test_non_square_block_shape():
    M, N, K = 20, 192, 320
    ops = random_operands(M, N, K, (64, 64), device=DEVICE)
    out = torch.full((M, N), math.nan, dtype=torch.float32, device=DEVICE)
    block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, (64, 64), Config(16, 64, 64, 1, 4, 2).as_dict(), torch.float32,
                     out=out)
    assert relative_error(out, reference_matmul(ops)) < 1e-3


def test_wrong_scale_would_be_caught():
    """The reference check has teeth: a kernel fed a wrong scale fails the threshold."""
    ops = random_operands(16, 256, 256, (128, 128), device=DEVICE)
    ref = reference_matmul(ops)
    Bs = ops.Bs.clone()
    Bs[0, 1] *= 2
    out = block_fp8_matmul(ops.A, ops.B, ops.As, Bs, (128, 128), vllm_default_config((128, 128)).as_dict())
    assert relative_error(out, ref) > MAX_RELATIVE_ERROR


def test_block_k_not_divisible_rejected():
    ops = random_operands(4, 128, 128, (128, 128), device=DEVICE)
    with pytest.raises(ValueError, match="BLOCK_SIZE_K=256 does not divide block_k=128"):
        block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, (128, 128), Config(16, 32, 256, 1, 4, 2).as_dict())


def test_bad_scale_shape_rejected():
    ops = random_operands(4, 128, 256, (128, 128), device=DEVICE)
    with pytest.raises(ValueError, match="Bs has shape"):
        block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs[:, :1], (128, 128), vllm_default_config((128, 128)).as_dict())
