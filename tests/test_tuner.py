"""The per-point search on the interpreter: statuses, the numbers check, the winner."""

import pytest

from conftest import HAS_GPU
from kernels.search_space import Config
from kernels.tuner import NoValidConfig, Settings, tune_point

CONFIGS = [Config(bm, bn, 128, 1, 4, 2) for bm in (16, 32) for bn in (64, 128)]
SETTINGS = Settings(backend="cuda" if HAS_GPU else "interpret", top_k=2, screen_repeats=1, remeasure_repeats=1)


def test_every_config_checked_and_timed():
    rep = tune_point(256, 256, 20, CONFIGS, (128, 128), "bfloat16", SETTINGS, log=lambda s: None)
    assert {r.status for r in rep.results} == {"ok"}
    assert all(0 < r.rel_error < 8e-3 for r in rep.results)
    finalists = [r for r in rep.results if r.stage == "remeasure"]
    assert len(finalists) == 2
    assert rep.best == min(finalists, key=lambda r: r.time_us).config


def test_wrong_numbers_are_recorded_and_never_chosen():
    # Corrupt the two configs that would otherwise be fastest at large tiles, and one more.
    broken = set(CONFIGS[1:])
    rep = tune_point(256, 256, 20, CONFIGS, (128, 128), "bfloat16", SETTINGS,
                     inject_wrong=lambda c: c in broken, log=lambda s: None)
    status = {r.config: r.status for r in rep.results}
    assert all(status[c] == "wrong_result" for c in broken)
    assert rep.best == CONFIGS[0]


def test_all_wrong_fails_naming_the_point():
    with pytest.raises(NoValidConfig, match="N=256 K=256 M=20: .*wrong_result=4"):
        tune_point(256, 256, 20, CONFIGS, (128, 128), "bfloat16", SETTINGS,
                   inject_wrong=lambda c: True, log=lambda s: None)
