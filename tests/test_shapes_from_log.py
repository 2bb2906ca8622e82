"""`shapes_from_log`: the shapes a vLLM or SGLang run logged as missing a tuned file. The logs in tests/data/logs/ are
written in each engine's real format (vLLM's worker prefix `(VllmWorker rank=0 pid=300) WARNING 11-02 10:00:00
[fp8_utils.py:851] `, SGLang's `[2026-11-02 10:00:20 TP0] `) with the message text of vLLM's fp8_utils.py /
int8_utils.py and SGLang's fp8_kernel.py / int8_kernel.py; every expected shape is the model's, worked out by
hand in test_shapes.py."""

from pathlib import Path

import pytest
from test_shapes import QWEN3_MOE, deepseek_by_hand, message, model_config, planned

from w8a8_tuner.plan.logs import parse_engine_log

LOGS = Path(__file__).parent / "data" / "logs"
VLLM_LOG = LOGS / "vllm_deepseek_v3_tp8_h200.log"  # DeepSeek-V3, TP=8, H200; N=512 K=7168 had a file
SGLANG_LOG = LOGS / "sglang_qwen3_30b_a3b_tp4_h100.log"  # Qwen3-30B-A3B-FP8, TP=4, H100
H200, H100 = "NVIDIA_H200", "NVIDIA_H100_80GB_HBM3"
VLLM_DIR = "/usr/local/lib/python3.12/dist-packages/vllm/model_executor/layers/quantization/utils/configs"


def from_log(path, **changes):
    values = {"shapes": [], "shapes_from_log": str(path), "backend": "cuda", "tp_sizes": [8], **changes}
    return planned(**values)


def vllm_line(name, kind="FP8", rank=0):
    return (f"(VllmWorker rank={rank} pid=300) WARNING 11-02 10:00:00 [fp8_utils.py:851] Using default W8A8 Block "
            f"{kind} kernel config. Performance might be sub-optimal! Config file not found at {VLLM_DIR}/{name}")


def log_file(tmp_path, *lines):
    path = tmp_path / "engine.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_vllm_log_gives_the_shapes_the_run_looked_for():
    plan = from_log(VLLM_LOG, device_name=H200, tp_sizes=[1, 8])
    # DeepSeek-V3's eight TP=8 shapes but the one that had a file; tuned as given at every TP size
    expected = sorted(set(deepseek_by_hand(8)) - {(512, 7168)})
    assert plan.shapes_by_tp == {1: expected, 8: expected}
    assert plan.block_shape == (128, 128)
    assert {row.source for row in plan.shape_table.rows} == {str(VLLM_LOG)}
    assert plan.shape_table.rows[0].layers == ("line 5",)  # where the table says each shape comes from


def test_sglang_log_gives_the_shapes_of_its_model():
    plan = from_log(SGLANG_LOG, device_name=H100, engine="sglang")
    assert plan.shapes_by_tp[8] == model_config(QWEN3_MOE, 4).shapes_by_tp[4] == [(1280, 2048), (2048, 1024)]


def test_int8_lines_of_both_engines(tmp_path):
    name = f"N=1536,K=7168,device_name={H100},dtype=int8_w8a8,block_shape=[128, 128].json"
    sglang = (f"[2026-11-02 10:00:20 TP0] Using default W8A8 Block INT8 kernel config. Performance might be "
              f"sub-optimal! Config file not found at /opt/sglang/python/sglang/srt/layers/quantization/configs/{name}")
    for line, engine in [(vllm_line(name, "INT8"), "vllm"), (sglang, "sglang")]:
        log = parse_engine_log([line], "x.log")
        assert [(f.n, f.k, f.input_type, f.engine) for f in log.missing] == [(1536, 7168, "int8", engine)]
    plan = from_log(log_file(tmp_path, vllm_line(name, "INT8")), device_name=H100, input_type="int8")
    assert plan.shapes_by_tp[8] == [(1536, 7168)]


def test_block_shape_follows_the_log_when_left_out(tmp_path):
    path = log_file(tmp_path, vllm_line(f"N=256,K=512,device_name={H200},dtype=fp8_w8a8,block_shape=[128,256].json"))
    given = {"shapes", "shapes_from_log", "backend", "tp_sizes", "device_name"}
    assert from_log(path, device_name=H200, given=given).block_shape == (128, 256)
    assert message(shapes=[], shapes_from_log=str(path), backend="cuda", device_name=H200, block_shape=[128, 128]) == (
        f"block_shape: [128, 128], but shapes_from_log {path} has lines with block_shape [128, 256]; leave block_shape "
        "out, or set it to that")


def test_the_interpreter_takes_any_logs_device():
    assert from_log(VLLM_LOG, backend="interpret").shapes_by_tp[8] == sorted(set(deepseek_by_hand(8)) - {(512, 7168)})


# --- what the log says against the config, and logs that say nothing ----------------------------------------------

def bad(path, **changes) -> str:
    return message(**{"shapes": [], "shapes_from_log": str(path), "backend": "cuda", **changes})


def test_a_log_of_another_device_dtype_or_engine_is_named():
    assert bad(VLLM_LOG, device_name=H100) == (
        f"device_name: '{H100}', but shapes_from_log {VLLM_LOG} was logged on {H200}: its engine would not read files "
        f"of {H100}; tune on a {H200} (or set device_name: {H200} on a machine without it)")
    assert bad(VLLM_LOG, device_name=H200, input_type="int8") == (
        f"input_type: 'int8', but shapes_from_log {VLLM_LOG} has W8A8 Block FP8 lines (dtype=fp8_w8a8); "
        "set input_type: fp8")
    assert bad(SGLANG_LOG, device_name=H100) == (
        f"engine: vllm, but shapes_from_log {SGLANG_LOG} is SGLang's log: SGLang would not find files named for "
        "vLLM; set engine: sglang (or both)")
    assert bad(SGLANG_LOG, device_name=H100, engine="both") == ""


@pytest.mark.parametrize("other,what,listed", [
    (f"N=256,K=512,device_name={H100},dtype=fp8_w8a8,block_shape=[128,128].json", "device",
     f"{H200} (line 1); {H100} (line 2)"),
    (f"N=256,K=512,device_name={H200},dtype=fp8_w8a8,block_shape=[64,128].json", "block shape",
     "block_shape=[128, 128] (line 1); block_shape=[64, 128] (line 2)"),
    (f"N=256,K=512,device_name={H200},dtype=int8_w8a8,block_shape=[128, 128].json", "dtype", "fp8 (line 1); int8"),
])
def test_lines_that_disagree_are_named(tmp_path, other, what, listed):
    first = vllm_line(f"N=7168,K=2048,device_name={H200},dtype=fp8_w8a8,block_shape=[128,128].json")
    path = log_file(tmp_path, first, vllm_line(other, "INT8" if "int8" in other else "FP8", rank=1))
    got = bad(path, device_name=H200)
    assert got.startswith(f"shapes_from_log: {path}: lines of several {what}s: {listed}"), got


def test_a_log_without_such_lines_says_what_it_holds(tmp_path):
    path = log_file(tmp_path, "INFO 11-02 09:59:01 [__init__.py:216] Automatically detected platform cuda.")
    assert bad(path, device_name=H200).startswith(
        f"shapes_from_log: {path}: no line 'Using default W8A8 Block FP8 (or INT8) kernel config. Performance might "
        "be sub-optimal! Config file not found at ...': give the log of a vLLM or SGLang run")
    found = [line for line in VLLM_LOG.read_text().splitlines() if "Using configuration from" in line]
    path = log_file(tmp_path, *found)
    assert bad(path, device_name=H200) == (
        f"shapes_from_log: {path}: no 'Config file not found' line, only 8 'Using configuration from ... for W8A8 "
        "Block ... kernel' lines: every GEMM of that run already had a tuned file, so there is nothing to tune")


def test_unreadable_log_and_odd_file_name(tmp_path):
    assert bad(tmp_path / "nope.log").startswith(f"shapes_from_log: {tmp_path / 'nope.log'}: cannot read it (from ")
    path = log_file(tmp_path, "x", vllm_line("N=256,K=512,dtype=fp8_w8a8.json"))
    assert bad(path, device_name=H200) == (
        f"shapes_from_log: {path}, line 2: 'N=256,K=512,dtype=fp8_w8a8.json' is not a W8A8 block config file name "
        "(N=...,K=...,device_name=...,dtype=fp8_w8a8|int8_w8a8,block_shape=[...].json)")


def test_one_source_of_shapes():
    assert bad(VLLM_LOG, shapes=[[256, 512]], device_name=H200).startswith(
        f"shapes and shapes_from_log: '{VLLM_LOG}' are both set; give one")
    assert bad(VLLM_LOG, model_config=str(QWEN3_MOE), device_name=H200).startswith(
        f"model_config and shapes_from_log: '{VLLM_LOG}' are both set; give one")
