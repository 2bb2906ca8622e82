"""JSON files as vLLM's loader finds and reads them; a file an engine could not use is refused by name."""

import json
import random

import pytest

from w8a8_tuner.results.files import WriteError, write_atomic
from w8a8_tuner.results.naming import (
    ConfigFileError,
    config_file_name,
    configs_to_json,
    load_config_file,
    normalize_device_name,
    pick_config,
)
from w8a8_tuner.search.space import Config


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
    assert normalize_device_name("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"


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


@pytest.mark.parametrize("text,needle", [
    ("garbage", "not a readable JSON file"),
    ("[1, 2]", "expected an object of batch sizes"),
    ("{}", "expected an object of batch sizes"),
    ('{"x": {}}', "key 'x' is not a batch size"),
    ('{"1": {"BLOCK_SIZE_M": 16}}', "entry '1' has keys"),
    ('{"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": "4",'
     ' "num_stages": 3}}', "not a positive integer"),
])
def test_unusable_file_is_refused_by_name(tmp_path, text, needle):
    path = tmp_path / "N=1,K=1.json"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=needle) as err:
        load_config_file(path)
    assert str(path) in str(err.value)


def test_write_atomic_leaves_no_temp_and_names_the_file_when_it_fails(tmp_path):
    write_atomic(tmp_path / "a.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    missing = tmp_path / "no" / "such" / "b.json"
    with pytest.raises(WriteError, match=f"cannot write {missing}"):
        write_atomic(missing, "{}")


def test_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "M1.tsv"
    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device"):
        write_atomic(target, "x" * 1000)
    assert list(tmp_path.iterdir()) == []
