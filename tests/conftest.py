"""Shared test helpers: the real `snakemake` on this repository's workflow in a temporary folder,
where its outputs are, and the processes it starts.

Tests marked `e2e` run the real snakemake command (`pytest -m "not e2e"` runs the unit tests alone).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TEST_CONFIG = REPO / ".test" / "config.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

# The kernel runs under Triton's CPU interpreter unless a GPU is present; the variable must be
# set before triton is first imported.
try:
    import torch

    HAS_GPU = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAS_GPU = False
if not HAS_GPU:
    os.environ["TRITON_INTERPRET"] = "1"

DEVICE = "cuda" if HAS_GPU else "cpu"

from w8a8_tuner.jobs import slots  # noqa: E402
from w8a8_tuner.results.naming import INTERPRET_DEVICE, config_file_name  # noqa: E402

DEV = INTERPRET_DEVICE


def validated(**values) -> dict:
    """A config as the workflow sees it: `values` over the schema's defaults (in-process, no workflow)."""
    from snakemake.utils import validate

    from w8a8_tuner.plan.config import apply_aliases

    config = apply_aliases(yaml.safe_load(yaml.safe_dump(values)))
    validate(config, str(SCHEMA))
    return config


# --- the real snakemake -----------------------------------------------------------------

def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 900, **popen):
    """Run the real `snakemake` command on this repo's workflow inside `workdir`."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=job_env(workdir, env), timeout=timeout, **popen)


def job_env(workdir: Path, extra: dict | None = None) -> dict:
    full = {**os.environ, slots.LOCK_DIR_ENV: str(workdir / "locks"), **(extra or {})}
    full.pop("TRITON_INTERPRET", None)  # the workflow decides per backend
    return full


def start(wd: Path, *args: str, env: dict | None = None, name: str = "run") -> tuple[subprocess.Popen, Path]:
    """Start the real snakemake in the background; its output goes to a file beside the workdir."""
    out = wd.parent / f"{name}.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(wd), *args],
                                stdout=f, stderr=subprocess.STDOUT, env=job_env(wd, env))
    return proc, out


def job_count(text: str, rule: str) -> int:
    """Jobs of `rule` in the 'Job stats' table Snakemake prints before it starts: what it plans to run."""
    m = re.search(rf"^{rule}\s+(\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def make_workdir(root: Path, **changes) -> Path:
    """A deployment folder (root/wd) with the CI config as config/config.yaml, some keys replaced."""
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg.update(changes)
    wd = root / "wd"
    (wd / "config").mkdir(parents=True)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return wd


# Fixtures that run the real snakemake: a test using one is an end-to-end test.
E2E_FIXTURES = {"workdir", "verified"}


def pytest_collection_modifyitems(items):
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def workdir(tmp_path):
    """A deployment folder with the CI config as config/config.yaml."""
    (tmp_path / "config").mkdir()
    shutil.copy(TEST_CONFIG, tmp_path / "config" / "config.yaml")
    return tmp_path


# --- where the outputs are --------------------------------------------------------------

def results(wd: Path) -> Path:
    return wd / "results" / DEV


def points(wd: Path):
    cfg = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    return [tuple(s) for s in cfg["shapes"]], cfg["batch_sizes"]


def tsvs(wd: Path) -> set[Path]:
    """Every point TSV under results/, of any settings fingerprint."""
    return set((results(wd) / "tune").glob("*/N*_K*/M*.tsv"))


def tsv(wd: Path, n, k, m) -> Path:
    """A point's TSV; with several settings folders, the newest."""
    found = sorted((results(wd) / "tune").glob(f"*/N{n}_K{k}/M{m}.tsv"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else results(wd) / "tune" / "none" / f"N{n}_K{k}" / f"M{m}.tsv"


def config_json(wd: Path, n, k) -> Path:
    return results(wd) / "configs" / config_file_name(n, k, DEV, (128, 128), input_type="fp8", engine="vllm")


def check_complete(wd: Path):
    """Every shape's JSON holds every batch size, and each winner is an ok row of its point's TSV."""
    from w8a8_tuner.results.naming import load_config_file
    from w8a8_tuner.results.tsv import read_tsv

    shapes, batches = points(wd)
    for n, k in shapes:
        best = load_config_file(config_json(wd, n, k))
        assert sorted(best) == sorted(batches), f"N={n} K={k}: JSON holds {sorted(best)}"
        for m, c in best.items():
            _, df = read_tsv(tsv(wd, n, k, m))
            assert df.loc[df["config"] == c, "status"].tolist() == ["ok"]


# --- processes ----------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(root: int) -> list[int]:
    children, found, todo = _children_map(), [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


WORKER_MODULE = "w8a8_tuner.jobs.worker"
JOB_MODULE = "w8a8_tuner.jobs.client"


def workers_of(wd: Path) -> list[int]:
    """Persistent tuning workers started for this workdir (found by the lock folder in their environment)."""
    mark = f"{slots.LOCK_DIR_ENV}={wd / 'locks'}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and WORKER_MODULE in cmdline(int(entry)):
            try:
                if mark in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def stop_workers(wd: Path) -> None:
    import signal

    for pid in workers_of(wd):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(what, timeout: float, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what.__doc__ or what}")
