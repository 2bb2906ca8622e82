"""Stand-in for vLLM's int8_utils.py (tests only): `_w8a8_block_int8_matmul` with vLLM's argument
list, here the builtin kernel behind a launch record (fake_engine_launches)."""

from fake_engine_launches import RecordedKernel

from kernels.block_fp8 import block_fp8_matmul_kernel

_w8a8_block_int8_matmul = RecordedKernel(block_fp8_matmul_kernel, "vllm._w8a8_block_int8_matmul")
