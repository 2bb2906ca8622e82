"""The persistent worker, with real worker processes (interpreter): one job's failure never fails another
job waiting for the same worker, and a worker never serves jobs of code it does not run."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import stop_workers, validated, wait_for

from w8a8_tuner.jobs import slots, worker
from w8a8_tuner.plan.settings import result_settings
from w8a8_tuner.plan.sweep import make_plan
from w8a8_tuner.results.tsv import read_tsv


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(slots.LOCK_DIR_ENV, str(tmp_path / "locks"))
    yield tmp_path / "locks"
    stop_workers(tmp_path)  # workers are found by this lock folder in their environment


def request(tmp_path: Path, name: str, n: int = 256, k: int = 256, m: int = 16, space=None) -> dict:
    cfg = validated(backend="interpret", shapes=[[n, k]], batch_sizes=[m], search_space=space or {
        "BLOCK_SIZE_M": [16, 32], "BLOCK_SIZE_N": [64, 128], "BLOCK_SIZE_K": [128], "GROUP_SIZE_M": [1],
        "num_warps": [4], "num_stages": [2]}, search_space_extra=[], tuning={"estimate_rounds": 1, "screen_repeats": 1,
                                                      "remeasure_repeats": 1, "top_k": 2, "screen_min": 2})
    settings = result_settings(make_plan(cfg), cfg["tuning"])
    folder = tmp_path / name
    folder.mkdir()
    return {"tsv": str(folder / f"M{m}.tsv"), "log": str(folder / f"M{m}.log"), "N": n, "K": k, "M": m,
            "settings": settings, "triton_cache": str(tmp_path / "cache"), "compile_workers": 1, "slot": "cpu"}


class Job(threading.Thread):
    """A job handing its point to the slot's worker, as w8a8_tuner.jobs.client does."""

    def __init__(self, req, tmp_path):
        super().__init__(daemon=True)
        self.req, self.lines, self.error, self.summary = req, [], None, None
        self.cache = str(tmp_path / "cache")

    def run(self):
        Path(self.req["log"]).touch()
        try:
            self.summary = worker.submit(self.req, None, "interpret", self.cache, 120, self.lines.append)
        except Exception as e:  # noqa: BLE001 - recorded for the test
            self.error = e


def taken(job: Job) -> bool:
    return any("took the point" in line for line in job.lines)


def test_queued_job_survives_the_worker_being_killed(tmp_path, lock_dir):
    """kill -9 of the worker while it serves one job and another waits for it: the served job fails with a
    clear WorkerError; the waiting one is served by a new worker (before: a bare ConnectionResetError)."""
    served = Job(request(tmp_path, "a", m=33, space={"BLOCK_SIZE_M": [16, 32, 64], "BLOCK_SIZE_N": [64, 128],
                                                      "BLOCK_SIZE_K": [64, 128], "GROUP_SIZE_M": [1],
                                                      "num_warps": [4], "num_stages": [2, 3]}), tmp_path)
    served.start()
    wait_for(lambda: taken(served), 120)
    [pid] = wait_for(lambda: [int(line.split()[2]) for line in served.lines if "took the point" in line], 5)
    waiting = Job(request(tmp_path, "b"), tmp_path)
    waiting.start()
    time.sleep(1.0)  # connected and waiting in the worker's queue
    assert not taken(waiting)
    os.kill(pid, signal.SIGKILL)
    served.join(120)
    waiting.join(300)
    assert isinstance(served.error, worker.WorkerError) and "exited during the request" in str(served.error)
    assert waiting.error is None, waiting.error
    assert any("started worker" in line for line in waiting.lines) and taken(waiting)
    read_tsv(waiting.req["tsv"])
    assert not Path(served.req["tsv"]).exists()


def test_queued_job_survives_a_fatal_error_of_the_job_before_it(tmp_path, lock_dir):
    """A job whose point fails in a way that ends the worker (here its TSV cannot be written, as on a full
    disk) fails alone, with the file named; the job queued behind it is served by a new worker."""
    failing = request(tmp_path, "a", m=33)
    failing["tsv"] = str(tmp_path / "a" / "no-such-folder" / "M33.tsv")
    first = Job(failing, tmp_path)
    first.start()
    wait_for(lambda: taken(first), 120)
    second = Job(request(tmp_path, "b"), tmp_path)
    second.start()
    first.join(300)
    second.join(300)
    assert isinstance(first.error, worker.WorkerError) and f"cannot write {failing['tsv']}" in str(first.error)
    assert second.error is None, second.error
    read_tsv(second.req["tsv"])


def test_new_code_gets_a_new_worker(tmp_path, monkeypatch):
    """The worker's address includes a hash of the tuner's and the kernel's source: after an edit (or a
    git pull), jobs start a worker running the new code instead of being served by the old one."""
    copy = tmp_path / "src"
    for root in worker.PACKAGE_ROOTS:
        for path in root.rglob("*.py"):
            target = copy / root.name / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    monkeypatch.setattr(worker, "PACKAGE_ROOTS", [copy / r.name for r in worker.PACKAGE_ROOTS])
    before = worker.address("fake0", "interpret", str(tmp_path / "cache"))
    assert worker.address("fake0", "interpret", str(tmp_path / "cache")) == before
    os.utime(copy / "w8a8_tuner" / "jobs" / "point.py")  # touched, not changed: the same worker
    assert worker.address("fake0", "interpret", str(tmp_path / "cache")) == before
    with open(copy / "w8a8_tuner" / "jobs" / "point.py", "a") as f:
        f.write("\n# edited\n")
    assert worker.address("fake0", "interpret", str(tmp_path / "cache")) != before


def test_a_prestarted_worker_serves_the_first_job(tmp_path, lock_dir):
    """A run starts the workers before its first job (onstart): the first job is served by that process, and
    starting again while it serves starts no second one."""
    req = request(tmp_path, "prestart")
    cache = str(tmp_path / "cache")
    cpu = slots.Slot(index=0, uuid="cpu", fd=-1)
    (pid,) = worker.prestart([cpu], "interpret", cache, 120, None, 0)

    def serving():
        sock = worker._connect(worker.address("cpu", "interpret", cache), None, 0)
        if sock is not None:
            sock.close()
        return sock is not None

    wait_for(serving, 60)
    assert worker.prestart([cpu], "interpret", cache, 120, None, 0) == []  # one serves: none started
    job = Job(req, tmp_path)
    job.start()
    job.join(300)
    assert job.error is None and job.summary
    assert f"worker pid {pid} took the point" in job.lines
    assert not any(line.startswith("started worker") for line in job.lines)
    read_tsv(req["tsv"])
