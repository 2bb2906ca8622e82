"""The Triton W8A8 block-scaled GEMM (`block_fp8`, FP8 or INT8 operands), its float32 reference
(`reference`), and where each engine keeps its own copy of the kernel (`engines`).

Nothing here knows about tuning: the tuner (package `w8a8_tuner`) only launches `block_fp8` (or
the engine's kernel `engines` finds) with the six launch parameters an engine's JSON file holds.
"""
