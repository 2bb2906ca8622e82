"""Test hooks, read from the environment. Never set in production.

W8A8_TEST_CORRUPT: comma-separated names whose output is damaged after they run, or "all".
The tuner matches config labels (e.g. M16_N64_K128_G1_w4_s2), verify matches contender
names (tuned, default, compare, cublas, spot). Tests use it to show through the real
workflow that wrong numbers are caught and never win.

W8A8_STANDIN_COSTS: a costs file; w8a8_tuner.search.backend.prepare then gives the stand-in backend, whose
compiles and GPU work sleep their measured time (w8a8_tuner.standin), so that benchmarks/projection.py can
replay a sweep through the real Snakemake on fake GPUs. Nothing else branches on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

CORRUPT_ENV = "W8A8_TEST_CORRUPT"


def corrupt_predicate(value: str | None = None) -> Callable[[str], bool] | None:
    """name -> True if its output is to be damaged; None when the hook is off."""
    value = os.environ.get(CORRUPT_ENV, "") if value is None else value
    names = {v.strip() for v in value.split(",") if v.strip()}
    if not names:
        return None
    return lambda name: "all" in names or name in names


# --- the projection's stand-in (benchmarks/projection.py) -------------------------------------------
# W8A8_STANDIN_COSTS: a costs file (measured per-config compile seconds, per-point GPU seconds). When
# set, compiling a config sleeps its measured time and a point sleeps its measured GPU time instead of
# using a GPU (w8a8_tuner.standin), while slots, workers, compile pools, locks and Snakemake run for
# real: the projection replays a sweep's costs on fake GPUs. Never set in production.
STANDIN_ENV = "W8A8_STANDIN_COSTS"


def standin_on() -> bool:
    """Whether the projection's stand-in replaces the GPU and the compiler (w8a8_tuner.standin)."""
    return bool(os.environ.get(STANDIN_ENV, ""))
