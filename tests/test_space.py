"""The search space: vLLM's 1280 configs, the BLOCK_SIZE_K rule per block shape, SGLang's Hopper knobs, exact
pruning of GROUP_SIZE_M and the prune rules, labels."""

import random

import pytest
from conftest import validated

from kernels.blocks import cdiv
from w8a8_tuner.search.space import (
    PARAMS,
    Config,
    SpaceError,
    block_k_values,
    expand,
    prune_equivalent,
    pruned_at,
    resolve,
    sample,
    timed_at,
    valid_configs,
)

SPACE = resolve(validated()["search_space"], (128, 128), "search_space")  # the schema's default: vLLM's space


def test_default_space_is_vllms_1280():
    configs = expand(SPACE)
    assert len(configs) == 1280 == len(set(configs))
    assert SPACE["BLOCK_SIZE_K"] == [64, 128]
    assert len(valid_configs(validated()["search_space"], (128, 128))) == 1280


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
    assert Config.from_label(c.label()) == c and c.label() == "M16_N32_K64_G1_w4_s2"
    for bad in ("M16_N32_K64_w4_s2", "M16_N32_K64_G1_w4_s2_xx", "M16_N32_K64_G1_w4_s2_sk", "M16_N32_K64_G1_w4_sX"):
        with pytest.raises(ValueError, match="not a config label"):
            Config.from_label(bad)


@pytest.mark.parametrize("swap,split", [(True, 1), (False, 4), (True, 16)])
def test_a_config_with_knobs_carries_them_in_its_entry_and_label(swap, split):
    c = Config(16, 64, 128, 1, 4, 3, SWAP_AB=swap, SPLIT_K=split)
    d = c.as_dict()
    assert list(d) == [*PARAMS, "SWAP_AB", "SPLIT_K"] and d["SWAP_AB"] is swap and d["SPLIT_K"] == split
    assert c.knobs and Config.from_label(c.label()) == c
    assert c.label() == "M16_N64_K128_G1_w4_s3" + ("_ab" if swap else "") + (f"_sk{split}" if split > 1 else "")
    plain = Config(16, 64, 128, 1, 4, 3, SWAP_AB=False, SPLIT_K=1)
    assert not plain.knobs and "SWAP_AB" not in plain.as_dict()


@pytest.mark.parametrize("block_k,auto,full", [(128, [64, 128], [128]), (32, [32], [32]), (64, [32, 64], [64]),
                                               (256, [128, 256], [256]), (96, [32], [32]), (16, [16], [16])])
def test_block_k_follows_the_block_shape(block_k, auto, full):
    """BLOCK_SIZE_K never above block_k and always dividing it (a K step within one scale group)."""
    assert block_k_values(block_k, "auto") == auto and block_k_values(block_k, "block_k") == full
    configs = valid_configs({**SPACE, "BLOCK_SIZE_K": "auto"}, (block_k, block_k))
    assert {c.BLOCK_SIZE_K for c in configs} == set(auto)


@pytest.mark.parametrize("block_shape", [(32, 32), (64, 64), (128, 128), (128, 64)])
def test_default_plan_fits_any_block_shape(block_shape):
    """The default space (and its regions) adapts to the block shape instead of stopping the run."""
    from w8a8_tuner.plan.sweep import make_plan

    for engine in ("vllm", "sglang"):
        plan = make_plan(validated(device_name="NVIDIA_H200", block_shape=list(block_shape), engine=engine,
                                   shapes=[[512, 1024]]))
        for M in (1, 16, 64, 256):
            configs = plan.configs_at(M)
            assert configs and all(block_shape[1] % c.BLOCK_SIZE_K == 0 for c in configs)
            assert any(c.knobs for c in configs) == (engine == "sglang" and M <= 64)


def test_a_block_k_the_user_sets_that_does_not_fit_is_refused_by_name():
    from w8a8_tuner.plan.sweep import ConfigError, make_plan

    with pytest.raises(ConfigError, match=r"search_space.BLOCK_SIZE_K: \[64, 128\] do not divide block_k=32"):
        make_plan(validated(device_name="NVIDIA_H200", block_shape=[32, 32],
                            search_space={"BLOCK_SIZE_K": [64, 128]}))
    region = {"min_M": 1, "max_M": 8, "BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [16], "BLOCK_SIZE_K": [128],
              "GROUP_SIZE_M": [1], "num_warps": [2], "num_stages": [3]}
    with pytest.raises(ConfigError, match=r"search_space_extra\[0\].BLOCK_SIZE_K: \[128\] do not divide block_k=32"):
        make_plan(validated(device_name="NVIDIA_H200", block_shape=[32, 32], search_space_extra=[region]))


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
    assert len(timed_at(configs, M, 7168)) == len(set(rep.values()))


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
    extra = [r for r in cfg["search_space_extra"] if "SPLIT_K" not in r]  # the plain region
    vllm = set(valid_configs(SPACE, (128, 128)))
    for M in (1, 16, 64):
        at = set(configs_at(SPACE, extra, (128, 128), M))
        added = at - vllm
        assert vllm <= at and added
        assert all(c.BLOCK_SIZE_M == 16 and c.GROUP_SIZE_M == 1 and c.BLOCK_SIZE_K == 128 for c in added)
        assert Config(16, 16, 128, 1, 2, 5) in added and Config(16, 32, 128, 1, 4, 8) in added
    assert set(configs_at(SPACE, extra, (128, 128), 65)) == vllm
    assert set(configs_at(SPACE, extra, (128, 128))) == set(configs_at(SPACE, extra, (128, 128), 1))


def test_a_knob_region_adds_only_configs_with_a_knob_where_sglang_can_run_them():
    from w8a8_tuner.plan.settings import result_settings
    from w8a8_tuner.plan.sweep import make_plan

    def plan(**values):
        cfg = validated(device_name="NVIDIA_H200", **values)
        return make_plan(cfg), result_settings(make_plan(cfg), cfg["tuning"])

    sglang, s_settings = plan(engine="sglang")
    vllm, v_settings = plan(engine="vllm")
    both, b_settings = plan(engine="both")
    assert sglang.knobs and both.knobs and not vllm.knobs
    assert s_settings["fingerprint"] == b_settings["fingerprint"] != v_settings["fingerprint"]
    for M in (1, 4, 16, 48):
        added = set(sglang.configs_at(M)) - set(vllm.configs_at(M))
        assert added and all(c.knobs for c in added)
        assert {c.SPLIT_K for c in added} >= {2, 4, 8} and {c.SWAP_AB for c in added} == {False, True}
        assert not any(c.knobs for c in vllm.configs_at(M))
    assert set(sglang.configs_at(128)) == set(vllm.configs_at(128))
    # knobs run only where SGLang runs them: its FP8 kernel, on sm90
    for values in ({"input_type": "int8"}, {"device_name": "NVIDIA_H100_80GB_HBM3"}):
        assert make_plan(validated(**{"device_name": "NVIDIA_H200", "engine": "sglang", **values})).knobs \
            == ("device_name" in values)
    assert not make_plan(validated(device_name="NVIDIA_A100-SXM4-80GB", engine="sglang")).knobs
    assert not make_plan(validated(device_name="NVIDIA_L40S", engine="sglang")).knobs


def test_prune_rules_name_why_a_config_is_not_timed():
    """A split of K that leaves parts without a K step, and tiles with >= the limit of accumulators per
    thread, are not timed; the TSV note says why. Equivalent program orders as before."""
    empty = Config(16, 64, 128, 1, 4, 3, SPLIT_K=16)     # K=7168: 56 steps of 128, 4 per part: 14 parts used
    fine = Config(16, 64, 64, 1, 4, 3, SPLIT_K=16)       # 112 steps of 64: 7 per part, every part used
    big = Config(128, 256, 128, 1, 4, 3)                  # 256 accumulators per thread
    ok = Config(128, 256, 128, 1, 8, 3)                   # 128
    reasons = pruned_at([empty, fine, big, ok], 1, 7168, max_accumulators=256)
    assert set(reasons) == {empty, big}
    assert reasons[empty] == "SPLIT_K=16 leaves 2 parts without a K step (K=7168: 56 steps of 128)"
    assert reasons[big].startswith("256 fp32 accumulators per thread >= 256")
    assert pruned_at([empty, fine, big, ok], 1, 7168) == {empty: reasons[empty]}  # no limit: only the split
    assert timed_at([empty, fine, big, ok], 1, 7168, 256) == [fine, ok]


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
    assert "prune_accumulators" not in settings["search"]  # (nor the prune rule: vLLM's space, all of it)
    explicit, cfg2 = plan_of(search_space_extra=[], tuning={"prune_accumulators": 0})
    assert result_settings(explicit, cfg2["tuning"])["fingerprint"] == settings["fingerprint"]
    assert settings["fingerprint"] == "628d5c8c5d89"  # pinned: what results tuned with vLLM's space are under
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
