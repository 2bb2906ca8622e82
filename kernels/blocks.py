"""Shape rules of block quantization, in one place (pure Python: no torch, no triton).

Activations A (M, K) carry one scale per 1 x block_k token group; weights B (N, K) one
scale per block_n x block_k block. A partial last group or block has a scale of its own.
"""


def cdiv(a: int, b: int) -> int:
    """Ceiling division for positive ints."""
    return -(-a // b)


def activation_scale_shape(M: int, K: int, block_shape) -> tuple[int, int]:
    return (M, cdiv(K, block_shape[1]))


def weight_scale_shape(N: int, K: int, block_shape) -> tuple[int, int]:
    return (cdiv(N, block_shape[0]), cdiv(K, block_shape[1]))
