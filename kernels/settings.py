"""How one point is searched (the config's `tuning:` section). Light: no torch import."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class Settings:
    backend: str = "cuda"              # "cuda" or "interpret"
    compile_workers: int = 1           # processes compiling configs
    screen_cutoff: float = 1.5         # screen configs whose first timing is within this factor of the best
    screen_min: int = 16               # ... but at least this many
    screen_budget_us: float = 100.0    # GPU time of one screening batch
    screen_repeats: int = 3
    top_k: int = 5                     # configs re-measured carefully; the winner comes from these
    remeasure_budget_us: float = 2000.0
    remeasure_repeats: int = 15
    seed: int | None = None

    @classmethod
    def from_config(cls, tuning: dict, backend: str, compile_workers: int) -> "Settings":
        known = {f.name for f in fields(cls)}
        return cls(backend=backend, compile_workers=compile_workers,
                   **{k: v for k, v in tuning.items() if k in known and k not in ("backend", "compile_workers")})
