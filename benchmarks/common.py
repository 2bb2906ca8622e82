"""What the benchmark scripts share: the workflow's defaults (from its schema) and point sets.

Run the scripts from the repository root with the package installed (pip install -e .) or on
PYTHONPATH; they use the library's own bench, workload and search, so a number here is taken
exactly as the workflow takes it.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def defaults(**overrides) -> dict:
    """The workflow's configuration with every default filled in by its schema (as a run sees it)."""
    from snakemake.utils import validate

    from w8a8_tuner.plan.config import apply_aliases

    config = apply_aliases(dict(overrides))
    validate(config, str(SCHEMA))
    return config


def tp8_shapes() -> list[tuple[int, int]]:
    from w8a8_tuner.plan.shapes import model_shapes

    return model_shapes("deepseek_v3", 8)


# Extra batch sizes for the shapes that are neither small-N nor small-K (two each, one small, one large).
LARGE_SHAPE_BATCHES = {(24576, 7168): (16, 512), (7168, 16384): (64, 1024), (7168, 18432): (8, 2048)}


def exhaustive_points() -> list[tuple[int, int, int]]:
    """The exhaustive check's points: every DeepSeek-V3 TP=8 shape; those with N <= 4608 or K <= 2304 at
    M = 1, 16, 64, 128, 256, the others at two batch sizes."""
    points = []
    for n, k in tp8_shapes():
        batches = (1, 16, 64, 128, 256) if n <= 4608 or k <= 2304 else LARGE_SHAPE_BATCHES[(n, k)]
        points += [(n, k, m) for m in batches]
    return points


def small_batch_points() -> list[tuple[int, int, int]]:
    """Every DeepSeek-V3 TP=8 shape at decode batch sizes M = 1, 4, 16 (where the knob regions apply)."""
    return [(n, k, m) for n, k in tp8_shapes() for m in (1, 4, 16)]


# Where the first timing was wrong by the most (host latency in the old estimate), and four more.
SMOKE_POINTS = [(576, 7168, 1), (3072, 7168, 64), (32768, 512, 128), (7168, 2304, 256), (7168, 2048, 256),
                (4608, 7168, 16)]
