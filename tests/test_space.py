"""The search space: vLLM's 1280 configs, the BLOCK_SIZE_K rule, exact pruning of GROUP_SIZE_M, labels."""

import random

import pytest
from conftest import validated

from kernels.blocks import cdiv
from w8a8_tuner.search.space import (
    PARAMS,
    Config,
    SpaceError,
    distinct_at,
    expand,
    prune_equivalent,
    sample,
    valid_configs,
)

SPACE = validated()["search_space"]  # the schema's default: vLLM's space


def test_default_space_is_vllms_1280():
    configs = expand(SPACE)
    assert len(configs) == 1280 == len(set(configs))
    assert len(valid_configs(SPACE, (128, 128))) == 1280


def test_block_k_not_dividing_block_k_is_an_error_naming_it():
    space = {**SPACE, "BLOCK_SIZE_K": [32, 64, 128]}
    assert len(valid_configs(space, (128, 128))) == 1920
    with pytest.raises(SpaceError, match=r"search_space.BLOCK_SIZE_K: \[128\] do not divide block_k=64"):
        valid_configs(space, (128, 64))


def test_expansion_is_cross_product_in_param_order():
    space = {p: [1] for p in PARAMS} | {"num_warps": [8, 4, 4]}
    assert expand(space) == [Config(1, 1, 1, 1, 4, 1), Config(1, 1, 1, 1, 8, 1)]


def test_config_dict_has_vllm_keys_in_order_and_label_round_trips():
    c = Config(16, 32, 64, 1, 4, 2)
    d = c.as_dict()
    assert list(d) == list(PARAMS) and all(type(v) is int for v in d.values())
    assert Config.from_label(c.label()) == c
    with pytest.raises(ValueError, match="not a config label"):
        Config.from_label("M16_N32_K64_w4_s2")


@pytest.mark.parametrize("M", [1, 2, 16, 33, 64, 100, 256, 1000, 4096])
def test_pruning_keeps_one_config_per_program_order(M):
    """Two configs share a representative exactly when they differ only in a GROUP_SIZE_M that puts all
    row tiles in one group (every GROUP_SIZE_M >= cdiv(M, BLOCK_SIZE_M), or any with one row tile)."""
    configs = valid_configs(SPACE, (128, 128))
    rep = prune_equivalent(list(configs), M)
    for c in random.Random(M).sample(list(configs), 200):
        tiles = cdiv(M, c.BLOCK_SIZE_M)
        r = rep[c]
        assert (r.BLOCK_SIZE_M, r.BLOCK_SIZE_N, r.BLOCK_SIZE_K, r.num_warps, r.num_stages) == \
            (c.BLOCK_SIZE_M, c.BLOCK_SIZE_N, c.BLOCK_SIZE_K, c.num_warps, c.num_stages)
        if tiles == 1 or c.GROUP_SIZE_M >= tiles:
            assert r.GROUP_SIZE_M == min(g for g in SPACE["GROUP_SIZE_M"] if g >= tiles or tiles == 1)
        else:
            assert r == c
    assert len(distinct_at(configs, M)) == len(set(rep.values()))


def test_sample_is_reproducible_and_bounded():
    configs = list(valid_configs(SPACE, (128, 128)))
    a, b = sample(configs, 8, seed=3), sample(configs, 8, seed=3)
    assert a == b and len(set(a)) == 8 and set(a) <= set(configs)
    assert sample(configs, 8, seed=4) != a
    assert sample(configs[:3], 8, seed=1) == sorted(configs[:3])


# --- search_space_extra: configs beyond vLLM's space where they measured to pay ---------------------

def test_default_extra_region_adds_small_tile_configs_at_small_batches_only():
    from w8a8_tuner.search.space import configs_at

    cfg = validated()
    extra = cfg["search_space_extra"]
    vllm = set(valid_configs(SPACE, (128, 128)))
    for M in (1, 16, 64):
        at = set(configs_at(SPACE, extra, (128, 128), M))
        added = at - vllm
        assert vllm <= at and added
        assert all(c.BLOCK_SIZE_M == 16 and c.GROUP_SIZE_M == 1 and c.BLOCK_SIZE_K == 128 for c in added)
        assert Config(16, 16, 128, 1, 2, 5) in added and Config(16, 32, 128, 1, 4, 8) in added
    assert set(configs_at(SPACE, extra, (128, 128), 65)) == vllm
    assert set(configs_at(SPACE, extra, (128, 128))) == set(configs_at(SPACE, extra, (128, 128), 1))


def test_extra_block_k_that_does_not_divide_block_k_is_skipped():
    from w8a8_tuner.search.space import configs_at

    region = {"min_M": 1, "max_M": 8, "BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [16], "BLOCK_SIZE_K": [32, 128],
              "GROUP_SIZE_M": [1], "num_warps": [2], "num_stages": [3]}
    space = {**SPACE, "BLOCK_SIZE_K": [64]}
    at = configs_at(space, [region], (128, 64), 4)
    assert Config(16, 16, 32, 1, 2, 3) in at and not any(c.BLOCK_SIZE_K == 128 for c in at)


def test_search_space_vllm_is_the_engines_space_with_the_fingerprint_it_always_had():
    from w8a8_tuner.plan.settings import result_settings
    from w8a8_tuner.plan.sweep import make_plan

    def plan_of(**values):
        cfg = validated(device_name="NVIDIA_H200", **values)
        return make_plan(cfg), cfg

    vllm, cfg = plan_of(search_space="vllm")
    assert vllm.space_extra == () and len(vllm.configs_at(1)) == 1280
    settings = result_settings(vllm, cfg["tuning"])
    assert "search_space_extra" not in settings  # so results tuned before the key existed stay valid
    explicit, cfg2 = plan_of(search_space_extra=[])
    assert result_settings(explicit, cfg2["tuning"])["fingerprint"] == settings["fingerprint"]
    default, cfg3 = plan_of()
    assert result_settings(default, cfg3["tuning"])["fingerprint"] != settings["fingerprint"]
    assert len(default.configs_at(16)) > 1280 and len(default.configs_at(128)) == 1280


def test_search_space_vllm_with_extra_regions_is_refused():
    from w8a8_tuner.plan.config import ConfigFileProblem

    with pytest.raises(ConfigFileProblem, match="search_space: vllm excludes search_space_extra"):
        validated(search_space="vllm", search_space_extra=[{"min_M": 1}])


def test_an_extra_region_with_min_above_max_is_named():
    from w8a8_tuner.plan.sweep import ConfigError, make_plan

    region = {"min_M": 65, "max_M": 64, "BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [16], "BLOCK_SIZE_K": [128],
              "GROUP_SIZE_M": [1], "num_warps": [2], "num_stages": [3]}
    with pytest.raises(ConfigError, match=r"search_space_extra\[0\]: min_M=65 > max_M=64"):
        make_plan(validated(device_name="NVIDIA_H200", search_space_extra=[region]))
