"""The settings a tuned result depends on, and their fingerprint.

Every TSV of a sweep lives under results/<device>/tune/<fingerprint>/, beside a settings.json
holding exactly these settings. A change of any of them (operand type, kernel, out dtype, block
shape, search space, search settings, backend) is a new folder, so exactly the affected points
are tuned again and results of other settings are kept; a setting that cannot change a result
(compile workers, the persistent worker, its idle time, the engine whose file names the JSONs
get) is not in it, so changing it re-tunes nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from w8a8_tuner.plan.sweep import Plan
from w8a8_tuner.search.compile import Point
from w8a8_tuner.search.settings import SearchSettings
from w8a8_tuner.search.space import default_owner

# Bump when the kernel or the search changes what a tuned result means (old results are then re-tuned).
RESULT_VERSION = 2

# Settings added after results existed, with the value every result before them was tuned with: a
# setting at that value is left out of the settings, so those results keep their fingerprint.
TUNED_BEFORE = {"input_type": "fp8", "kernel": "builtin"}


def result_settings(plan: Plan, tuning: dict) -> dict:
    """Everything a point's result depends on, besides the point itself (N, K, M)."""
    settings = {
        "version": RESULT_VERSION,
        "device_name": plan.device_name,
        "backend": plan.backend,
        "block_shape": list(plan.block_shape),
        "out_dtype": plan.out_dtype,
        "search_space": plan.search_space,
        # only where there is one, so that vLLM's space alone keeps the fingerprint it always had
        **({"search_space_extra": [dict(r) for r in plan.space_extra]} if plan.space_extra else {}),
        "search": SearchSettings.from_tuning(tuning).fingerprinted(),
        **{key: value for key, value in (("input_type", plan.input_type), ("kernel", plan.kernel))
           if value != TUNED_BEFORE[key]},
    }
    return {**settings, "fingerprint": fingerprint(settings)}


def variant(settings: dict) -> dict[str, str]:
    """The operand type and kernel a sweep's settings name (a key left out: the value before it existed)."""
    return {key: settings.get(key, before) for key, before in TUNED_BEFORE.items()}


def settings_point(settings: dict, N: int, K: int, M: int) -> Point:
    """The point (what Triton specializes on) of (N, K, M) under a sweep's settings."""
    return Point(int(M), int(N), int(K), tuple(settings["block_shape"]), settings["out_dtype"], **variant(settings))


def verify_settings(result: dict, section: dict, compare_dir: str | None, engine: str = "vllm") -> dict:
    """What a verify table depends on: the tuned results' settings, verify's own, the compare folder, and whose
    default config it times (only where it is not vLLM's, so that earlier tables keep their folder)."""
    owner = default_owner(engine)
    settings = {"tuned": result["fingerprint"], "verify": dict(section),
                "compare_dir": str(Path(compare_dir).resolve()) if compare_dir else None,
                **({"default": owner} if owner != "vllm" else {})}
    return {**settings, "fingerprint": fingerprint(settings)}


def fingerprint(settings: dict) -> str:
    canonical = json.dumps({k: v for k, v in settings.items() if k != "fingerprint"}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def settings_text(settings: dict) -> str:
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"
