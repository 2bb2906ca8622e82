from kernels.search_space import DEFAULT_SPACE, PARAMS, Config, expand, invalid_reason, valid_configs


def test_default_space_is_vllms_1280():
    configs = expand(DEFAULT_SPACE)
    assert len(configs) == 1280 == len(set(configs))
    assert len(valid_configs(DEFAULT_SPACE, (128, 128))) == 1280


def test_block_k_filter():
    space = {**DEFAULT_SPACE, "BLOCK_SIZE_K": [32, 64, 128]}
    assert len(expand(space)) == 1920
    # block_k = 64: BLOCK_SIZE_K 128 straddles two scale groups
    kept = valid_configs(space, (128, 64))
    assert {c.BLOCK_SIZE_K for c in kept} == {32, 64}
    assert len(kept) == 1280
    assert "does not divide" in invalid_reason(Config(16, 32, 128, 1, 4, 2), (128, 64))


def test_expansion_is_cross_product_in_param_order():
    space = {p: [1] for p in PARAMS} | {"num_warps": [8, 4, 4]}
    assert expand(space) == [Config(1, 1, 1, 1, 4, 1), Config(1, 1, 1, 1, 8, 1)]


def test_config_dict_has_vllm_keys_in_order():
    d = Config(16, 32, 64, 1, 4, 2).as_dict()
    assert list(d) == list(PARAMS) and all(type(v) is int for v in d.values())
