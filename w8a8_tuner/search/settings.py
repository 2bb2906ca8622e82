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

    @classmethod
    def from_tuning(cls, tuning: dict) -> "SearchSettings":
        """From a validated `tuning` section (keys that do not change results are ignored)."""
        return cls(**{f.name: tuning[f.name] for f in fields(cls) if f.name in tuning})

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
