"""The engine variants: INT8 operands, the installed engine's own kernel (`kernel: vllm | sglang`) and
each engine's file names (`engine: both`).

An engine's kernel is stood in for by tests/fake_engines/vllm, a package with vLLM's module paths whose
functions are the builtin kernel behind a launch record, so a test can tell which function ran."""

import math
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import DEV, REPO, SCHEMA, job_count, make_workdir, results, snakemake, stop_workers, validated
from engine_lookup import engine_configs, engine_file_name, engine_pick

from kernels import engines
from w8a8_tuner.plan.settings import result_settings, variant
from w8a8_tuner.plan.sweep import ConfigError, make_plan
from w8a8_tuner.results.aggregate import aggregate, read_manifest, stale_reason
from w8a8_tuner.results.naming import config_file_names, load_config_file
from w8a8_tuner.search.space import Config

FAKE_ENGINES = REPO / "tests" / "fake_engines"
H100 = "NVIDIA_H100_80GB_HBM3"
# Settings of results tuned before input_type and kernel existed (the defaults then: vLLM's space alone, no
# prune rule), and the fingerprint those results have.
EARLIER = {"device_name": H100, "search_space_extra": [], "tuning": {"prune_accumulators": 0}}
EARLIER_FINGERPRINT = "9f86d48c3582"


@pytest.fixture
def fake_vllm(monkeypatch):
    """The stand-in vLLM importable here; its modules forgotten afterwards (so `vllm` is not installed again)."""
    monkeypatch.syspath_prepend(str(FAKE_ENGINES))
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in ("vllm", "fake_engine_launches")]:
        del sys.modules[name]


def launches():
    from fake_engine_launches import LAUNCHES

    return LAUNCHES


# --- where the kernel comes from ---------------------------------------------------------------

def test_builtin_kernel_is_found_and_engines_that_are_not_installed_are_named():
    assert engines.find("builtin", "int8") == "kernels.block_fp8:block_fp8_matmul_kernel"
    assert engines.find("sglang", "fp8") is None
    with pytest.raises(engines.KernelNotFound) as err:
        engines.load("sglang", "int8")
    for place in engines.places("sglang", "int8"):  # every place tried, by its import
        assert place.replace(":", ".") in str(err.value)


def test_engine_kernel_not_installed_stops_the_plan_naming_key_value_and_import():
    with pytest.raises(ConfigError) as err:
        make_plan(validated(kernel="sglang", input_type="int8", device_name=H100))
    text = str(err.value)
    assert text.startswith("kernel: 'sglang' with input_type: 'int8': cannot import "
                           "sglang.kernels.ops.quantization.int8_kernel._w8a8_block_int8_matmul or "
                           "sglang.srt.layers.quantization.int8_kernel._w8a8_block_int8_matmul")
    assert sys.executable in text and "kernel: builtin" in text


def test_the_plan_checks_the_engine_without_importing_torch_or_triton(monkeypatch):
    """A cluster's head node plans the sweep: the check reads files, it imports no engine, torch or triton."""
    code = f"""
import sys
from snakemake.utils import validate
from w8a8_tuner.plan.sweep import ConfigError, make_plan
for kernel in ("vllm", "sglang"):
    cfg = {{"kernel": kernel, "device_name": "{H100}"}}
    validate(cfg, {str(SCHEMA)!r})
    try:
        make_plan(cfg)
        print(kernel, "found")
    except ConfigError as e:
        print(kernel, "missing")
print(sorted(m for m in ("torch", "triton", "vllm", "sglang", "kernels.block_fp8") if m in sys.modules))
"""
    monkeypatch.setenv("PYTHONPATH", str(FAKE_ENGINES))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["vllm found", "sglang missing", "[]"], done.stdout


@pytest.mark.parametrize("input_type", ["fp8", "int8"])
def test_workload_launches_the_engines_function(fake_vllm, input_type):
    """kernel: vllm launches vLLM's function (the stand-in counts its launches), with vLLM's arguments,
    and its numbers are checked against the reference like the builtin kernel's."""
    from w8a8_tuner.search.workload import Workload

    assert engines.find("vllm", input_type) is not None
    workload = Workload.create(33, 200, 300, (128, 128), "bfloat16", "cpu", 0, input_type=input_type, kernel="vllm")
    name = {"fp8": "vllm._w8a8_triton_block_scaled_mm", "int8": "vllm._w8a8_block_int8_matmul"}[input_type]
    before = launches()[name]
    configs = [Config(16, 64, 128, 1, 4, 2), Config(32, 128, 128, 4, 4, 3)]
    checks = workload.check(configs, corrupt=lambda c: c == configs[1])
    assert launches()[name] - before == len(configs)
    assert checks[configs[0]].right and 0 < checks[configs[0]].rel_error < 8e-3
    assert not checks[configs[1]].right  # the check still has teeth


@pytest.mark.parametrize("input_type", ["fp8", "int8"])
def test_builtin_workload_checks_int8_and_fp8_against_the_reference(input_type):
    from kernels.reference import INPUT_DTYPES
    from w8a8_tuner.search.workload import Workload

    workload = Workload.create(7, 384, 130, (128, 128), "float32", "cpu", 0, input_type=input_type,
                               kernel="builtin")
    assert workload.ops.A.dtype == workload.ops.B.dtype == INPUT_DTYPES[input_type]
    (outcome,) = workload.check([Config(16, 128, 64, 1, 4, 2)]).values()
    assert outcome.right and outcome.rel_error < 1e-3, outcome


# --- what the fingerprint holds ------------------------------------------------------------------

def test_default_input_type_and_kernel_keep_the_fingerprint_results_were_tuned_with():
    cfg = validated(**EARLIER)
    s = result_settings(make_plan(cfg), cfg["tuning"])
    assert s["fingerprint"] == EARLIER_FINGERPRINT
    assert "input_type" not in s and "kernel" not in s
    assert variant(s) == {"input_type": "fp8", "kernel": "builtin"}
    # which engine's names the files get changes no result
    for engine in ("sglang", "both"):
        other = validated(**EARLIER, engine=engine)
        assert result_settings(make_plan(other), other["tuning"])["fingerprint"] == EARLIER_FINGERPRINT


def test_int8_and_an_engines_kernel_are_new_settings(fake_vllm):
    seen = {EARLIER_FINGERPRINT}
    for values in ({"input_type": "int8"}, {"kernel": "vllm"}, {"input_type": "int8", "kernel": "vllm"}):
        cfg = validated(**EARLIER, **values)
        s = result_settings(make_plan(cfg), cfg["tuning"])
        assert s["fingerprint"] not in seen
        seen.add(s["fingerprint"])
        assert variant(s) == {"input_type": "fp8", "kernel": "builtin", **values}


# --- the manifest covers every file written ----------------------------------------------------------

def test_every_json_of_a_shape_is_recorded_and_checked(tmp_path):
    from test_results import CONFIGS, EXPECTED, fake_point

    tsvs = {M: str(tmp_path / f"M{M}.tsv") for M in (1, 16)}
    for M, p in tsvs.items():
        fake_point(p, M, random.Random())
    vllm, sglang = (tmp_path / n for n in config_file_names(256, 512, "dev", (128, 128), input_type="fp8",
                                                            engine="both"))
    manifest = tmp_path / "m.tsv"
    best = aggregate(tsvs, {vllm: False}, manifest, EXPECTED, lambda m: set(CONFIGS))
    sglang.write_text(vllm.read_text())
    # engine: vllm -> both: the SGLang file on disk was not written for these results
    assert stale_reason([vllm, sglang], manifest, "abc", tsvs) == f"no record of writing {sglang.name}"
    assert aggregate(tsvs, {vllm: False, sglang: True}, manifest, EXPECTED, lambda m: set(CONFIGS)) == best
    assert load_config_file(vllm) == load_config_file(sglang) == best
    assert list(read_manifest(manifest)[1]) == [str(vllm), str(sglang)]
    assert stale_reason([vllm, sglang], manifest, "abc", tsvs) is None
    assert stale_reason([vllm], manifest, "abc", tsvs) is None  # both -> vllm: nothing to remake
    sglang.write_text("{}")
    assert stale_reason([vllm, sglang], manifest, "abc", tsvs) == f"{sglang.name} changed on disk since it was written"
    sglang.unlink()
    assert stale_reason([vllm, sglang], manifest, "abc", tsvs) is None  # missing: Snakemake makes it anyway


# --- the workflow: every engine loads what it wrote -----------------------------------------------

BATCHES = [1, 33]


def check_engine_files(wd: Path, input_type: str, shapes, spellings: int):
    """Every shape has `spellings` files; each engine finds its file by its own name and picks the
    nearest batch size's config from it, the configs the workflow tuned."""
    folder = results(wd) / "configs"
    expected = {engine_file_name(e, input_type, n, k, DEV, (128, 128)) for e in ("vllm", "sglang") for n, k in shapes}
    assert {p.name for p in folder.iterdir()} == expected and len(expected) == spellings * len(shapes)
    for n, k in shapes:
        names = {engine_file_name(e, input_type, n, k, DEV, (128, 128)) for e in ("vllm", "sglang")}
        tuned = load_config_file(folder / sorted(names)[0])
        assert sorted(tuned) == BATCHES
        for engine in ("vllm", "sglang"):
            assert engine_configs(folder, engine, input_type, n, k, DEV, (128, 128)) == {
                m: c.as_dict() for m, c in tuned.items()}
            for M in (1, 2, 16, 17, 33, 4096):
                nearest = min(BATCHES, key=lambda b: (abs(b - M), b))
                assert engine_pick(folder, engine, input_type, n, k, DEV, (128, 128), M) == tuned[nearest].as_dict()


@pytest.mark.e2e
def test_engine_both_with_vllms_kernel_writes_each_engines_file(tmp_path, monkeypatch):
    """engine: both, kernel: vllm (the stand-in on PYTHONPATH): vLLM's function is what the tune jobs
    launch; each shape gets vLLM's and SGLang's file, each loads as its engine loads it; a damaged or
    deleted one is made again from the same TSVs."""
    log = tmp_path / "launches.log"
    monkeypatch.setenv("PYTHONPATH", str(FAKE_ENGINES))
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(log))
    wd = make_workdir(tmp_path, engine="both", kernel="vllm", batch_sizes=BATCHES)
    shapes = [tuple(s) for s in yaml.safe_load((wd / "config" / "config.yaml").read_text())["shapes"]]
    try:
        run = snakemake(wd, "--cores", "2", "--resources", "gpu=1")
        assert run.returncode == 0, run.stderr[-3000:]
        check_engine_files(wd, "fp8", shapes, spellings=2)
        launched = log.read_text().split()
        assert set(launched) == {"vllm._w8a8_triton_block_scaled_mm"} and len(launched) >= len(shapes) * len(BATCHES)
        folder = results(wd) / "configs"
        damaged = folder / engine_file_name("sglang", "fp8", *shapes[0], DEV, (128, 128))
        deleted = folder / engine_file_name("vllm", "fp8", *shapes[1], DEV, (128, 128))
        good = {p: p.read_text() for p in (damaged, deleted)}
        damaged.write_text(good[damaged].replace("1", "2", 1))
        deleted.unlink()
        log.unlink()
        again = snakemake(wd, "--cores", "2", "--resources", "gpu=1")
        assert again.returncode == 0, again.stderr[-3000:]
        out = again.stdout + again.stderr
        assert job_count(out, "tune") == 0 and job_count(out, "aggregate") == 2
        assert f"N={shapes[0][0]} K={shapes[0][1]}: the JSON is stale ({damaged.name} changed on disk" in out
        assert {p: p.read_text() for p in good} == good
        assert not log.exists()  # nothing was tuned again
    finally:
        stop_workers(wd)


@pytest.mark.e2e
def test_int8_writes_one_file_both_engines_load(tmp_path):
    """input_type: int8: the tune jobs quantize and launch INT8 (a TSV says so in its settings); vLLM and
    SGLang spell the INT8 name alike, so engine: both writes one file, dtype=int8_w8a8."""
    wd = make_workdir(tmp_path, input_type="int8", engine="both", shapes=[[384, 256]], batch_sizes=BATCHES)
    try:
        run = snakemake(wd, "--cores", "2", "--resources", "gpu=1")
        assert run.returncode == 0, run.stderr[-3000:]
        check_engine_files(wd, "int8", [(384, 256)], spellings=1)
        (settings,) = (results(wd) / "tune").glob("*/settings.json")
        assert yaml.safe_load(settings.read_text())["input_type"] == "int8"
        from w8a8_tuner.results.tsv import read_tsv

        for tsv in (results(wd) / "tune").glob("*/N384_K256/M*.tsv"):
            _, df = read_tsv(tsv)
            ok = df[df["status"] == "ok"]
            assert len(ok) and (ok["rel_error"] < 8e-3).all() and not ok["rel_error"].map(math.isnan).any()
    finally:
        stop_workers(wd)


# --- SGLang's Hopper knobs end to end ------------------------------------------------------------------

KNOB_REGION = {"min_M": 1, "max_M": 16, "BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [32, 64], "BLOCK_SIZE_K": "auto",
               "GROUP_SIZE_M": [1], "num_warps": [4], "num_stages": [2], "SWAP_AB": [False, True],
               "SPLIT_K": [1, 2, 4]}


@pytest.mark.e2e
def test_engine_both_with_knobs_gives_each_engine_the_best_it_can_run(tmp_path):
    """engine: both with a knob region (interpreter): each point's TSV lists the knob configs beside the plain
    ones and names both winners; SGLang's file holds each point's best, vLLM's the best without a knob (never
    a knob key), each as its engine reads it; verify times the best without a knob beside the tuned config."""
    from w8a8_tuner.results.tsv import read_tsv

    wd = make_workdir(tmp_path, engine="both", shapes=[[256, 512]], batch_sizes=[1, 33],
                      search_space_extra=[KNOB_REGION], verify=True)
    try:
        run = snakemake(wd, "--cores", "2", "--resources", "gpu=1")
        assert run.returncode == 0, run.stderr[-3000:]
        folder = results(wd) / "configs"
        vllm = engine_configs(folder, "vllm", "fp8", 256, 512, DEV, (128, 128))
        sglang = engine_configs(folder, "sglang", "fp8", 256, 512, DEV, (128, 128))
        tsvs = {m: next((results(wd) / "tune").glob(f"*/N256_K512/M{m}.tsv")) for m in (1, 33)}
        meta1, df1 = read_tsv(tsvs[1])
        assert df1["config"].map(lambda c: c.knobs).sum() == 2 * 2 * (2 * 3 - 1)  # BN x BK x knob pairs but plain
        assert sglang[1] == Config.from_label(meta1["best"]).as_dict()
        assert vllm[1] == Config.from_label(meta1["best_plain"]).as_dict()
        meta33, df33 = read_tsv(tsvs[33])
        assert "best_plain" not in meta33 and not df33["config"].map(lambda c: c.knobs).any()  # outside the region
        assert vllm[33] == sglang[33] == Config.from_label(meta33["best"]).as_dict()
        assert all(not ({"SWAP_AB", "SPLIT_K"} & set(entry)) for entry in vllm.values())
        # verify: the tuned config is SGLang's; the plain contender is the best without a knob, where tuned
        table = pd.read_csv(next((results(wd) / "verify").glob("*/verify.tsv")), sep="\t")
        rows = {int(r.M): r for r in table.itertuples()}
        assert rows[1].tuned_config == meta1["best"] and rows[1].plain_config == meta1["best_plain"]
        assert rows[1].plain_status == "ok" and rows[33].plain_status == "missing"
        assert list((results(wd) / "verify").glob("*/speedup_plain.png"))
    finally:
        stop_workers(wd)


def test_a_knob_winner_goes_to_sglangs_file_only(tmp_path):
    """A point whose best config carries a knob: SGLang's file gets it, vLLM's the best without one."""
    from w8a8_tuner.results.tsv import point_meta, write_tsv
    from w8a8_tuner.search.stages import Result

    plain, knob = Config(16, 64, 128, 1, 4, 3), Config(16, 64, 64, 1, 4, 3, SWAP_AB=True, SPLIT_K=8)
    s = {"fingerprint": "abc", "device_name": DEV, "backend": "interpret", "block_shape": [128, 128],
         "out_dtype": "bfloat16"}
    tsv = tmp_path / "M1.tsv"
    rows = [Result(knob, "ok", 4.0, 4.1, 0.003, "remeasure"), Result(plain, "ok", 9.0, 9.2, 0.003, "remeasure")]
    write_tsv(tsv, point_meta(s, 512, 7168, 1, "x", "cpu", "h", 0.0, 1.0), rows, knob, plain)
    expected = {k: s[k] for k in ("fingerprint", "device_name", "backend", "block_shape", "out_dtype")}
    jsons = {tmp_path / "vllm.json": False, tmp_path / "sglang.json": True}
    aggregate({1: str(tsv)}, jsons, tmp_path / "m.tsv", {**expected, "N": 512, "K": 7168})
    assert load_config_file(tmp_path / "sglang.json") == {1: knob}
    assert load_config_file(tmp_path / "vllm.json") == {1: plain}
    entry = __import__("json").loads((tmp_path / "sglang.json").read_text())["1"]
    assert entry["SWAP_AB"] is True and entry["SPLIT_K"] == 8
    # a TSV whose header names another plain winner than its rows is refused
    text = tsv.read_text().replace(f"# best_plain: {plain.label()}", f"# best_plain: {knob.label()}")
    tsv.write_text(text)
    from w8a8_tuner.results.tsv import ResultFileError, read_tsv

    with pytest.raises(ResultFileError, match="header says best_plain"):
        read_tsv(tsv)


def _sglang_layout(root: Path, module: str, functions: list[str]) -> None:
    """A stand-in SGLang package with one module defining `functions` (source text only: find reads it)."""
    parts = module.split(".")
    for i in range(1, len(parts)):
        folder = root.joinpath(*parts[:i])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    root.joinpath(*parts[:-1], parts[-1] + ".py").write_text(
        "".join(f"def {f}(*args, **kwargs):\n    pass\n\n\n" for f in functions))


@pytest.mark.parametrize("layout,hopper", [("sglang.kernels.ops.quantization.fp8_kernel", True),
                                           ("sglang.srt.layers.quantization.fp8_kernel", True),
                                           ("sglang.srt.layers.quantization.fp8_kernel", False)])
def test_sglangs_kernels_are_found_in_either_layout_with_or_without_the_hopper_kernel(tmp_path, monkeypatch, layout,
                                                                                      hopper):
    """kernel: sglang finds SGLang's function in its current module layout (kernels/ops/quantization) and the
    older one (srt/layers/quantization), and its Hopper kernel and reduction where that version has them:
    without them the knob regions are left out, and the plan says why."""
    functions = ["_w8a8_block_fp8_matmul"] + (
        ["_w8a8_block_fp8_matmul_hopper", "_reduce_block_fp8_split_k"] if hopper else [])
    _sglang_layout(tmp_path, layout, functions)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert engines.find("sglang", "fp8") == f"{layout}:_w8a8_block_fp8_matmul"
    assert engines.has_knob_kernels("sglang", "fp8") is hopper
    from w8a8_tuner.plan.sweep import knobs_reason

    why = knobs_reason("sglang", "fp8", "sglang", "cuda", "NVIDIA_H200")
    assert why == ("" if hopper else "kernel: sglang has no Hopper kernel installed")
    plan = make_plan(validated(device_name="NVIDIA_H200", engine="sglang", kernel="sglang"))
    assert plan.knobs is hopper and any(c.knobs for c in plan.configs_at(1)) is hopper
