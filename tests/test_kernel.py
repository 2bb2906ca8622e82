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


# --- SGLang's Hopper kernel (SWAP_AB, SPLIT_K) and its split-K reduction -------------------------------

# (M, N, K, block_shape): decode sizes, ragged N and K (K not a multiple of BLOCK_SIZE_K: the masked loads),
# a split finer than K's steps (parts that sum nothing), and [32, 32] blocks.
HOPPER_CASES = [(1, 256, 512, (128, 128)), (3, 96, 300, (128, 128)), (20, 192, 640, (128, 128)),
                (2, 160, 288, (32, 32)), (5, 64, 96, (32, 32))]


@pytest.mark.parametrize("M,N,K,block_shape", HOPPER_CASES)
@pytest.mark.parametrize("swap", [False, True])
def test_hopper_kernel_every_split_matches_the_reference(M, N, K, block_shape, swap):
    """Both MMA orientations and every split the reduction takes, against the float32 reference, output
    poisoned first; SPLIT_K > 1 goes through the fp32 partials and the reduction kernel."""
    ops = random_operands(M, N, K, block_shape, device=DEVICE, input_type="fp8")
    ref = reference_matmul(ops)
    block_k = min(64, block_shape[1])
    for split, out_dtype in ((1, "bfloat16"), (2, "float32"), (4, "bfloat16"), (8, "float16"), (16, "bfloat16")):
        config = Config(16, 32, block_k, 1, 4, 2, SWAP_AB=swap, SPLIT_K=split).as_dict()
        out = torch.full((M, N), math.nan, dtype=OUT_DTYPES[out_dtype], device=DEVICE)
        block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, block_shape, config, OUT_DTYPES[out_dtype], out=out)
        assert torch.isfinite(out.float()).all(), f"{config}: unwritten (NaN) outputs remain"
        limit = {"bfloat16": 8e-3, "float16": 2e-3, "float32": 1e-3}[out_dtype]
        assert relative_error(out, ref) < limit, f"{config} {out_dtype}: {relative_error(out, ref):.2e}"


def test_the_split_k_reduction_sums_the_partials():
    from kernels.block_fp8 import REDUCE_BLOCK, split_k_reduce_kernel

    for splits, (M, N) in ((2, (1, 300)), (16, (7, 96)), (4, (3, 1000))):
        parts = torch.randn(splits, M, N, device=DEVICE)
        out = torch.full((M, N), math.nan, dtype=torch.float32, device=DEVICE)
        split_k_reduce_kernel[(-(-M * N // REDUCE_BLOCK),)](parts, out, M * N, splits, REDUCE_BLOCK)
        assert torch.allclose(out, parts.sum(0), atol=1e-5), (splits, M, N)


def test_a_wrong_split_would_be_caught():
    """The check has teeth for the Hopper path too: a part's scale wrong is a wrong result."""
    ops = random_operands(1, 256, 512, (128, 128), device=DEVICE, input_type="fp8")
    Bs = ops.Bs.clone()
    Bs[:, 3] *= 2  # the K group the last of four parts sums
    out = block_fp8_matmul(ops.A, ops.B, ops.As, Bs, (128, 128), Config(16, 64, 128, 1, 4, 2, SPLIT_K=4).as_dict())
    assert relative_error(out, reference_matmul(ops)) > MAX_RELATIVE_ERROR


def test_the_engines_selection_rule():
    """SGLang runs its Hopper kernel on sm90 and only for an entry that carries a knob; vLLM never."""
    from kernels.knobs import has_knobs, runs_hopper_kernel

    plain = Config(16, 64, 128, 1, 4, 3).as_dict()
    for entry, knobs in ((plain, False), ({**plain, "SPLIT_K": 1, "SWAP_AB": False}, False),
                         ({**plain, "SWAP_AB": True}, True), ({**plain, "SPLIT_K": 2}, True)):
        assert has_knobs(entry) is knobs
        assert runs_hopper_kernel(entry, 90) is knobs
        assert runs_hopper_kernel(entry, 89) is False and runs_hopper_kernel(entry, 100) is False


def test_a_split_the_reduction_cannot_take_is_refused():
    ops = random_operands(1, 128, 256, (128, 128), device=DEVICE, input_type="fp8")
    with pytest.raises(ValueError, match=r"SPLIT_K=3: the split-K reduction takes \[1, 2, 4, 8, 16\]"):
        block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, (128, 128), {**Config(16, 64, 128, 1, 4, 2).as_dict(),
                                                                     "SPLIT_K": 3})
