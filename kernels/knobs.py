"""SGLang's Hopper knobs (pure Python: no torch, no triton).

SGLang's block-FP8 Triton GEMM reads two keys beyond the six launch parameters from the same JSON
entry: `SWAP_AB` (the weight tile takes the MMA's M side, for tiny M) and `SPLIT_K` (K split over a
second grid axis into fp32 partials that a reduction kernel sums). On sm90 an entry that carries one
runs its Hopper kernel (`_w8a8_block_fp8_matmul_hopper` + `_reduce_block_fp8_split_k`); every other
entry, and every entry vLLM reads, runs the plain kernel (sgl-project/sglang PR 39657).
"""

from __future__ import annotations

from collections.abc import Mapping

from kernels.blocks import cdiv

# The keys and their values when an entry leaves them out.
KNOBS = {"SWAP_AB": False, "SPLIT_K": 1}
# Split counts the reduction takes (SGLang asserts a power of two: its reduction sums a tl.arange).
SPLIT_K_VALUES = (1, 2, 4, 8, 16)
# The architecture (compute capability x 10) on which SGLang runs its Hopper kernel.
HOPPER_ARCH = 90


def has_knobs(entry: Mapping) -> bool:
    """Whether a config entry asks for the Hopper kernel: SWAP_AB true or SPLIT_K above 1."""
    return bool(entry.get("SWAP_AB", False)) or int(entry.get("SPLIT_K", 1)) > 1


def runs_hopper_kernel(entry: Mapping, arch: int | None) -> bool:
    """SGLang's selection rule (w8a8_block_fp8_matmul_triton): the Hopper kernel on sm90, and only for an
    entry that carries a knob."""
    return arch == HOPPER_ARCH and has_knobs(entry)


def empty_parts(K: int, block_size_k: int, split_k: int) -> int:
    """How many of the SPLIT_K parts get no K step: each part takes cdiv(steps, SPLIT_K) steps in order,
    so the last parts of a split too fine for K sum nothing (they only write zeros)."""
    steps = cdiv(K, block_size_k)
    per_part = cdiv(steps, split_k)
    return split_k - cdiv(steps, per_part)
