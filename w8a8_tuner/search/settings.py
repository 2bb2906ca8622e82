"""How a point is searched: the `tuning` settings that change which config wins. Light: no torch import."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SearchSettings:
    """How a point is searched: the `tuning` keys that change which config wins (defaults: the schema)."""

    estimate_rounds: int
    estimate_drop: float
    screen_cutoff: float
    screen_slack_us: float
    screen_min: int
    screen_budget_us: float
    screen_repeats: int
    remeasure_cutoff: float
    top_k: int
    remeasure_budget_us: float
    remeasure_repeats: int
    seed: int | None = None
    prune_accumulators: int = 0  # configs with this many fp32 accumulators per thread or more are not run (0: off)

    @classmethod
    def from_tuning(cls, tuning: dict) -> "SearchSettings":
        """From a validated `tuning` section (keys that do not change results are ignored)."""
        return cls(**{f.name: tuning[f.name] for f in fields(cls) if f.name in tuning})

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def fingerprinted(self) -> dict:
        """as_dict without the settings left at the value every result before them was tuned with, so that
        those results keep their fingerprint."""
        return {k: v for k, v in self.as_dict().items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}


# Search settings added after results existed, with the value every result before them was tuned with.
ADDED_LATER = {"prune_accumulators": 0}
