"""JSON files as vLLM's loader finds and reads them."""

import json
import random

from kernels.naming import (configs_to_json, config_file_name, load_config_file,
                            pick_config, write_atomic)
from kernels.search_space import Config


def vllm_style_lookup(folder, N, K, device_name, block_shape, M):
    """What vLLM's get_w8a8_block_fp8_configs + w8a8_triton_block_scaled_mm do, written from its docs:
    build the file name, json.load, int keys, then the key nearest to M."""
    name = f"N={N},K={K},device_name={device_name},dtype=fp8_w8a8,block_shape=[{block_shape[0]},{block_shape[1]}].json"
    with open(folder / name) as f:
        configs = {int(k): v for k, v in json.load(f).items()}
    return configs[min(configs.keys(), key=lambda x: abs(x - M))]


def test_file_name_matches_vllm():
    assert (config_file_name(4608, 7168, "NVIDIA_H100_80GB_HBM3", (128, 128))
            == "N=4608,K=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json")


def test_json_written_is_loaded_like_vllm(tmp_path):
    rng = random.Random()
    batches = rng.sample([1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096], 9)
    best = {m: Config(rng.choice([16, 32, 64]), 128, 128, rng.choice([1, 16]), 4, rng.choice([2, 3])) for m in batches}
    name = config_file_name(576, 7168, "NVIDIA_H200", (128, 128))
    write_atomic(tmp_path / name, configs_to_json(best))
    text = (tmp_path / name).read_text()
    keys = list(json.loads(text))
    assert keys == [str(m) for m in sorted(batches)], "keys are strings sorted numerically"
    assert all(type(v) is int for entry in json.loads(text).values() for v in entry.values())
    loaded = load_config_file(tmp_path / name)
    assert loaded == best
    for M in [1, 3, 5, 17, 100, 700, 5000, rng.randint(1, 8192)]:
        nearest = min(batches, key=lambda b: (abs(b - M), b))
        assert pick_config(loaded, M) == best[nearest]
        assert vllm_style_lookup(tmp_path, 576, 7168, "NVIDIA_H200", (128, 128), M) == best[nearest].as_dict()


def test_write_atomic_leaves_no_temp(tmp_path):
    write_atomic(tmp_path / "a.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
