"""Verification and report: the real `snakemake` on the CI config (interpreter), plus the contenders
(cuBLAS layouts against a fake cuBLAS on CPU, the spot check, the control) and the ratios."""

import base64
import json
import math
import re
import shutil

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, TEST_CONFIG, job_count, snakemake, tsv, validated

from kernels.blocks import cdiv
from kernels.reference import relative_error
from w8a8_tuner.hooks import CORRUPT_ENV
from w8a8_tuner.results.naming import INTERPRET_DEVICE, config_file_name, load_config_file
from w8a8_tuner.results.tsv import read_tsv
from w8a8_tuner.search.backend import Backend
from w8a8_tuner.search.space import Config, vllm_default_config
from w8a8_tuner.search.status import MAX_RELATIVE_ERROR
from w8a8_tuner.search.workload import Workload
from w8a8_tuner.verify import contenders, roofline
from w8a8_tuner.verify.point import ShapeInputs, VerifySettings, verify_point
from w8a8_tuner.verify.table import COLUMNS, add_ratios, read_rows

CONFIG = yaml.safe_load(TEST_CONFIG.read_text())
SHAPES = sorted(tuple(s) for s in CONFIG["shapes"])
BATCHES = sorted(CONFIG["batch_sizes"])
BLOCK = (128, 128)
PLOTS = ("speedup_default", "speedup_compare", "spot_check", "roofline", "cublas", "times")
# compare_dir holds a file for the first shape only (keys 1 and 64), and one for the second shape
# named for another device, which the naming rule must not pick.
COMPARED = SHAPES[0]
COMPARE_KEYS = {1: Config(16, 64, 128, 1, 4, 2), 64: Config(32, 128, 64, 1, 4, 3)}


def results(workdir):
    return workdir / "results" / INTERPRET_DEVICE


def verify_dir(workdir):
    [folder] = (results(workdir) / "verify").iterdir()
    return folder


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """Tune, verify (through `verify: true`, the default target) and build the report, once."""
    workdir = tmp_path_factory.mktemp("verify")
    compare = workdir / "vllm_configs"
    compare.mkdir()
    (compare / config_file_name(*COMPARED, INTERPRET_DEVICE, BLOCK, input_type="fp8", engine="vllm")).write_text(
        json.dumps({str(m): c.as_dict() for m, c in COMPARE_KEYS.items()}))
    (compare / config_file_name(*SHAPES[1], "NVIDIA_H100_80GB_HBM3", BLOCK, input_type="fp8",
                                engine="vllm")).write_text(
        json.dumps({"1": COMPARE_KEYS[1].as_dict()}))
    cfg = dict(CONFIG, verify=True, compare_dir=str(compare))
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = snakemake(workdir, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    report = snakemake(workdir, "--cores", "2", "--report", "report.html")
    assert report.returncode == 0, report.stderr[-4000:]
    return workdir, run


def test_verify_jobs_and_printed_summary(verified):
    workdir, run = verified
    assert job_count(run.stderr, "verify") == len(SHAPES)
    out = run.stdout + run.stderr
    assert "tuned vs vLLM default: geomean" in out
    assert "cuBLAS and roofline skipped" in out
    assert "noise (tuned config timed twice): median" in out and "spot check (runner-ups" in out
    assert len(list((workdir / "logs" / INTERPRET_DEVICE / "verify").glob("N*_K*.log"))) == len(SHAPES)


def test_verify_tsv_columns_checks_control_and_spot_check(verified):
    workdir, _ = verified
    df = read_rows(verify_dir(workdir) / "verify.tsv")
    assert tuple(df.columns) == COLUMNS
    assert sorted(zip(df["N"], df["K"], df["M"])) == [(n, k, m) for n, k in SHAPES for m in BATCHES]
    default = vllm_default_config(BLOCK, input_type="fp8").label()
    settings = CONFIG["verify_settings"]
    for row in df.itertuples():
        json_name = config_file_name(row.N, row.K, INTERPRET_DEVICE, BLOCK, input_type="fp8", engine="vllm")
        tuned = load_config_file(results(workdir) / "configs" / json_name)
        assert row.tuned_config == tuned[row.M].label()
        assert row.default_config == default
        for name in ("tuned", "default"):
            assert getattr(row, f"{name}_status") == "ok"
            assert 0 < getattr(row, f"{name}_rel_error") <= MAX_RELATIVE_ERROR
            assert getattr(row, f"{name}_us") > 0
        assert row.speedup_vs_default == pytest.approx(row.default_us / row.tuned_us, rel=1e-4)
        # the control: the tuned config timed again as its own contender; its difference is the noise
        # (times are written with 6 significant digits: the ratio recomputed from them is off by up to ~1e-5)
        assert row.control_us > 0 and row.noise_pct == pytest.approx(100 * abs(row.control_us / row.tuned_us - 1),
                                                                     rel=1e-3, abs=2e-3)
        # the spot check: runner-ups and random configs that ran right, from the point's TSV
        from w8a8_tuner.results.tsv import read_tsv

        _, points = read_tsv(tsv(workdir, row.N, row.K, row.M))
        ok = set(points.loc[points["status"] == "ok", "config"]) - {tuned[row.M]}
        assert row.spot_n == min(len(ok), settings["runner_ups"] + settings["spot_random"])
        assert Config.from_label(row.spot_best_config) in ok
        assert row.regret == pytest.approx(row.tuned_us / row.spot_best_us, rel=1e-4)
        # No GPU: cuBLAS and the roofline are skipped, and say so.
        assert row.cublas_status == "skipped" and "interpreter" in row.cublas_note
        assert math.isnan(row.cublas_us) and math.isnan(row.speedup_vs_cublas)
        assert math.isnan(row.roofline_us) and row.roofline_note.startswith("skipped")
        assert math.isnan(row.pct_roofline)
        assert row.bytes > 0 and row.flops == 2 * row.M * row.N * row.K
    # The per-shape TSVs hold the same rows.
    parts = pd.concat([read_rows(verify_dir(workdir) / "shapes" / f"N{n}_K{k}.tsv") for n, k in SHAPES])
    assert len(parts) == len(df)


def test_compare_dir_by_naming_rule_and_nearest_key(verified):
    workdir, _ = verified
    df = read_rows(verify_dir(workdir) / "verify.tsv").set_index(["N", "K", "M"])
    name = config_file_name(*COMPARED, INTERPRET_DEVICE, BLOCK, input_type="fp8", engine="vllm")
    expected_key = {1: 1, 16: 1, 33: 64}  # |33 - 64| < |33 - 1|
    for m in BATCHES:
        row = df.loc[(*COMPARED, m)]
        key = expected_key[m]
        assert int(row["compare_key"]) == key
        assert row["compare_config"] == COMPARE_KEYS[key].label()
        assert row["compare_status"] == "ok" and row["compare_file"] == name
        assert row["speedup_vs_compare"] == pytest.approx(row["compare_us"] / row["tuned_us"], rel=1e-4)
    for m in BATCHES:  # only another device's file for this shape: not picked
        row = df.loc[(*SHAPES[1], m)]
        assert row["compare_status"] == "missing" and math.isnan(row["compare_us"])
        assert config_file_name(*SHAPES[1], INTERPRET_DEVICE, BLOCK, input_type="fp8",
                                engine="vllm") in row["compare_note"]


def test_report_has_plots_summary_and_resolved_device(verified):
    workdir, _ = verified
    html = (workdir / "report.html").read_text()
    for plot in PLOTS:
        m = re.search(rf"data:image/png;charset=utf8;filename={plot}\.png;base64,([A-Za-z0-9+/=]+)", html)
        assert m, f"{plot}.png not in the report"
        assert base64.b64decode(m.group(1)).startswith(b"\x89PNG")
        assert (verify_dir(workdir) / f"{plot}.png").stat().st_size > 5000
    # The summary table is rendered in its caption, the merged TSV attached.
    summary = pd.read_csv(verify_dir(workdir) / "summary.tsv", sep="\t", keep_default_na=False)
    assert list(summary["shape"]) == [f"N={n} K={k}" for n, k in SHAPES] + ["all"]
    total = summary.iloc[-1]
    assert total["vs_default_geomean"].endswith("x") and " at N=" in total["vs_default_worst"]
    assert total["vs_cublas_geomean"] == "skipped" and total["roofline_median_pct"] == "skipped"
    assert total["regret_median"] != "n/a" and total["noise_median_pct"].endswith("%")
    assert "vs_default_geomean</th>" in html and total["vs_default_geomean"] in html
    assert "filename=verify.tsv" in html and "filename=summary.tsv" in html
    assert "Interpreter backend" in html
    assert "on device ``auto``" not in html and "cpu_interpreter" in html  # the resolved name
    assert "system-message" not in html  # no docutils error in a caption
    # The first page shows the summary's numbers, not only links (before: links alone).
    landing = re.search(r"<strong>Verification summary</strong>.*?literal-block.*?>(.*?)</pre>", html)
    assert landing, "no summary on the report's first page"
    text = landing.group(1)
    for line in ("tuned vs vLLM default: geomean ", "tuned vs compare_dir: geomean ", "tuned vs cuBLAS: ",
                 "percent of roofline: skipped", "noise (tuned config timed twice): median ",
                 "spot check (runner-ups and random configs; regret = tuned / best of them): median "):
        assert line in text, text
    assert total["vs_default_geomean"] in text and "Not verified" not in html
    # Whose default: vLLM's (engine: vllm), with its values, in the captions.
    assert re.search(r"Speedup of the tuned config over vLLM\\*'s fallback config", html)
    assert "num_stages=2</tt>" in html


def test_wrong_contender_is_reported_and_not_timed(verified, tmp_path):
    src, _ = verified
    workdir = tmp_path / "copy"
    shutil.copytree(src, workdir, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    target = verify_dir(workdir) / "shapes" / f"N{COMPARED[0]}_K{COMPARED[1]}.tsv"
    target.unlink()
    run = snakemake(workdir, str(target.relative_to(workdir)), "--cores", "2", env={CORRUPT_ENV: "default,compare"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert job_count(run.stderr, "verify") == 1 and job_count(run.stderr, "tune") == 0
    df = read_rows(target)
    assert (df["tuned_status"] == "ok").all() and (df["tuned_us"] > 0).all()
    for name in ("default", "compare"):
        assert (df[f"{name}_status"] == "wrong_result").all()
        assert df[f"{name}_us"].isna().all() and df[f"speedup_vs_{name}"].isna().all()
        assert (df[f"{name}_rel_error"] > MAX_RELATIVE_ERROR).all()
        assert df[f"{name}_note"].str.contains("not timed").all()


@pytest.mark.e2e
def test_dry_run_targets_and_switch(tmp_path):
    """verify_all adds one verify job per shape; `verify: true` adds it to the default target."""
    base = ["-n", "--cores", "8", "--resources", "gpu=8"]
    dev = ["--config", "device_name=NVIDIA_H100_80GB_HBM3"]
    run = snakemake(tmp_path, "verify_all", *base, *dev)
    assert run.returncode == 0, run.stderr[-2000:]
    shapes = job_count(run.stdout, "aggregate")
    assert shapes == 8 and job_count(run.stdout, "verify") == shapes  # DeepSeek-V3 at TP=8
    assert job_count(run.stdout, "verify_plots") == 1 and job_count(run.stdout, "verify_summary") == 1
    run = snakemake(tmp_path, *base, *dev)
    assert run.returncode == 0 and job_count(run.stdout, "verify") == 0
    run = snakemake(tmp_path, *base, "--configfile", str(REPO / "benchmarks" / "configs" / "verify_tp8.yaml"), *dev)
    assert run.returncode == 0, run.stderr[-2000:]
    assert job_count(run.stdout, "verify") == 2 and job_count(run.stdout, "tune") == 2 * 18


# ---------------------------------------------------------------------------------------------
# Contenders, without a workflow


def test_spot_check_takes_runner_ups_then_random_right_configs(tmp_path):
    import random

    from w8a8_tuner.results.tsv import write_tsv
    from w8a8_tuner.search.stages import Result

    rng = random.Random()
    configs = [Config(bm, bn, 128, g, 4, s) for bm in (16, 32) for bn in (32, 64) for g in (1, 16) for s in (2, 3)]
    stages = ["remeasure"] * 4 + ["screen"] * 4 + ["estimate"] * 6 + [""] * 2
    results = []
    for c, stage in zip(configs, stages):
        ok = stage != ""
        results.append(Result(c, "ok" if ok else "wrong_result", time_us=rng.uniform(10, 20) if ok else math.nan,
                              screen_us=math.nan, rel_error=0.003 if ok else 0.5, stage=stage))
    finalists = sorted((r for r in results if r.stage == "remeasure"), key=lambda r: r.time_us)
    best = finalists[0].config
    path = tmp_path / "M1.tsv"
    write_tsv(path, {"M": 1}, results, best)
    picked = contenders.spot_check_configs(read_tsv(path)[1], {best}, runner_ups=4, random_k=5, seed=1)
    assert picked[:3] == [r.config for r in finalists[1:]]  # the other finalists, fastest first
    screened = sorted((r for r in results if r.stage == "screen"), key=lambda r: r.time_us)
    assert picked[3] == screened[0].config
    assert len(picked) == 9 and len(set(picked)) == 9 and best not in picked
    wrong = {r.config for r in results if r.status != "ok"}
    assert not wrong & set(picked)
    assert contenders.spot_check_configs(read_tsv(path)[1], {best}, 4, 5, seed=1) == picked  # reproducible


def test_ratios_control_and_regret():
    row = {"tuned_status": "ok", "tuned_us": 10.0, "default_status": "ok", "default_us": 20.0,
           "compare_status": "missing", "compare_us": math.nan, "cublas_status": "ok", "cublas_us": 5.0,
           "plain_status": "ok", "plain_us": 25.0, "roofline_us": 2.0, "control_us": 10.1, "spot_best_us": 9.5}
    add_ratios(row)
    assert row["speedup_vs_default"] == 2.0 and math.isnan(row["speedup_vs_compare"])
    assert row["speedup_vs_plain"] == 2.5
    assert row["speedup_vs_cublas"] == 0.5 and row["pct_roofline"] == pytest.approx(20.0)
    assert row["noise_pct"] == pytest.approx(1.0) and row["regret"] == pytest.approx(10 / 9.5)
    row.update(tuned_status="wrong_result")
    add_ratios(row)
    assert math.isnan(row["regret"]) and math.isnan(row["speedup_vs_default"])


# cuBLAS contender against a fake torch._scaled_mm on CPU, which checks the scale layouts as torch
# does and reads scale_b the way cuBLAS does (ceil(K/128) padded to 4 in memory).


def _fits(scale, dim, size, stride):
    return scale.size(dim) == size and (size <= 1 or scale.stride(dim) == stride)


def fake_scaled_mm(padded_check: bool):
    """torch._scaled_mm for blockwise 1x128 x 128x128; padded_check: torch after pytorch#166752."""

    def scaled_mm(a, b, scale_a, scale_b, out_dtype=None, **_):
        M, K = a.shape
        N = b.shape[1]
        groups, nb = cdiv(K, 128), cdiv(N, 128)
        padded = cdiv(groups, 4) * 4
        sb = scale_b.t()
        ok_a = _fits(scale_a, 0, M, 1) and _fits(scale_a, 1, groups, M)
        ok_b = _fits(sb, 0, nb, padded if padded_check else groups) and _fits(sb, 1, groups, 1)
        if not (ok_a and ok_b):
            raise RuntimeError("Invalid scaling configuration.")
        if M == 1:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul")
        # cuBLAS reads row n of the weight scales at offset n * padded, whatever torch accepted.
        flat = torch.as_strided(sb, (sb.untyped_storage().nbytes() // 4,), (1,), 0)
        flat = torch.nn.functional.pad(flat, (0, nb * padded))
        read = torch.stack([flat[n * padded: n * padded + groups] for n in range(nb)])
        a_f = a.float() * scale_a.repeat_interleave(128, 1)[:, :K]
        b_f = b.t().float() * read.repeat_interleave(128, 0)[:N].repeat_interleave(128, 1)[:, :K]
        return (a_f @ b_f.t()).to(out_dtype)

    return scaled_mm


def cublas_error(M, N, K, monkeypatch, padded_check=True):
    """(relative error of the layout the contender picked, layout), or (note, None) if it is unsupported."""
    monkeypatch.setattr(torch, "_scaled_mm", fake_scaled_mm(padded_check), raising=False)
    workload = Workload.create(M, N, K, BLOCK, "bfloat16", "cpu", 0, seed=1, input_type="fp8", kernel="builtin")
    try:
        layout, launch = contenders.cublas_launcher(workload, torch.bfloat16)
    except NotImplementedError as e:
        return str(e), None
    return relative_error(launch(0), workload.ref), layout


@pytest.mark.parametrize("K", [512, 256, 2304])
def test_cublas_layout_right_on_current_torch(K, monkeypatch):
    err, layout = cublas_error(16, 256, K, monkeypatch)
    assert err < 1e-2
    assert ("padded" in layout) == (cdiv(K, 128) % 4 != 0)


def test_cublas_wrong_scales_on_older_torch_are_caught(monkeypatch):
    # Older torch takes the unpadded weight scales; cuBLAS reads them padded: wrong numbers.
    err, layout = cublas_error(16, 384, 2304, monkeypatch, padded_check=False)
    assert layout == "scale_b unpadded" and err > MAX_RELATIVE_ERROR
    err, _ = cublas_error(16, 384, 512, monkeypatch, padded_check=False)
    assert err < 1e-2


def test_cublas_refusal_is_unsupported(monkeypatch):
    note, layout = cublas_error(1, 256, 512, monkeypatch)
    assert layout is None and "NOT_SUPPORTED" in note


def test_roofline_is_the_slower_bound():
    limits = roofline.DeviceLimits(bandwidth_gbs=3000.0, fp8_peak_tflops=1000.0)
    M, N, K = 1, 4608, 7168
    moved = M * K + N * K + 4 * M * 56 + 4 * 36 * 56 + 2 * M * N
    assert roofline.point_bytes(M, N, K, BLOCK, 2) == moved
    assert roofline.roofline_us(M, N, K, BLOCK, 2, limits) == pytest.approx(moved / 3000e9 * 1e6)
    M = 4096
    assert roofline.roofline_us(M, N, K, BLOCK, 2, limits) == pytest.approx(2 * M * N * K / 1000e12 * 1e6)
    assert math.isnan(roofline.roofline_us(M, N, K, BLOCK, 2, roofline.DeviceLimits()))


class CpuStandInBackend(Backend):
    """The GPU branch of verify_point (weight copies, cuBLAS, roofline) with the CPU doing the work."""

    @property
    def device(self):
        return "cpu"

    def cache_bytes(self):
        return 1 << 20

    def arch(self, device_name):
        return None

    def compiler(self, point, workers, arch=None):
        return Backend("interpret").compiler(point, workers)  # the interpreter compiles nothing


def test_gpu_branch_with_cpu_stand_ins(monkeypatch):
    """The interpreter runs the kernel, a fake cuBLAS (older torch: unpadded scales accepted, read padded)
    is wrong at ceil(K/128) = 18 and must not be timed; every contender is timed in the same rounds."""
    from w8a8_tuner.search.bench import WallBench

    monkeypatch.setattr(torch, "_scaled_mm", fake_scaled_mm(padded_check=False), raising=False)
    backend = CpuStandInBackend("cuda")
    timed = []

    class CountingBench(WallBench):
        def measure(self, launchers, launches, rounds):
            timed.append(len(launchers))
            return super().measure(launchers, launches, rounds)

    settings = VerifySettings(**{**validated()["verify_settings"], "budget_us": 1.0, "rounds": 1})
    limits = roofline.DeviceLimits(bandwidth_gbs=3000.0, fp8_peak_tflops=1000.0)
    tuned = Config(16, 128, 128, 1, 4, 2)
    shape = ShapeInputs(N=256, K=2304, tuned={16: tuned}, extra={"device_name": "x", "backend": "cuda"},
                        input_type="fp8", kernel="builtin")
    row = verify_point(shape, 16, settings, backend, CountingBench(), limits, log=lambda s: None)
    assert timed == [3, 3]  # tuned, its control and default, side by side (no spot check without a TSV)
    assert row["tuned_status"] == "ok" and row["default_status"] == "ok" and row["compare_status"] == "missing"
    assert row["control_us"] > 0 and row["spot_n"] == 0 and math.isnan(row["regret"])
    assert row["cublas_status"] == "wrong_result" and math.isnan(row["cublas_us"])
    assert "unpadded" in row["cublas_config"] and math.isnan(row["speedup_vs_cublas"])
    assert row["roofline_us"] == pytest.approx(roofline.roofline_us(16, 256, 2304, BLOCK, 2, limits))
    assert row["pct_roofline"] == pytest.approx(100 * row["roofline_us"] / row["tuned_us"])
    assert row["speedup_vs_default"] == pytest.approx(row["default_us"] / row["tuned_us"])


# ---------------------------------------------------------------------------------------------
# Whose default: the engine tuned for


@pytest.mark.parametrize("engine,input_type,stages", [
    ("vllm", "fp8", 2), ("vllm", "int8", 3),      # vLLM's fp8_utils.py and int8_utils.py
    ("sglang", "fp8", 3), ("sglang", "int8", 3),  # SGLang's fp8_kernel.py and int8_kernel.py
    ("both", "fp8", 2),                           # both: vLLM's, the first engine
])
def test_the_default_is_the_fallback_of_the_engine_tuned_for(engine, input_type, stages):
    from w8a8_tuner.search.space import engine_default_config

    assert engine_default_config(engine, (128, 64), input_type=input_type) == Config(64, 128, 64, 32, 4, stages)


def test_verify_times_sglangs_default_for_engine_sglang(monkeypatch):
    """Before: verify's `default` was vLLM's fallback (num_stages 2) whatever engine the files were tuned for;
    SGLang falls back to num_stages 3 for FP8."""
    settings = VerifySettings(**{**validated()["verify_settings"], "budget_us": 1.0, "rounds": 1})
    shape = ShapeInputs(N=256, K=512, tuned={1: Config(16, 128, 128, 1, 4, 2)}, engine="sglang",
                        extra={"device_name": INTERPRET_DEVICE, "backend": "interpret"}, input_type="fp8",
                        kernel="builtin")
    backend = Backend("interpret")
    from w8a8_tuner.search.bench import WallBench

    row = verify_point(shape, 1, settings, backend, WallBench(), None, log=lambda s: None)
    assert row["default_config"] == "M64_N128_K128_G32_w4_s3" and row["default_status"] == "ok"


def test_whose_default_is_in_the_verify_fingerprint_and_the_words():
    """A verify table of vLLM's default is not one of SGLang's: engine sglang verifies into another folder (both
    and vllm compare with the same default: the same folder, as before)."""
    from w8a8_tuner.plan.settings import verify_settings
    from w8a8_tuner.verify.report import summarize, summary_text

    result = {"fingerprint": "abc"}
    folders = {e: verify_settings(result, {}, None, engine=e)["fingerprint"] for e in ("vllm", "sglang", "both")}
    assert folders["vllm"] == folders["both"] == verify_settings(result, {}, None)["fingerprint"] != folders["sglang"]
    row = {"N": 256, "K": 512, "M": 1, "device_name": "x", "backend": "cuda", "compare_note": "no compare_dir given",
           "roofline_note": "", "spot_best_us": math.nan, "control_us": 10.0}
    for name in ("tuned", "default", "compare", "cublas", "plain"):
        row.update({f"{name}_status": "ok" if name in ("tuned", "default") else "missing", f"{name}_us": 10.0})
    row["roofline_us"] = math.nan
    add_ratios(row)
    df = pd.DataFrame([row])
    assert "tuned vs SGLang default: geomean" in summary_text(df, summarize(df), engine="sglang")
    assert "tuned vs vLLM default: geomean" in summary_text(df, summarize(df), engine="both")


# ---------------------------------------------------------------------------------------------
# SGLang's Hopper knobs in verify


@pytest.mark.parametrize("arch", [90, 89])
def test_a_compare_entry_with_knobs_runs_the_kernel_its_keys_select(arch, monkeypatch):
    """A compare_dir entry with SWAP_AB/SPLIT_K is checked and timed with SGLang's Hopper kernel on sm90 (its
    output right through the partials and the reduction); on another GPU SGLang would not run it, and the
    row says so instead of timing something else. The plain contender is the point's best without a knob."""
    from w8a8_tuner.search.bench import WallBench

    class Arch(CpuStandInBackend):
        def arch(self, device_name):
            return arch

    monkeypatch.setattr(torch, "_scaled_mm", fake_scaled_mm(padded_check=True), raising=False)
    settings = VerifySettings(**{**validated()["verify_settings"], "budget_us": 1.0, "rounds": 1, "cublas": False,
                                 "roofline": False})
    knob = Config(16, 64, 64, 1, 4, 2, SWAP_AB=True, SPLIT_K=4)
    plain = Config(16, 128, 128, 1, 4, 2)
    shape = ShapeInputs(N=256, K=512, tuned={1: plain}, compare={1: knob}, compare_file="c.json",
                        plain={1: Config(16, 64, 128, 1, 4, 2)},
                        extra={"device_name": "x", "backend": "cuda"}, input_type="fp8", kernel="builtin")
    row = verify_point(shape, 1, settings, Arch("cuda"), WallBench(), None, log=lambda s: None)
    assert row["compare_config"] == knob.label() == "M16_N64_K64_G1_w4_s2_ab_sk4"
    if arch == 90:
        assert row["compare_status"] == "ok" and row["compare_rel_error"] < 8e-3 and row["compare_us"] > 0
    else:
        assert row["compare_status"] == "unsupported" and "sm90 only (this GPU: sm89)" in row["compare_note"]
        assert math.isnan(row["speedup_vs_compare"])
    assert row["plain_status"] == "ok" and row["plain_config"] == "M16_N64_K128_G1_w4_s2"
    assert row["speedup_vs_plain"] == pytest.approx(row["plain_us"] / row["tuned_us"])
