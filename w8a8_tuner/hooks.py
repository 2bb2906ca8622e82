"""Test hooks, read from the environment. Never set in production.

W8A8_TEST_CORRUPT: comma-separated names whose output is damaged after they run, or "all".
The tuner matches config labels (e.g. M16_N64_K128_G1_w4_s2), verify matches contender
names (tuned, default, compare, cublas, spot). Tests use it to show through the real
workflow that wrong numbers are caught and never win.
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
