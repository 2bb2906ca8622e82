"""Weight shapes (N, K) of a model's block-FP8 linear layers per tensor-parallel size."""

from __future__ import annotations

# DeepSeek-V3/R1 weights (N, K), grouped by how tensor parallelism splits them.
DEEPSEEK_V3 = {
    "replicated": [(576, 7168), (24576, 7168), (32768, 512), (7168, 16384), (7168, 18432)],
    # column-parallel: each rank holds N / tp rows of the weight
    "split_n": [(36864, 7168), (24576, 7168), (32768, 512), (24576, 1536), (12288, 7168), (4096, 7168)],
    # row-parallel: each rank holds K / tp columns of the weight
    "split_k": [(7168, 18432), (7168, 16384), (7168, 2048)],
}

MODELS = {"deepseek_v3": DEEPSEEK_V3}


class ShapeError(ValueError):
    pass


def model_shapes(model: str, tp: int, block_shape=(128, 128)) -> list[tuple[int, int]]:
    """Distinct (N, K) one rank runs at tensor-parallel size `tp`, sorted.

    A split that does not land on a whole number of quantization blocks cannot be
    served (the scales would straddle ranks), so it is an error, not a shape.
    """
    if model not in MODELS:
        raise ShapeError(f"model: unknown model {model!r}; known: {', '.join(sorted(MODELS))}")
    block_n, block_k = block_shape
    rules = MODELS[model]
    shapes = set(rules["replicated"])
    for n, k in rules["split_n"]:
        if n % (tp * block_n):
            raise ShapeError(f"tp_sizes: tp={tp} splits N={n} into {n / tp:g}, not a multiple of block_n={block_n}")
        shapes.add((n // tp, k))
    for n, k in rules["split_k"]:
        if k % (tp * block_k):
            raise ShapeError(f"tp_sizes: tp={tp} splits K={k} into {k / tp:g}, not a multiple of block_k={block_k}")
        shapes.add((n, k // tp))
    return sorted(shapes)


def shapes_for(tp: int, model: str, explicit_shapes=None, block_shape=(128, 128)) -> list[tuple[int, int]]:
    """The shapes to tune for one TP size: an explicit list replaces the model's rules."""
    if explicit_shapes:
        return sorted({(int(n), int(k)) for n, k in explicit_shapes})
    return model_shapes(model, tp, block_shape)
