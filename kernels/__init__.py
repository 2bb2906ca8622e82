"""The Triton W8A8 block-scaled GEMM (`block_fp8`) and its float32 reference (`reference`).

Nothing here knows about tuning: the tuner (package `w8a8_tuner`) only launches `block_fp8`
with the six launch parameters an engine's JSON file holds.
"""
