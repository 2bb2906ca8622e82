"""JSON files as vLLM's and SGLang's loaders find and read them; a file an engine could not use is refused by name."""

import json
import random

import pytest
from engine_lookup import engine_file_name, engine_pick

from w8a8_tuner.results.files import WriteError, write_atomic
from w8a8_tuner.results.naming import (
    ENGINES,
    ConfigFileError,
    compare_file_for,
    config_file_name,
    config_file_names,
    configs_to_json,
    engines_reading,
    load_config_file,
    normalize_device_name,
    pick_config,
)
from w8a8_tuner.search.space import Config

VARIANTS = [(e, t) for e in ENGINES for t in ("fp8", "int8")]


def test_file_names_are_each_engines_spelling():
    """vLLM spells the FP8 block shape [128,128], its INT8 one and both of SGLang's [128, 128]."""
    h100 = ("NVIDIA_H100_80GB_HBM3", (128, 128))
    assert (config_file_name(4608, 7168, *h100, input_type="fp8", engine="vllm")
            == "N=4608,K=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128,128].json")
    assert (config_file_name(4608, 7168, *h100, input_type="fp8", engine="sglang")
            == "N=4608,K=7168,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128, 128].json")
    assert (config_file_name(4608, 7168, "NVIDIA_A100-SXM4-80GB", (128, 128), input_type="int8", engine="vllm")
            == "N=4608,K=7168,device_name=NVIDIA_A100-SXM4-80GB,dtype=int8_w8a8,block_shape=[128, 128].json")
    for engine, input_type in VARIANTS:
        for block in [(128, 128), (64, 32)]:
            assert (config_file_name(576, 7168, "NVIDIA_H200", block, input_type=input_type, engine=engine)
                    == engine_file_name(engine, input_type, 576, 7168, "NVIDIA H200", block))
    assert normalize_device_name("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"


def test_both_engines_get_each_spelling_once():
    names = config_file_names(576, 7168, "NVIDIA_H200", (128, 128), input_type="fp8", engine="both")
    assert names == [config_file_name(576, 7168, "NVIDIA_H200", (128, 128), input_type="fp8", engine=e)
                     for e in ("vllm", "sglang")]
    assert engines_reading(names[1], 576, 7168, "NVIDIA_H200", (128, 128), input_type="fp8") == ["sglang"]
    # INT8: both engines spell it alike, so one file serves both
    (int8,) = config_file_names(576, 7168, "NVIDIA_A100", (128, 128), input_type="int8", engine="both")
    assert engines_reading(int8, 576, 7168, "NVIDIA_A100", (128, 128), input_type="int8") == ["vllm", "sglang"]
    assert config_file_names(576, 7168, "NVIDIA_H200", (128, 128), input_type="fp8", engine="sglang") == names[1:]


@pytest.mark.parametrize("engine,input_type", VARIANTS)
def test_json_written_is_loaded_like_each_engine(tmp_path, engine, input_type):
    rng = random.Random()
    batches = rng.sample([1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096], 9)
    best = {m: Config(rng.choice([16, 32, 64]), 128, 128, rng.choice([1, 16]), 4, rng.choice([2, 3])) for m in batches}
    name = config_file_name(576, 7168, "NVIDIA_H200", (128, 128), input_type=input_type, engine=engine)
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
        picked = engine_pick(tmp_path, engine, input_type, 576, 7168, "NVIDIA H200", (128, 128), M)
        assert picked == best[nearest].as_dict()


def test_compare_dir_is_searched_for_vllms_name_then_sglangs(tmp_path):
    h200 = (576, 7168, "NVIDIA_H200", (128, 128))
    names = config_file_names(*h200, input_type="fp8", engine="both")
    assert compare_file_for(tmp_path, *h200, input_type="fp8") == ""
    (tmp_path / names[1]).write_text("{}")
    assert compare_file_for(tmp_path, *h200, input_type="fp8") == str(tmp_path / names[1])
    (tmp_path / names[0]).write_text("{}")
    assert compare_file_for(tmp_path, *h200, input_type="fp8") == str(tmp_path / names[0])
    assert compare_file_for(tmp_path, *h200, input_type="int8") == ""
    assert compare_file_for(None, *h200, input_type="fp8") == ""


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
