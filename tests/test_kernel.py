"""The Triton kernel, with FP8 and with INT8 operands, against the float32 reference, on fresh random inputs."""

import math

import pytest
import torch
from conftest import DEVICE

from kernels.block_fp8 import OUT_DTYPES, block_fp8_matmul
from kernels.reference import INPUT_DTYPES, random_operands, reference_matmul, relative_error
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
@pytest.mark.parametrize("input_type", list(INPUT_DTYPES))
def test_matches_float32_reference(M, N, K, out_dtype, input_type):
    ops = random_operands(M, N, K, (128, 128), device=DEVICE, input_type=input_type)  # fresh seed every run
    assert ops.A.dtype == ops.B.dtype == INPUT_DTYPES[input_type]
    ref = reference_matmul(ops)
    for config in CONFIGS:
        out = torch.full((M, N), math.nan, dtype=OUT_DTYPES[out_dtype], device=DEVICE)
        block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, (128, 128), config.as_dict(), OUT_DTYPES[out_dtype], out=out)
        assert torch.isfinite(out.float()).all(), f"{config}: unwritten (NaN) outputs remain"
        err = relative_error(out, ref)
        # bf16 rounding gives ~3e-3; fp16/fp32 outputs are much tighter
        limit = {"bfloat16": 8e-3, "float16": 2e-3, "float32": 1e-3}[out_dtype]
        assert err < limit, f"{config} {input_type} {out_dtype}: relative error {err:.2e}"


@pytest.mark.parametrize("input_type", list(INPUT_DTYPES))
def test_non_square_block_shape(input_type):
    M, N, K = 20, 192, 320
    ops = random_operands(M, N, K, (64, 64), device=DEVICE, input_type=input_type)
    out = torch.full((M, N), math.nan, dtype=torch.float32, device=DEVICE)
    block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, (64, 64), Config(16, 64, 64, 1, 4, 2).as_dict(), torch.float32,
                     out=out)
    assert relative_error(out, reference_matmul(ops)) < 1e-3


@pytest.mark.parametrize("input_type", list(INPUT_DTYPES))
def test_wrong_scale_would_be_caught(input_type):
    """The reference check has teeth: a kernel fed a wrong scale fails the threshold."""
    ops = random_operands(16, 256, 256, (128, 128), device=DEVICE, input_type=input_type)
    ref = reference_matmul(ops)
    Bs = ops.Bs.clone()
    Bs[0, 1] *= 2
    config = vllm_default_config((128, 128), input_type=input_type).as_dict()
    out = block_fp8_matmul(ops.A, ops.B, ops.As, Bs, (128, 128), config)
    assert relative_error(out, ref) > MAX_RELATIVE_ERROR


def test_int8_operands_are_the_engines_quantization():
    """INT8 operands as the engines quantize them: integers in [-127, 127], each group's largest
    magnitude at 127, scale = absmax / 127; dequantized they are within half a step of the input."""
    from kernels.reference import quantize_activations

    x = torch.randn(5, 300)
    q, scale = quantize_activations(x, 128, torch.int8)
    assert q.dtype == torch.int8 and scale.shape == (5, 3)
    assert int(q.abs().max()) == 127 and int(q.min()) >= -127
    assert torch.equal(q[:, :128].abs().amax(dim=1), torch.full((5,), 127, dtype=torch.int8))
    groups = torch.nn.functional.pad(x, (0, 84)).view(5, 3, 128)
    assert torch.allclose(scale, groups.abs().amax(dim=-1) / 127)
    back = q.float() * scale.repeat_interleave(128, dim=1)[:, :300]
    assert (back - x).abs().max() <= 0.5 * scale.max() * (1 + 1e-6)


def test_mixed_operand_types_rejected():
    ops = random_operands(4, 128, 128, (128, 128), device=DEVICE, input_type="int8")
    with pytest.raises(ValueError, match="A is torch.int8 but B is torch.float8_e4m3fn"):
        block_fp8_matmul(ops.A, ops.B.float().to(torch.float8_e4m3fn), ops.As, ops.Bs, (128, 128),
                         vllm_default_config((128, 128), input_type="int8").as_dict())


def test_block_k_not_divisible_rejected():
    ops = random_operands(4, 128, 128, (128, 128), device=DEVICE, input_type="fp8")
    with pytest.raises(ValueError, match="BLOCK_SIZE_K=256 does not divide block_k=128"):
        block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, (128, 128), Config(16, 32, 256, 1, 4, 2).as_dict())


def test_bad_scale_shape_rejected():
    ops = random_operands(4, 128, 256, (128, 128), device=DEVICE, input_type="fp8")
    with pytest.raises(ValueError, match="Bs has shape"):
        block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs[:, :1], (128, 128),
                         vllm_default_config((128, 128), input_type="fp8").as_dict())
