"""End to end through the real `snakemake` command on the CI config (Triton interpreter on CPU)."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import yaml
from conftest import DEV, REPO, SNAKEMAKE, check_complete, config_json, job_count, job_env, snakemake, tsv, tsvs

from w8a8_tuner.results.naming import load_config_file
from w8a8_tuner.results.tsv import read_tsv

pytestmark = pytest.mark.e2e

CONFIG = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
SHAPES = [tuple(s) for s in CONFIG["shapes"]]
BATCHES = CONFIG["batch_sizes"]


def check_outputs(workdir):
    for n, k in SHAPES:
        path = config_json(workdir, n, k)
        assert path.exists(), path
        configs = load_config_file(path)
        assert sorted(configs) == sorted(BATCHES), f"{path} lacks batch sizes"
        assert list(json.loads(path.read_text())) == [str(m) for m in sorted(BATCHES)]
        for m, best in configs.items():
            _, df = read_tsv(tsv(workdir, n, k, m))
            assert len(df) == 4 and (df["status"] == "ok").all()
            assert best in set(df["config"])


def test_end_to_end_and_nothing_left_to_do(workdir):
    run = snakemake(workdir, "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    check_outputs(workdir)
    assert job_count(run.stderr, "tune") == len(SHAPES) * len(BATCHES)
    assert job_count(run.stderr, "aggregate") == len(SHAPES)
    # One line per finished point: shape, batch size, winner, time, points done, time left. Found anywhere on a
    # line: Snakemake writes a multi-line message and its final newline apart, and a job's line can fall between.
    lines = re.findall(r"tuned N=\d+ K=\d+ M=\d+: [^\n]*", run.stderr)
    points = sorted(tuple(int(v) for v in re.match(r"tuned N=(\d+) K=(\d+) M=(\d+)", line).groups())
                    for line in lines)
    assert points == sorted((n, k, m) for n, k in SHAPES for m in BATCHES), lines
    assert any(f"| {len(SHAPES) * len(BATCHES)}/{len(SHAPES) * len(BATCHES)} points" in line for line in lines)
    assert any("left" in line for line in lines)
    again = snakemake(workdir, "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # a log per job
    logs = workdir / "logs" / DEV
    assert len(list((logs / "tune").rglob("M*.log"))) == len(SHAPES) * len(BATCHES)
    assert len(list((logs / "aggregate").glob("N*_K*.log"))) == len(SHAPES)
    assert (logs / "tune_settings.log").exists()
    check_complete(workdir)


def test_resume_after_snakemake_is_killed(workdir):
    proc = subprocess.Popen([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=job_env(workdir),
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(tsvs(workdir)) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its running job, mid-sweep
    proc.wait()
    done_before = len(tsvs(workdir))
    assert 2 <= done_before < len(SHAPES) * len(BATCHES)
    # Nothing half-written under a final name
    for path in tsvs(workdir):
        read_tsv(path)
    run = snakemake(workdir, "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    check_outputs(workdir)
    # Finished leaves were not run again. The one job in flight (--cores 1) may have renamed its
    # TSV into place before snakemake recorded it as done; snakemake then re-runs that one.
    missing = len(SHAPES) * len(BATCHES) - done_before
    assert missing <= job_count(run.stderr, "tune") <= missing + 1


def test_cuda_backend_without_gpu_stops_with_hint(workdir):
    cfg = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    cfg["backend"] = "cuda"
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = snakemake(workdir, "--cores", "2")
    assert run.returncode != 0
    assert "no GPU is visible" in run.stderr and ".test/config.yaml" in run.stderr
    assert not (workdir / "results").exists()


def test_dry_run_default_config_counts(tmp_path):
    """The default config, with device_name set: 144 tune and 8 aggregate jobs; 28 shapes over tp 1,2,4,8
    (DeepSeek-V3's counts in tests/test_shapes.py)."""
    run = snakemake(tmp_path, "-n", "--cores", "8", "--resources", "gpu=8", "--config",
                    "device_name=NVIDIA_H100_80GB_HBM3")
    assert run.returncode == 0, run.stderr[-2000:]
    assert job_count(run.stdout, "tune") == 8 * 18 and job_count(run.stdout, "aggregate") == 8
    assert job_count(run.stdout, "compile") == 6
    extra = tmp_path / "tp.yaml"
    extra.write_text("tp_sizes: [1, 2, 4, 8]\n")
    run = snakemake(tmp_path, "-n", "--cores", "8", "--resources", "gpu=8", "--configfile", str(extra),
                    "--config", "device_name=NVIDIA_H100_80GB_HBM3")
    assert run.returncode == 0, run.stderr[-2000:]
    assert job_count(run.stdout, "tune") == 28 * 18 and job_count(run.stdout, "aggregate") == 28
    assert not [p for p in (tmp_path / "results").rglob("*") if p.is_file()], "a dry run wrote results"
    # The dry run is short: no per-job blocks, no "Shell command: None".
    assert "Shell command: None" not in run.stdout and len(run.stdout.splitlines()) < 200, len(run.stdout.splitlines())


def test_device_output_paths(workdir):
    """A shape's JSON lands in results/<device>/configs/ under the engines' file name."""
    run = snakemake(workdir, "--cores", "2", "--config", "shapes=[[256,512]]", "batch_sizes=[1]")
    assert run.returncode == 0, run.stderr[-3000:]
    assert [p.name for p in (workdir / "results" / DEV / "configs").iterdir()] == [config_json(workdir, 256, 512).name]


def test_an_extra_region_tunes_more_configs_where_it_applies_and_the_json_is_made(workdir):
    """search_space_extra adds configs at its batch sizes only: each TSV holds its own batch size's space and
    aggregate takes both (the first H200 sweep with the default region failed there at every M > 64)."""
    region = {"min_M": 1, "max_M": 1, "BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [32], "BLOCK_SIZE_K": [128],
              "GROUP_SIZE_M": [1], "num_warps": [2], "num_stages": [2]}
    (workdir / "extra.yaml").write_text(yaml.safe_dump({"shapes": [[256, 512]], "batch_sizes": [1, 16],
                                                        "search_space_extra": [region]}))
    run = snakemake(workdir, "--cores", "2", "--configfile", str(workdir / "extra.yaml"))
    assert run.returncode == 0, run.stderr[-3000:]
    _, at_1 = read_tsv(tsv(workdir, 256, 512, 1))
    _, at_16 = read_tsv(tsv(workdir, 256, 512, 16))
    assert len(at_1) == 5 and len(at_16) == 4
    assert "M16_N32_K128_G1_w2_s2" in {c.label() for c in at_1["config"]}
    assert sorted(load_config_file(config_json(workdir, 256, 512))) == [1, 16]


def test_compile_jobs_need_no_gpu(workdir):
    """For a device whose architecture its name gives, compile jobs build real binaries (sm90) on this CPU-only
    machine, through the real snakemake; no tune job depends on them."""
    cfg = {"device_name": "NVIDIA_H100_80GB_HBM3", "backend": "cuda", "shapes": [[256, 512]], "batch_sizes": [16],
           "search_space": {**CONFIG["search_space"], "BLOCK_SIZE_N": [64]}, "search_space_extra": []}
    (workdir / "gpu.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(workdir / "gpu.yaml"))
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert job_count(dry.stdout + dry.stderr, "compile") == 1 and job_count(dry.stdout + dry.stderr, "tune") == 1
    run = snakemake(workdir, "compile_all", "--cores", "2", "--configfile", str(workdir / "gpu.yaml"),
                    env=job_env(workdir, {"CUDA_VISIBLE_DEVICES": ""}))
    assert run.returncode == 0, run.stderr[-3000:]
    (table,) = (workdir / "results" / "NVIDIA_H100_80GB_HBM3" / "tune").glob("*/compile/*.tsv")
    rows = table.read_text().splitlines()[1:]
    assert len(rows) == 2 and all("\tok\t" in r for r in rows)
    cache = workdir / "results" / "NVIDIA_H100_80GB_HBM3" / "triton_cache"
    assert len(list(cache.rglob("*.cubin"))) == 2
    assert {p.parent.name for p in cache.rglob("w8a8_compiled/*/*")} == {"sm90"}


def test_a_killed_compiler_is_not_cached_and_forcerun_compiles_again(workdir):
    """A ptxas killed mid-compile (here: every time, by a wrapper, as an out-of-memory kill would) is reported in the
    compile table as the compiler's failure, not cached; `--forcerun compile` then compiles the configs (before:
    they stayed compile_error through --forcerun and every later tune job)."""
    from triton import knobs

    cfg = {"device_name": "NVIDIA_H100_80GB_HBM3", "backend": "cuda", "shapes": [[256, 512]], "batch_sizes": [16],
           "search_space": {**CONFIG["search_space"], "BLOCK_SIZE_N": [64]}, "search_space_extra": []}
    (workdir / "gpu.yaml").write_text(yaml.safe_dump(cfg))
    killing = workdir / "ptxas"
    killing.write_text(f"""#!/bin/bash
case " $* " in *" --version "*) exec {knobs.nvidia.ptxas_blackwell.path} "$@";; esac
kill -9 $$
""")
    killing.chmod(0o755)
    args = ("compile_all", "--cores", "2", "--configfile", str(workdir / "gpu.yaml"))
    env = {"CUDA_VISIBLE_DEVICES": ""}
    killed = snakemake(workdir, *args, env=job_env(workdir, {**env, "TRITON_PTXAS_BLACKWELL_PATH": str(killing)}))
    assert killed.returncode == 0, killed.stderr[-3000:]
    (table,) = (workdir / "results" / "NVIDIA_H100_80GB_HBM3" / "tune").glob("*/compile/*.tsv")
    rows = table.read_text().splitlines()[1:]
    assert len(rows) == 2 and all("\tcompile_error\t" in r and "ptxas killed by SIGKILL" in r and "not cached" in r
                                  for r in rows), rows
    assert not list((workdir / "results").rglob("w8a8_compiled/*/*/*.json"))  # no outcome cached
    again = snakemake(workdir, *args, "--forcerun", "compile", env=job_env(workdir, env))
    assert again.returncode == 0, again.stderr[-3000:]
    rows = table.read_text().splitlines()[1:]
    assert len(rows) == 2 and all("\tok\t" in r for r in rows), rows
