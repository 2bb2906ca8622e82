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
