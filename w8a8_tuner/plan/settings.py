"""The settings a tuned result depends on, and their fingerprint.

Every TSV of a sweep lives under results/<device>/tune/<fingerprint>/, beside a settings.json
holding exactly these settings. A change of any of them (out dtype, block shape, search space,
search settings, backend) is a new folder, so exactly the affected points are tuned again and
results of other settings are kept; a setting that cannot change a result (compile workers,
the persistent worker, its idle time) is not in it, so changing it re-tunes nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from w8a8_tuner.plan.sweep import Plan
from w8a8_tuner.search.settings import SearchSettings

# Bump when the kernel or the search changes what a tuned result means (old results are then re-tuned).
RESULT_VERSION = 2


def result_settings(plan: Plan, tuning: dict) -> dict:
    """Everything a point's result depends on, besides the point itself (N, K, M)."""
    settings = {
        "version": RESULT_VERSION,
        "device_name": plan.device_name,
        "backend": plan.backend,
        "block_shape": list(plan.block_shape),
        "out_dtype": plan.out_dtype,
        "search_space": plan.search_space,
        "search": SearchSettings.from_tuning(tuning).as_dict(),
    }
    return {**settings, "fingerprint": fingerprint(settings)}


def verify_settings(result: dict, section: dict, compare_dir: str | None) -> dict:
    """What a verify table depends on: the tuned results' settings, verify's own, and the compare folder."""
    settings = {"tuned": result["fingerprint"], "verify": dict(section),
                "compare_dir": str(Path(compare_dir).resolve()) if compare_dir else None}
    return {**settings, "fingerprint": fingerprint(settings)}


def fingerprint(settings: dict) -> str:
    canonical = json.dumps({k: v for k, v in settings.items() if k != "fingerprint"}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def settings_text(settings: dict) -> str:
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"
