"""Cluster execution through profiles/slurm, against a real single-node SLURM on this machine.

tests/slurm/cluster.py starts munged, slurmctld and slurmd (root; packages slurm-wlm and
munge, which .ci/run installs). The node has two GPUs as SLURM generic resources, backed
by dummy device files: SLURM allocates them and sets CUDA_VISIBLE_DEVICES per job as on a
GPU cluster, while the kernel runs in Triton's interpreter (.test/config.yaml).

The sweep runs through the real profile, with only what this test cluster needs changed
on the command line: its partition, no account (it has no accounting), squeue as the
status command, short latencies, and one thread per tune job (the node has 2 CPUs; the
profile's set-threads would never be scheduled). The same sweep also runs locally
through profiles/local, and the outputs are compared.

Skipped, saying why, only where root or apt-get is missing; with CI=true it never skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from itertools import combinations
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TEST_CONFIG, job_count
from slurm.cluster import PARTITION, SlurmCluster, job_ids_in, missing_requirements

from w8a8_tuner.results.naming import INTERPRET_DEVICE
from w8a8_tuner.results.tsv import read_tsv

pytestmark = pytest.mark.e2e

SLURM_PROFILE = REPO / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "profiles" / "local"
CONFIG = yaml.safe_load(TEST_CONFIG.read_text())
POINTS = sorted((n, k, m) for n, k in CONFIG["shapes"] for m in CONFIG["batch_sizes"])
RESULTS = Path("results") / INTERPRET_DEVICE

# One config per point. Interpreter timings are noise, so with the CI search space the
# winner of a point may differ between any two runs, local or not, and a comparison of
# the JSON files would test luck. With a single candidate, everything in the outputs
# (which files, which batch-size keys, their order, the launch parameters, the format) is
# decided by the workflow alone: byte-equal JSON files from the SLURM run and the local
# run mean the cluster run produced exactly what the local one does. That the winner is
# the fastest valid candidate is tested locally (test_tuner.py, test_workflow.py).
ONE_CONFIG = {"search_space": {"BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [64], "BLOCK_SIZE_K": [128],
                               "GROUP_SIZE_M": [1], "num_warps": [4], "num_stages": [2]},
              "search_space_extra": []}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require_slurm() -> None:
    why = missing_requirements()
    if why is None:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        message = f"a test SLURM cluster needs root and apt-get here: {why}"
        if _in_ci():
            pytest.fail(f"{message} (CI=true: this test must run, not skip)")
        pytest.skip(message)
    # Fallback for a bare `pytest` as root; .ci/run installs the packages before pytest.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    why = missing_requirements()
    assert why is None, why


def run_snakemake(workdir: Path, *args: str, timeout: int = 600, env_extra: dict | None = None
                  ) -> subprocess.CompletedProcess:
    """The real `snakemake` command in `workdir`, in the environment a user's shell would give it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET")
           and not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    # Node-local GPU slot locks, per test. In interpret mode a job takes a slot (and logs
    # CUDA_VISIBLE_DEVICES with acquired_at/released_at) only with fake GPUs; two, as the
    # node has, so that slot locks never hold back a job SLURM placed on the other GPU.
    env.update(W8A8_TUNER_LOCK_DIR=str(workdir / "locks"), W8A8_TUNER_FAKE_GPUS="2", **(env_extra or {}))
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=workdir)


def deployment(folder: Path) -> Path:
    (folder / "config").mkdir(parents=True)
    shutil.copy(TEST_CONFIG, folder / "config" / "config.yaml")
    (folder / "one_config.yaml").write_text(yaml.safe_dump(ONE_CONFIG))
    return folder


CONFIGFILES = ["--configfile", "config/config.yaml", "one_config.yaml"]


def test_profile_default_resources():
    """What the test overrides below exists in the profile, marked for the user to edit."""
    text = (SLURM_PROFILE / "config.yaml").read_text()
    profile = yaml.safe_load(text)
    assert profile["executor"] == "slurm"
    keys = [entry.split("=", 1)[0] for entry in profile["default-resources"]]
    assert {"slurm_partition", "slurm_account", "runtime", "mem_mb", "cpus_per_task"} <= set(keys)
    for key in ("slurm_partition", "slurm_account"):
        line = next(s for s in text.splitlines() if s.strip().startswith(f"- {key}="))
        assert "EDIT" in line, line
    assert profile["set-resources"]["tune"]["gpu"] == 1
    # compile jobs need no GPU: a partition of their own, marked for the user to edit
    line = next(s for s in text.splitlines() if s.strip().startswith("slurm_partition:"))
    assert "EDIT" in line and profile["set-resources"]["compile"]["slurm_partition"].startswith("EDIT_ME"), line
    assert yaml.safe_load((LOCAL_PROFILE / "config.yaml").read_text())["cores"] == "all"


def test_cluster_run_needs_device_name(tmp_path):
    """On a head node without GPU, `device_name: auto` stops before any job, saying what to set."""
    folder = deployment(tmp_path)
    cfg = yaml.safe_load((folder / "config" / "config.yaml").read_text())
    cfg["backend"] = "cuda"
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    # CUDA_VISIBLE_DEVICES="": a head node without GPU, even where this test runs on a GPU machine.
    run = run_snakemake(folder, "--profile", str(SLURM_PROFILE), *CONFIGFILES, timeout=120,
                        env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode != 0
    out = run.stderr
    assert "device_name" in out and "profiles/slurm" in out and "head node" in out, out[-2000:]
    assert not job_ids_in(run.stderr) and not (folder / ".snakemake" / "slurm_logs").exists()


# --- the real cluster --------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _require_slurm()
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    try:
        yield c
    finally:
        c.stop()  # the daemons it started, by pid, and its files in /etc/slurm


def slurm_args() -> list[str]:
    """profiles/slurm plus what this test cluster needs (see the module docstring)."""
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    resources = []
    for entry in profile["default-resources"]:
        key = entry.split("=", 1)[0]
        if key == "slurm_account":
            continue  # no accounting on the test cluster
        resources.append(f"slurm_partition={PARTITION}" if key == "slurm_partition" else entry)
    # set-resources as the profile has them, every partition this cluster's (given here, they replace the profile's)
    per_rule = [f"{rule}:{name}={PARTITION if name == 'slurm_partition' else value}"
                for rule, values in profile["set-resources"].items() for name, value in values.items()]
    return ["--profile", str(SLURM_PROFILE), *CONFIGFILES, "--default-resources", *resources,
            "--set-resources", *per_rule, "--set-threads", "tune=1", "--slurm-no-account",
            "--slurm-status-command", "squeue",
            "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
            "--latency-wait", "5"]


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    folder = deployment(tmp_path_factory.mktemp("slurm_sweep"))
    run = run_snakemake(folder, *slurm_args())
    assert run.returncode == 0, f"{run.stderr[-4000:]}\n{cluster.daemon_logs()}"
    return folder, run


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    folder = deployment(tmp_path_factory.mktemp("local_sweep"))
    run = run_snakemake(folder, "--profile", str(LOCAL_PROFILE), *CONFIGFILES)
    assert run.returncode == 0, run.stderr[-4000:]
    return folder, run


def scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(re.findall(r"(\S+?)=(\S*)", out.stdout))


def test_every_tune_job_went_through_sbatch(slurm_run):
    folder, run = slurm_run
    ids = job_ids_in(run.stderr)
    assert len(ids) == len(set(ids)) == len(POINTS), \
        f"{len(ids)} SLURM jobs for {len(POINTS)} points:\n{run.stderr[-3000:]}"
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    mem_expr = next(e.split("=", 1)[1] for e in profile["default-resources"] if e.startswith("mem_mb="))
    seen = set()
    for job_id in ids:
        job = scontrol(job_id)
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Partition"] == PARTITION and job["TresPerJob"] == "gres:gpu:1", job  # gpu=1 -> --gpus=1
        assert job["CPUs/Task"] == "1" and job["MinMemoryNode"] == f"{eval(mem_expr, {'threads': 1})}M", job
        assert Path(job["WorkDir"]) == folder
        n, k, m = map(int, re.fullmatch(r"rule_tune_wildcards_(\d+)_(\d+)_(\d+)", job["Comment"]).groups())
        seen.add((n, k, m))
        # SLURM's own log of the job, kept by the profile (slurm-keep-successful-logs)
        slurm_log = folder / ".snakemake" / "slurm_logs" / "rule_tune" / f"{n}_{k}_{m}" / f"{job_id}.log"
        assert slurm_log.exists() and "rule tune:" in slurm_log.read_text(), slurm_log
    assert seen == set(POINTS)
    # The light rules ran on the head node, not through SLURM.
    assert not (folder / ".snakemake" / "slurm_logs" / "rule_aggregate").exists()
    assert job_count(run.stderr, "aggregate") == len(CONFIG["shapes"])


def tune_log_records(folder: Path) -> list[dict]:
    records = []
    for log in sorted((folder / "logs" / INTERPRET_DEVICE / "tune").rglob("M*.log")):
        text = log.read_text()
        got = re.search(r"CUDA_VISIBLE_DEVICES=(\S+) acquired_at ([\d.]+)", text)
        released = re.search(r"released_at ([\d.]+)", text)
        assert got and released, f"{log}:\n{text}"
        records.append({"log": log.name, "gpu": got.group(1), "start": float(got.group(2)),
                        "end": float(released.group(1))})
    return records


def test_concurrent_jobs_saw_distinct_gpus(slurm_run):
    folder, _ = slurm_run
    records = tune_log_records(folder)
    assert len(records) == len(POINTS)
    # Set by SLURM (the test's environment has no CUDA_VISIBLE_DEVICES): one of the node's two GPUs.
    assert {r["gpu"] for r in records} <= {"0", "1"}, records
    overlapping = [(a, b) for a, b in combinations(records, 2) if a["start"] < b["end"] and b["start"] < a["end"]]
    # Two GPUs, six jobs submitted at once: SLURM runs two at a time. Without any overlap the
    # check below would prove nothing.
    assert overlapping, f"no two tune jobs ran at the same time: {records}"
    for a, b in overlapping:
        assert a["gpu"] != b["gpu"], f"jobs running at the same time shared GPU {a['gpu']}: {a} {b}"


def outputs(folder: Path) -> tuple[dict, dict]:
    jsons = {p.name: p.read_bytes() for p in (folder / RESULTS / "configs").glob("*.json")}
    tsvs = {}
    for p in (folder / RESULTS / "tune").rglob("*.tsv"):
        meta, df = read_tsv(p)
        tsvs[str(p.relative_to(folder / RESULTS))] = (meta["device_name"], meta["backend"],
                                                       df[["config", "status"]].values.tolist())
    return jsons, tsvs


def test_outputs_equal_local_run(slurm_run, local_run):
    jsons, tsvs = outputs(slurm_run[0])
    local_jsons, local_tsvs = outputs(local_run[0])
    assert len(jsons) == len(CONFIG["shapes"]) and len(tsvs) == len(POINTS)
    assert jsons == local_jsons  # byte for byte: the single candidate makes them deterministic
    assert tsvs == local_tsvs    # the same candidates with the same statuses, point by point
    for data in jsons.values():
        assert list(json.loads(data)) == [str(m) for m in sorted(CONFIG["batch_sizes"])]


def test_same_command_resumes(slurm_run, local_run):
    """A point whose job failed or was killed (no TSV, so no JSON for its shape): the same
    command tunes only that point, through SLURM, and merges its shape again."""
    folder, _ = slurm_run
    n, k, m = POINTS[0]
    [point_tsv] = (folder / RESULTS / "tune").glob(f"*/N{n}_K{k}/M{m}.tsv")
    point_tsv.unlink()
    for json_file in (folder / RESULTS / "configs").glob(f"N={n},K={k},*.json"):
        json_file.unlink()
    again = run_snakemake(folder, *slurm_args())
    assert again.returncode == 0, again.stderr[-4000:]
    ids = job_ids_in(again.stderr)
    assert len(ids) == 1 and scontrol(ids[0])["Comment"] == f"rule_tune_wildcards_{n}_{k}_{m}", again.stderr[-3000:]
    assert outputs(folder) == outputs(local_run[0])
    done = run_snakemake(folder, *slurm_args())
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr
    assert not job_ids_in(done.stderr)
