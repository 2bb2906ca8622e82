"""Verification and report: the real `snakemake` on the CI config (interpreter), plus the cuBLAS
contender's layouts and checks against a fake cuBLAS on CPU."""

import base64
import json
import math
import re
import shutil

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, TEST_CONFIG, snakemake
from kernels import verify as kv
from kernels.naming import INTERPRET_DEVICE, config_file_name, load_config_file
from kernels.reference import MAX_RELATIVE_ERROR, random_operands, reference_matmul
from kernels.search_space import Config, vllm_default_config

CONFIG = yaml.safe_load(TEST_CONFIG.read_text())
SHAPES = sorted(tuple(s) for s in CONFIG["shapes"])
BATCHES = sorted(CONFIG["batch_sizes"])
BLOCK = (128, 128)
PLOTS = ("speedup_default", "speedup_compare", "roofline", "cublas", "times")
# compare_dir holds a file for the first shape only (keys 1 and 64), and one for the second shape
# named for another device, which the naming rule must not pick.
COMPARED = SHAPES[0]
COMPARE_KEYS = {1: Config(16, 64, 128, 1, 4, 2), 64: Config(32, 128, 64, 1, 4, 3)}


def job_count(text: str, rule: str) -> int:
    m = re.search(rf"^{rule}\s+(\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def results(workdir):
    return workdir / "results" / INTERPRET_DEVICE


@pytest.fixture(scope="module")
def verified(tmp_path_factory):
    """Tune, verify (through `verify: true`, the default target) and build the report, once."""
    workdir = tmp_path_factory.mktemp("verify")
    compare = workdir / "vllm_configs"
    compare.mkdir()
    (compare / config_file_name(*COMPARED, INTERPRET_DEVICE, BLOCK)).write_text(
        json.dumps({str(m): c.as_dict() for m, c in COMPARE_KEYS.items()}))
    (compare / config_file_name(*SHAPES[1], "NVIDIA_H100_80GB_HBM3", BLOCK)).write_text(
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
    assert len(list((workdir / "logs" / INTERPRET_DEVICE / "verify").glob("N*_K*.log"))) == len(SHAPES)


def test_verify_tsv_columns_and_checks(verified):
    workdir, _ = verified
    df = kv.read_rows(results(workdir) / "verify.tsv")
    assert tuple(df.columns) == kv.COLUMNS
    assert sorted(zip(df["N"], df["K"], df["M"])) == [(n, k, m) for n, k in SHAPES for m in BATCHES]
    default = vllm_default_config(BLOCK).label()
    for row in df.itertuples():
        tuned = load_config_file(results(workdir) / "configs" / config_file_name(row.N, row.K, INTERPRET_DEVICE, BLOCK))
        assert row.tuned_config == tuned[row.M].label()
        assert row.default_config == default
        for name in ("tuned", "default"):
            assert getattr(row, f"{name}_status") == "ok"
            assert 0 < getattr(row, f"{name}_rel_error") <= MAX_RELATIVE_ERROR
            assert getattr(row, f"{name}_us") > 0
        assert row.speedup_vs_default == pytest.approx(row.default_us / row.tuned_us, rel=1e-4)
        # No GPU: cuBLAS and the roofline are skipped, and say so.
        assert row.cublas_status == "skipped" and "interpreter" in row.cublas_note
        assert math.isnan(row.cublas_us) and math.isnan(row.speedup_vs_cublas)
        assert math.isnan(row.roofline_us) and row.roofline_note.startswith("skipped")
        assert math.isnan(row.pct_roofline)
        assert row.bytes > 0 and row.flops == 2 * row.M * row.N * row.K
    # The per-shape TSVs hold the same rows.
    parts = pd.concat([kv.read_rows(results(workdir) / "verify" / f"N{n}_K{k}.tsv") for n, k in SHAPES])
    assert len(parts) == len(df)


def test_compare_dir_by_naming_rule_and_nearest_key(verified):
    workdir, _ = verified
    df = kv.read_rows(results(workdir) / "verify.tsv").set_index(["N", "K", "M"])
    name = config_file_name(*COMPARED, INTERPRET_DEVICE, BLOCK)
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
        assert config_file_name(*SHAPES[1], INTERPRET_DEVICE, BLOCK) in row["compare_note"]


def test_report_has_plots_and_summary(verified):
    workdir, _ = verified
    html = (workdir / "report.html").read_text()
    for plot in PLOTS:
        m = re.search(rf"data:image/png;charset=utf8;filename={plot}\.png;base64,([A-Za-z0-9+/=]+)", html)
        assert m, f"{plot}.png not in the report"
        assert base64.b64decode(m.group(1)).startswith(b"\x89PNG")
        assert (results(workdir) / "verify" / f"{plot}.png").stat().st_size > 5000
    # The summary table is rendered in its caption, the merged TSV attached.
    summary = pd.read_csv(results(workdir) / "verify" / "summary.tsv", sep="\t", keep_default_na=False)
    assert list(summary["shape"]) == [f"N={n} K={k}" for n, k in SHAPES] + ["all"]
    total = summary.iloc[-1]
    assert total["vs_default_geomean"].endswith("x") and " at N=" in total["vs_default_worst"]
    assert total["vs_cublas_geomean"] == "skipped" and total["roofline_median_pct"] == "skipped"
    assert "vs_default_geomean</th>" in html and total["vs_default_geomean"] in html
    assert "filename=verify.tsv" in html and "filename=summary.tsv" in html
    assert "Interpreter backend" in html
    assert "system-message" not in html  # no docutils error in a caption


def test_wrong_contender_is_reported_and_not_timed(verified, tmp_path):
    src, _ = verified
    workdir = tmp_path / "copy"
    shutil.copytree(src, workdir, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    target = results(workdir) / "verify" / f"N{COMPARED[0]}_K{COMPARED[1]}.tsv"
    target.unlink()
    run = snakemake(workdir, "--cores", "2", str(target.relative_to(workdir)),
                    env={kv.INJECT_WRONG_ENV: "default,compare"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert job_count(run.stderr, "verify") == 1 and job_count(run.stderr, "tune") == 0
    df = kv.read_rows(target)
    assert (df["tuned_status"] == "ok").all() and (df["tuned_us"] > 0).all()
    for name in ("default", "compare"):
        assert (df[f"{name}_status"] == "wrong_result").all()
        assert df[f"{name}_us"].isna().all() and df[f"speedup_vs_{name}"].isna().all()
        assert (df[f"{name}_rel_error"] > MAX_RELATIVE_ERROR).all()
        assert df[f"{name}_note"].str.contains("not timed").all()


def test_dry_run_targets_and_switch(tmp_path):
    """verify_all adds one verify job per shape; `verify: true` (benchmarks/configs/verify_tp8.yaml) adds
    it to the default target; a compare_dir that is no folder stops the run."""
    base = ["-n", "--cores", "8", "--resources", "gpu=8", "--configfile", str(REPO / "config" / "config.yaml")]
    dev = ["--config", "device_name=NVIDIA_H100_80GB_HBM3"]
    run = snakemake(tmp_path, "verify_all", *base, *dev)
    assert run.returncode == 0, run.stderr[-2000:]
    shapes = job_count(run.stdout, "aggregate")
    assert shapes > 0 and job_count(run.stdout, "verify") == shapes
    assert job_count(run.stdout, "verify_plots") == 1 and job_count(run.stdout, "verify_summary") == 1
    run = snakemake(tmp_path, *base, *dev)
    assert run.returncode == 0 and job_count(run.stdout, "verify") == 0
    run = snakemake(tmp_path, *base, str(REPO / "benchmarks" / "configs" / "verify_tp8.yaml"), *dev)
    assert run.returncode == 0, run.stderr[-2000:]
    assert job_count(run.stdout, "verify") == 2 and job_count(run.stdout, "tune") == 2 * 18
    run = snakemake(tmp_path, *base, *dev, f"compare_dir={tmp_path / 'nowhere'}")
    assert run.returncode != 0 and "compare_dir: " in run.stdout + run.stderr


# ---------------------------------------------------------------------------------------------
# cuBLAS contender against a fake torch._scaled_mm on CPU, which checks the scale layouts as torch
# does and reads scale_b the way cuBLAS does (ceil(K/128) padded to 4 in memory).


def _cdiv(a, b):
    return -(-a // b)


def _fits(scale, dim, size, stride):
    return scale.size(dim) == size and (size <= 1 or scale.stride(dim) == stride)


def fake_scaled_mm(padded_check: bool):
    """torch._scaled_mm for blockwise 1x128 x 128x128; padded_check: torch after pytorch#166752."""

    def scaled_mm(a, b, scale_a, scale_b, out_dtype=None, **_):
        M, K = a.shape
        N = b.shape[1]
        groups, nb = _cdiv(K, 128), _cdiv(N, 128)
        padded = _cdiv(groups, 4) * 4
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


def cublas_outcome(M, N, K, monkeypatch, padded_check=True):
    monkeypatch.setattr(torch, "_scaled_mm", fake_scaled_mm(padded_check), raising=False)
    ops = random_operands(M, N, K, BLOCK, seed=1)
    ref = reference_matmul(ops)
    weights = [(ops.B, ops.Bs)]
    settings = kv.VerifySettings(backend="interpret")
    try:
        layout, launch = kv._cublas_launcher(ops, weights, torch.bfloat16)
    except NotImplementedError as e:
        return kv.Outcome(kv.UNSUPPORTED, note=str(e)), None
    return kv._check_and_time("cublas", launch, ref, 1, settings, set()), layout


@pytest.mark.parametrize("K", [512, 256, 2304])
def test_cublas_layout_right_on_current_torch(K, monkeypatch):
    outcome, layout = cublas_outcome(16, 256, K, monkeypatch)
    assert outcome.status == "ok" and outcome.rel_error < 1e-2 and outcome.time_us > 0
    assert ("padded" in layout) == (_cdiv(K, 128) % 4 != 0)


def test_cublas_wrong_scales_on_older_torch_are_caught(monkeypatch):
    # Older torch takes the unpadded weight scales; cuBLAS reads them padded: wrong numbers, not timed.
    outcome, layout = cublas_outcome(16, 384, 2304, monkeypatch, padded_check=False)
    assert layout == "scale_b unpadded"
    assert outcome.status == "wrong_result" and math.isnan(outcome.time_us)
    outcome, _ = cublas_outcome(16, 384, 512, monkeypatch, padded_check=False)
    assert outcome.status == "ok"


def test_cublas_refusal_is_unsupported(monkeypatch):
    outcome, _ = cublas_outcome(1, 256, 512, monkeypatch)
    assert outcome.status == "unsupported" and "NOT_SUPPORTED" in outcome.note
    assert math.isnan(outcome.time_us)


def test_roofline_is_the_slower_bound():
    limits = kv.DeviceLimits(bandwidth_gbs=3000.0, fp8_peak_tflops=1000.0)
    M, N, K = 1, 4608, 7168
    moved = M * K + N * K + 4 * M * 56 + 4 * 36 * 56 + 2 * M * N
    assert kv.point_bytes(M, N, K, BLOCK, 2) == moved
    assert kv.roofline_us(M, N, K, BLOCK, 2, limits) == pytest.approx(moved / 3000e9 * 1e6)
    M = 4096
    assert kv.roofline_us(M, N, K, BLOCK, 2, limits) == pytest.approx(2 * M * N * K / 1000e12 * 1e6)
    assert math.isnan(kv.roofline_us(M, N, K, BLOCK, 2, kv.DeviceLimits()))


def test_gpu_branch_with_cpu_stand_ins(monkeypatch):
    """verify_point's GPU branch (weight copies, timing through kernels.timing, cuBLAS, roofline,
    ratios) with CPU stand-ins for CUDA: the interpreter runs the kernel, a fake cuBLAS (older torch:
    unpadded scales accepted, read padded) is wrong at ceil(K/128) = 18 and must not be timed."""
    import time

    from kernels import timing

    launched = []

    def fake_time_batch(launch, launches, copies):
        started = time.perf_counter()
        for i in range(launches):
            launch(i % copies)
            launched.append(i % copies)
        return (time.perf_counter() - started) * 1e6 / launches

    class Props:
        L2_cache_size = 1 << 20

    monkeypatch.setattr(kv, "torch_device", lambda backend: "cpu")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setattr(timing, "time_batch", fake_time_batch)
    monkeypatch.setattr(torch, "_scaled_mm", fake_scaled_mm(padded_check=False), raising=False)
    settings = kv.VerifySettings(backend="cuda", budget_us=1.0, repeats=1)
    limits = kv.DeviceLimits(bandwidth_gbs=3000.0, fp8_peak_tflops=1000.0)
    tuned = Config(16, 128, 128, 1, 4, 2)
    shape = kv.ShapeInputs(N=256, K=2304, tuned={16: tuned}, extra={"device_name": "x", "backend": "cuda"})
    row = kv.verify_point(shape, 16, settings, limits, log=lambda s: None)
    assert len(set(launched)) > 1  # weight copies rotate
    assert row["tuned_status"] == "ok" and row["default_status"] == "ok" and row["compare_status"] == "missing"
    assert row["cublas_status"] == "wrong_result" and math.isnan(row["cublas_us"])
    assert "unpadded" in row["cublas_config"] and math.isnan(row["speedup_vs_cublas"])
    assert row["roofline_us"] == pytest.approx(kv.roofline_us(16, 256, 2304, BLOCK, 2, limits))
    assert row["pct_roofline"] == pytest.approx(100 * row["roofline_us"] / row["tuned_us"])
    assert row["speedup_vs_default"] == pytest.approx(row["default_us"] / row["tuned_us"])
