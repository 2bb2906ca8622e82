"""Configuration: every bad value stops the run before any job with one line naming the key and the value,
checked in-process against the schema and the plan (test_messages.py runs the real snakemake on a few)."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import SCHEMA, TEST_CONFIG
from snakemake.exceptions import WorkflowError

from w8a8_tuner.plan.checks import NoFileLocks, check_file_locks, check_slurm_profile
from w8a8_tuner.plan.config import (
    ConfigFileProblem,
    check_whole_numbers,
    load_strict,
    schema_error_message,
    yaml_values,
)
from w8a8_tuner.plan.sweep import ConfigError, make_plan
from w8a8_tuner.results.naming import config_file_name


def message_for(change) -> str:
    """What the workflow says for the CI config with `change` applied ('' if it is accepted): the schema, its
    integers held to whole numbers, then the plan (as workflow/rules/common.smk does)."""
    from snakemake.utils import validate

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    change(cfg)
    try:
        validate(cfg, str(SCHEMA))
        check_whole_numbers(cfg, SCHEMA)
    except WorkflowError as e:
        return schema_error_message(e)
    except ConfigFileProblem as e:
        return str(e)
    try:
        make_plan(cfg)
    except ConfigError as e:
        return str(e)
    return ""


def extra_region(**values) -> dict:
    return {"min_M": 1, "max_M": 64, "BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [16], "BLOCK_SIZE_K": [128],
            "GROUP_SIZE_M": [1], "num_warps": [2], "num_stages": [2], **values}


# (case, change, what the message must show: the key and the offending value)
CASES = [
    ("unknown key", lambda c: c.update(batchsizes=[1]), ["top level", "'batchsizes' was unexpected", "known keys:"]),
    ("wrong type", lambda c: c.update(batch_sizes="16"), ["batch_sizes: '16' is not of type 'array'"]),
    ("wrong item type", lambda c: c.update(batch_sizes=[1.5]), ["batch_sizes[0]: 1.5 is not of type 'integer'"]),
    ("non-positive batch", lambda c: c.update(batch_sizes=[0, 16]), ["batch_sizes[0]: 0 is less than the minimum"]),
    ("negative batch", lambda c: c.update(batch_sizes=[16, -4]), ["batch_sizes[1]: -4 is less than the minimum"]),
    ("duplicate batch", lambda c: c.update(batch_sizes=[16, 16]), ["batch_sizes: [16, 16] has non-unique"]),
    ("duplicate tp size", lambda c: c.update(tp_sizes=[8, 8]), ["tp_sizes: [8, 8] has non-unique"]),
    ("bad block split", lambda c: c.update(shapes=[], tp_sizes=[32]),  # gate_up's 18432 / 32, as vLLM checks it
     ["tp_sizes: tp=32 splits N=18432 into 576, not a multiple of block_n=128 (mlp.gate_up_proj"]),
    ("block_shape not dividing a split", lambda c: c.update(shapes=[], tp_sizes=[16], block_shape=[128, 256]),
     ["tp_sizes: tp=16 splits K=18432 into 1152, not a multiple of block_k=256"]),
    ("block_shape zero", lambda c: c.update(block_shape=[0, 128]), ["block_shape[0]: 0 is less than the minimum"]),
    ("BLOCK_SIZE_K not dividing block_k", lambda c: c["search_space"].update(BLOCK_SIZE_K=[128, 256]),
     ["search_space.BLOCK_SIZE_K: [256] do not divide block_k=128"]),
    ("BLOCK_SIZE_K not a power of two", lambda c: c["search_space"].update(BLOCK_SIZE_K=[96]),
     ["search_space.BLOCK_SIZE_K[0]: 96 is not one of"]),
    ("empty search space list", lambda c: c["search_space"].update(num_warps=[]),
     ["search_space.num_warps: [] should be non-empty"]),
    ("unknown search space parameter", lambda c: c["search_space"].update(waves=[1]),
     ["search_space: Additional properties", "'waves' was unexpected"]),
    ("unknown out_dtype", lambda c: c.update(out_dtype="int8"), ["out_dtype: 'int8' is not one of"]),
    ("unknown input_type", lambda c: c.update(input_type="fp4"), ["input_type: 'fp4' is not one of ['fp8', 'int8']"]),
    ("unknown engine", lambda c: c.update(engine="trtllm"), ["engine: 'trtllm' is not one of ['vllm', 'sglang'"]),
    ("unknown kernel", lambda c: c.update(kernel="cutlass"), ["kernel: 'cutlass' is not one of"]),
    ("engine kernel not installed", lambda c: c.update(kernel="sglang"),
     ["kernel: 'sglang' with input_type: 'fp8': cannot import sglang.kernels.ops.quantization.fp8_kernel."
      "_w8a8_block_fp8_matmul or sglang.srt.layers.quantization.fp8_kernel."
      "_w8a8_block_fp8_matmul", "or set kernel: builtin"]),
    ("zero dimension", lambda c: c.update(shapes=[[0, 256]]), ["shapes[0][0]: 0 is less than the minimum"]),
    ("negative dimension", lambda c: c.update(shapes=[[256, -1]]), ["shapes[0][1]: -1 is less than the minimum"]),
    ("unknown backend", lambda c: c.update(backend="rocm"), ["backend: 'rocm' is not one of"]),
    ("bad tuning value", lambda c: c["tuning"].update(top_k=0), ["tuning.top_k: 0 is less than the minimum"]),
    ("unknown tuning key", lambda c: c["tuning"].update(screen_cutof=1.2),
     ["tuning: ", "'screen_cutof' was unexpected"]),
    # A device name is a folder and part of a file name: '..' would write into the checkout's root.
    ("device name ..", lambda c: c.update(device_name=".."), ["device_name: '..' is not a device name"]),
    ("device name with a slash", lambda c: c.update(device_name="a/b"), ["device_name: 'a/b' is not a device name"]),
    ("device name with a comma", lambda c: c.update(device_name="H100,x"), ["device_name: 'H100,x' is not"]),
    ("hidden device name", lambda c: c.update(device_name=".cache"), ["device_name: '.cache' is not a device name"]),
    # Numbers written as floats where whole numbers are meant: JSON schema's `integer` takes 8.0; the plan did
    # too, and the run met it later: a batch size 16.0 as a traceback, a top_k 2.0 as another fingerprint than 2.
    ("float tp size", lambda c: c.update(tp_sizes=[8.0]), ["tp_sizes[0]: 8.0 is not a whole number (write 8)"]),
    ("float batch size", lambda c: c.update(batch_sizes=[1, 16.0]), ["batch_sizes[1]: 16.0 is not a whole number"]),
    ("float shape size", lambda c: c.update(shapes=[[256.0, 512]]), ["shapes[0][0]: 256.0 is not a whole number"]),
    ("float block_shape", lambda c: c.update(block_shape=[128, 128.0]), ["block_shape[1]: 128.0 is not a whole"]),
    ("float search space value", lambda c: c["search_space"].update(BLOCK_SIZE_M=[16.0, 32]),
     ["search_space.BLOCK_SIZE_M[0]: 16.0 is not a whole number"]),
    ("float tuning count", lambda c: c["tuning"].update(top_k=2.0), ["tuning.top_k: 2.0 is not a whole number"]),
    ("float compile_workers", lambda c: c["tuning"].update(compile_workers=2.0),
     ["tuning.compile_workers: 2.0 is not a whole number"]),
    ("float seed", lambda c: c["tuning"].update(seed=1.0), ["tuning.seed: 1.0 is not a whole number"]),
    ("float region bound", lambda c: c.update(search_space_extra=[extra_region(max_M=64.0)]),
     ["search_space_extra[0].max_M: 64.0 is not a whole number"]),
    ("float verify rounds", lambda c: c["verify_settings"].update(rounds=2.0),
     ["verify_settings.rounds: 2.0 is not a whole number"]),
    # Names past the file system's limit on one file name (255 bytes).
    ("device name too long for a file name", lambda c: c.update(device_name="GPU" * 70, backend="cuda"),
     ["device_name: 'GPUGPU", "makes the file name of N=256 K=512 ", "over the 255-byte limit"]),
    ("shape too long for a file name", lambda c: c.update(shapes=[[256 * 10 ** 200, 512]]),
     ["shapes: N=256000000", "file name", "over the 255-byte limit"]),
    # The interpreter's timings are CPU wall times: never under a GPU's name, where an engine would load them.
    ("interpreter under a GPU's name", lambda c: c.update(device_name="NVIDIA_H200"),
     ["backend: 'interpret' with device_name: 'NVIDIA_H200'", "leave device_name at auto"]),
    ("unknown install choice", lambda c: c.update(install={"existing": "overwrite"}),
     ["install.existing: 'overwrite' is not one of ['refuse', 'backup', 'merge']"]),
    ("engine log that is no path", lambda c: c.update(shapes=[], shapes_from_log=7),
     ["shapes_from_log: 7 is not of type 'string', 'null'"]),
]


@pytest.mark.parametrize("name,change,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_value_is_named(name, change, needles):
    message = message_for(change)
    assert message, f"{name} was accepted"
    for needle in needles:
        assert needle in message, message
    assert "\n" not in message and len(message) < 400, message  # one short line, not the schema dumped


def test_the_interpreter_takes_its_own_device_name():
    assert message_for(lambda c: c.update(device_name="cpu_interpreter")) == ""
    assert message_for(lambda c: c.update(device_name="auto")) == ""


MODELS = Path(__file__).parent / "data" / "models"


@pytest.mark.parametrize("model,changes,needles", [
    ("qwen3-32b-fp8.json", {"num_attention_heads": 0}, ["num_attention_heads=0 is not a size (a whole number >= 1)"]),
    ("qwen3-32b-fp8.json", {"num_key_value_heads": 0}, ["num_key_value_heads=0 is not a size"]),
    ("qwen3-32b-fp8.json", {"hidden_size": 0}, ["hidden_size=0 is not a size"]),
    ("qwen3-32b-fp8.json", {"intermediate_size": 0}, ["intermediate_size=0 is not a size"]),
    ("qwen3-32b-fp8.json", {"head_dim": 0}, ["head_dim=0 is not a size"]),
    ("qwen3-32b-fp8.json", {"hidden_size": 32, "head_dim": None},
     ["no head_dim, and hidden_size=32 // num_attention_heads=64 is 0"]),
    ("qwen3-32b-fp8.json", {"intermediate_size": 64},  # smaller than the block: no block-FP8 weight
     ["mlp.gate_up_proj has an output part of N=64, not a multiple of block_n=128"]),
    ("qwen3-32b-fp8.json", {"hidden_size": 5120.0}, ["hidden_size=5120.0 is not a whole number >= 0"]),
    ("deepseek-v3.json", {"num_attention_heads": 0}, ["num_attention_heads=0 is not a size"]),
    ("deepseek-v3.json", {"kv_lora_rank": 0}, ["kv_lora_rank=0 is not a size"]),
    ("deepseek-v3.json", {"v_head_dim": 0}, ["v_head_dim=0 is not a size"]),
    ("deepseek-v3.json", {"num_hidden_layers": 0}, ["num_hidden_layers=0 is not a size"]),
    ("deepseek-v3.json", {"q_lora_rank": 0}, ["q_lora_rank=0 is not a size (a whole number >= 1; null: no q LoRA"]),
    ("deepseek-v3.json", {"qk_nope_head_dim": 0, "qk_rope_head_dim": 0},
     ["self_attn.q_b_proj of model_config", "has no output (N=0)"]),
], ids=lambda v: str(v)[:40])
def test_model_sizes_that_leave_a_layer_empty_are_named(tmp_path, model, changes, needles):
    """A config.json whose sizes make a shape empty or a layer without heads: before, shapes like (4096, 0) were
    planned and tuned (or head_dim divided by zero)."""
    config = json.loads((MODELS / model).read_text())
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    message = message_for(lambda c: c.update(shapes=[], model_config=str(path), tp_sizes=[1], block_shape=[128, 128]))
    assert message, "accepted"
    for needle in needles:
        assert needle in message, message
    assert str(path) in message and "\n" not in message


def test_device_name_with_spaces_is_the_engines_name():
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg.update(device_name="NVIDIA H100 80GB HBM3", backend="cuda")
    from snakemake.utils import validate

    validate(cfg, str(SCHEMA))
    assert make_plan(cfg).device_name == "NVIDIA_H100_80GB_HBM3"


def test_defaults_come_from_the_schema():
    from snakemake.utils import validate

    cfg = {}
    validate(cfg, str(SCHEMA))
    assert cfg["tp_sizes"] == [8] and len(cfg["batch_sizes"]) == 18 and cfg["tuning"]["top_k"] >= 1
    assert cfg["search_space"]["BLOCK_SIZE_N"] == [32, 64, 128, 256] and cfg["verify_settings"]["rounds"] >= 1
    plan = make_plan({**cfg, "device_name": "X", "backend": "cuda"})
    # DeepSeek-V3 at TP=8: 8 shapes (tests/test_shapes.py), 8 x 18 points
    assert len(plan.shapes) == 8 and len(plan.configs) == 1280 and len(plan.points()) == 8 * 18


@pytest.mark.parametrize("text", ["{'1': 2", "garbage", '{"1": {"BLOCK_SIZE_M": 16}}'])
def test_malformed_compare_file_is_named_at_start(tmp_path, text):
    folder = tmp_path / "configs"
    folder.mkdir()
    bad = folder / config_file_name(256, 512, "cpu_interpreter", (128, 128), input_type="fp8", engine="vllm")
    bad.write_text(text)
    message = message_for(lambda c: c.update(compare_dir=str(folder)))
    assert message.startswith(f"compare_dir: {bad}"), message


def test_compare_dir_that_is_no_folder():
    message = message_for(lambda c: c.update(compare_dir="/nowhere/at/all"))
    assert "compare_dir: '/nowhere/at/all' is not a folder" in message


@pytest.mark.parametrize("text,needle", [
    ("tp_sizes: [8]\nbatch_sizes: [1]\ntp_sizes: [4]\n", r": key 'tp_sizes' is given twice \(lines 1 and 3\)"),
    ("tuning:\n  top_k: 3\n  top_k: 4\n", r": key 'top_k' is given twice \(lines 2 and 3\)"),
    ("tp_sizes: [8\nbatch_sizes: [1]\n", r", line \d+ column \d+: not valid YAML"),
    ("- 1\n- 2\n", r": expected keys at the top level, got list"),
], ids=["duplicate key", "nested duplicate", "syntax error", "not a mapping"])
def test_config_file_problems_name_the_file(tmp_path, text, needle):
    path = tmp_path / "my.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileProblem, match=rf"^config file {path}{needle}"):
        load_strict(path)


def test_config_file_with_nothing_set(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set here\n")
    assert load_strict(empty) == {}


def test_command_line_values_are_read_as_yaml():
    """Snakemake reads --config values as text ('[1,16]' -> ['1', '16'], 'true' -> 'true'); the workflow
    reads them as a config file would."""
    got = yaml_values({"batch_sizes": ["1", "16"], "tp_sizes": "[4]", "verify": "true", "device_name": "NVIDIA_H200",
                       "tuning": {"top_k": "3", "screen_cutoff": "1.25"}, "compare_dir": "null",
                       "out_dtype": "float16"})
    assert got == {"batch_sizes": [1, 16], "tp_sizes": [4], "verify": True, "device_name": "NVIDIA_H200",
                   "tuning": {"top_k": 3, "screen_cutoff": 1.25}, "compare_dir": None, "out_dtype": "float16"}


def test_slurm_placeholders_stop_the_run():
    with pytest.raises(ConfigError, match="the profile still holds 1 placeholder.s. of profiles/slurm/config.yaml: "
                                          "default-resources: slurm_partition=EDIT_ME_gpu_partition; edit"):
        check_slurm_profile({"slurm_partition": "EDIT_ME_gpu_partition", "runtime": 120})
    check_slurm_profile({"slurm_partition": "gpu", "runtime": 120})
    check_slurm_profile(None)


def test_a_file_system_without_locks_is_named(tmp_path, monkeypatch):
    import errno
    import fcntl

    check_file_locks([tmp_path / "results"])  # a local disk has them
    assert list((tmp_path / "results").iterdir()) == []  # the probe is gone

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(NoFileLocks, match=f"{tmp_path / 'results'}/ is on a file system without working file locks "
                                          r"\(flock: No locks available\): compile and tune jobs share"):
        check_file_locks([tmp_path / "results"])
    assert list((tmp_path / "results").iterdir()) == []


def test_every_slurm_placeholder_is_named_at_once():
    """They were reported one per run: the account only after the partition was fixed, and so on."""
    with pytest.raises(ConfigError) as e:
        check_slurm_profile({"slurm_partition": "EDIT_ME_gpu_partition", "slurm_account": "EDIT_ME_account"},
                            {"tune": {"gpu": 1}, "compile": {"slurm_partition": "EDIT_ME_cpu_partition"}})
    assert ("3 placeholder(s) of profiles/slurm/config.yaml: default-resources: slurm_partition=EDIT_ME_gpu_partition; "
            "default-resources: slurm_account=EDIT_ME_account; set-resources: compile: "
            "slurm_partition=EDIT_ME_cpu_partition; edit the lines marked EDIT") in str(e.value)
    check_slurm_profile({"slurm_partition": "gpu"}, {"compile": {"slurm_partition": "cpu"}})


def test_settings_file_round_trip(tmp_path):
    """The sweep's settings.json is what a tune job reads: plain JSON, fingerprint included."""
    from snakemake.utils import validate

    from w8a8_tuner.plan.settings import fingerprint, result_settings, settings_text

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    validate(cfg, str(SCHEMA))
    s = result_settings(make_plan(cfg), cfg["tuning"])
    back = json.loads(settings_text(s))
    assert back == s and back["fingerprint"] == fingerprint(back)
    # A setting that cannot change a result is not in it; one that can changes the fingerprint.
    other = dict(cfg, tuning={**cfg["tuning"], "worker_idle_s": 99, "compile_workers": 7, "persistent_worker": False})
    assert result_settings(make_plan(other), other["tuning"])["fingerprint"] == s["fingerprint"]
    other = dict(cfg, out_dtype="float16")
    assert result_settings(make_plan(other), other["tuning"])["fingerprint"] != s["fingerprint"]
