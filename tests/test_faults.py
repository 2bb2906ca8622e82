"""Fault injection and bad input, through the real `snakemake` command (TESTING.md lists the cases).

Every test checks both what the user is told and what is left under results/.
Processes are found through /proc as descendants of the snakemake this test started
(or, for a persistent worker, by the lock folder in its environment), never by name
alone: other test sessions may run the same scripts on this machine.
"""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    DEV,
    JOB_MODULE,
    TEST_CONFIG,
    WORKER_MODULE,
    check_complete,
    cmdline,
    config_json,
    descendants,
    job_count,
    make_workdir,
    points,
    start,
    stop_workers,
    tsv,
    tsvs,
    wait_for,
    workers_of,
)
from conftest import snakemake as run_snakemake

from w8a8_tuner.hooks import CORRUPT_ENV
from w8a8_tuner.jobs import slots
from w8a8_tuner.results.naming import load_config_file
from w8a8_tuner.results.tsv import read_tsv

pytestmark = pytest.mark.e2e


def snakemake(wd, *args, **kw):
    return run_snakemake(wd, *args, **kw)


@pytest.fixture(autouse=True)
def _stop_workers(tmp_path):
    """Tuning workers outlive their jobs until idle; stop the ones this test started."""
    yield
    stop_workers(tmp_path / "wd")


def jobs_under(pid: int) -> list[int]:
    """The job processes under a snakemake (not a persistent worker one of them started)."""
    return [p for p in descendants(pid) if WORKER_MODULE not in cmdline(p)]


def wait_gone(pids, timeout: float = 120):
    """Wait for processes this test left behind (orphaned jobs); kill -9 any still there at the deadline."""
    from conftest import alive

    deadline = time.monotonic() + timeout
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def failed_commands(output: str) -> list[str]:
    """The command lines of the jobs snakemake reports as failed (killed or non-zero)."""
    import re

    return re.findall(r"Command '([^']*)' (?:returned non-zero exit status|died with)", output)


def tuning_log(wd: Path):
    """A point's log once its search has started (a phase line) and before it finished (no 'best')."""
    for log in (wd / "logs" / DEV / "tune").rglob("M*.log"):
        text = log.read_text()
        if "] compile" in text and "best " not in text and "ERROR" not in text:
            return log
    return None


class FinalNames(threading.Thread):
    """Reads every TSV and JSON under its final name every few ms while a run goes on.

    A file that does not parse is recorded unless it was replaced or removed meanwhile
    (read again: a complete file under the same name is fine).
    """

    def __init__(self, wd: Path):
        super().__init__(daemon=True)
        self.root, self.stop, self.bad, self.checked = wd / "results", threading.Event(), [], 0

    def check(self, path: Path) -> str | None:
        try:
            if path.suffix == ".tsv":
                read_tsv(path)
            else:
                load_config_file(path)
                json.loads(path.read_text())
            return None
        except Exception as e:  # noqa: BLE001
            return f"{type(e).__name__}: {e}"

    def run(self):
        while not self.stop.is_set():
            for path in list(self.root.rglob("*")):
                final = (path.suffix == ".tsv" and path.name.startswith("M")) or \
                        (path.suffix == ".json" and path.name.startswith("N="))
                if final and (error := self.check(path)):
                    if path.exists() and self.check(path):
                        self.bad.append((str(path), error))
                elif final:
                    self.checked += 1
            time.sleep(0.01)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


# --- 2. kill -9 of a tune job (and of the persistent worker, where there is one) -----------

def slot_records(wd: Path, since: float) -> dict[Path, tuple[str, float]]:
    """Per point log: (the line where its job took a slot, seconds it waited), for slots taken after `since`."""
    found = {}
    for log in (wd / "logs" / DEV / "tune").rglob("M*.log"):
        for line in log.read_text().splitlines():
            if " acquired_at " in line and float(line.split(" acquired_at ")[1].split()[0]) > since:
                found[log] = (line, float(line.split(" waited ")[1].rstrip("s")))
    return found


@pytest.mark.parametrize("target", ["job", "worker"])
def test_kill_9_of_tune_job_rerun_completes_and_slot_is_freed(tmp_path, target):
    """One fake GPU, so the jobs after the killed one need the killed one's slot (and worker)."""
    tuning = {**yaml.safe_load(TEST_CONFIG.read_text())["tuning"], "worker_idle_s": 120}
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1, 16, 33], tuning=tuning)
    args = ("--cores", "1", "--resources", "gpu=1")
    env = {slots.FAKE_GPUS_ENV: "1"}
    with FinalNames(wd) as watch:
        proc, out = start(wd, *args, env=env)
        try:
            log = wait_for(lambda: tuning_log(wd), 300)  # a point mid-search
            m = int(log.stem[1:])
            serving = workers_of(wd)
            serving_cmdline = cmdline(serving[0]) if serving else ""
            if target == "job":
                [victim] = [p for p in descendants(proc.pid) if JOB_MODULE in cmdline(p)]
            else:
                [victim] = serving
            os.kill(victim, signal.SIGKILL)
            killed_at = time.time()
            proc.wait(timeout=400)
        finally:
            proc.kill()
        first = out.read_text()
        killed_point_tuned, tuned = tsv(wd, 256, 512, m).exists(), len(tsvs(wd))
        first_after_kill = slot_records(wd, killed_at)
        later_logs = {log: log.read_text() for log in first_after_kill}
        rerun = snakemake(wd, *args, env=env)
        rerun_slots = slot_records(wd, killed_at)
    # Snakemake names the killed point's job as failed; killed by the worker's death, the job says why.
    assert proc.returncode != 0, first[-3000:]
    [failed] = failed_commands(first)
    assert f"--N 256 --K 512 --M {m} " in failed and f"/N256_K512/M{m}.tsv" in failed
    if target == "worker":
        assert f"tune N=256 K=512 M={m}: WorkerError: tuning worker pid {victim} " in first, first[-3000:]
        assert "exited during the request (killed or crashed" in first
    # The killed point has no TSV after the first run; the others were tuned, after the kill.
    assert not killed_point_tuned and tuned == 2
    assert len(first_after_kill) == 2, first_after_kill
    # The killed job's slot was free at once for the next jobs (a stuck lock would wait an hour).
    for line, waited in [*first_after_kill.values(), *rerun_slots.values()]:
        assert "slot fake0 " in line and waited < 5, line
    if serving:
        # The worker runs in the repo folder; its Triton cache is still this sweep's.
        cache = (wd / "results" / DEV / "triton_cache").resolve()
        assert f"--triton-cache {cache} " in serving_cmdline, serving_cmdline
    if target == "job" and serving:
        # The worker outlives its killed client and serves the next jobs; none starts another.
        for text in later_logs.values():
            assert f"worker pid {serving[0]} took the point" in text and "started worker" not in text, text
    # The same command completes the sweep, re-running only the killed point.
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert job_count(rerun.stderr, "tune") == 1 and job_count(rerun.stderr, "aggregate") == 1
    check_complete(wd)
    assert watch.checked > 0 and not watch.bad, watch.bad


# --- 3. kill -9 of snakemake itself, during tuning and during aggregation ----------------

def kill_snakemake_when(proc, condition, timeout_s=300):
    """kill -9 snakemake alone once `condition()` holds; wait for its orphaned jobs to end."""
    try:
        seen = wait_for(condition, timeout_s)
        # Stopped first, so that it starts no job between the listing of its jobs and its death (a job
        # started then would be an orphan not waited for: its TSV would appear after the test counted).
        os.kill(proc.pid, signal.SIGSTOP)
        orphans = jobs_under(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    wait_gone(orphans)
    return seen


def test_kill_9_of_snakemake_during_tuning_then_aggregation(tmp_path):
    """Only snakemake is killed (its running job lives on as an orphan, as after a real kill -9)."""
    wd = make_workdir(tmp_path)
    shapes, batches = points(wd)
    total = len(shapes) * len(batches)
    args = ("--cores", "1")
    with FinalNames(wd) as watch:
        # Run 1: killed while a tune job runs, after two points are done.
        proc, out1 = start(wd, *args, name="run1")
        job = kill_snakemake_when(proc, lambda: len(tsvs(wd)) >= 2 and [
            p for p in descendants(proc.pid) if JOB_MODULE in cmdline(p)])
        present = len(tsvs(wd))
        assert 2 <= present < total and job

        # Run 2, the same command: killed while an aggregate job runs.
        proc, out2 = start(wd, *args, name="run2")
        kill_snakemake_when(proc, lambda: [p for p in descendants(proc.pid) if "aggregate.py" in cmdline(p)])
        planned2 = job_count(out2.read_text(), "tune")
        present2 = len(tsvs(wd))

        # Run 3, the same command: completes.
        run3 = snakemake(wd, *args)
    assert run3.returncode == 0, run3.stderr[-3000:]
    check_complete(wd)
    # Finished leaves are not run again: run 2 planned exactly the missing points. The job in flight at the
    # kill finished its point as an orphan (waited for above); its TSV is whole and kept (before: Snakemake
    # still had it marked incomplete, deleted it and tuned the point again).
    assert planned2 == total - present, (present, planned2)
    # Run 2 was killed during an aggregate job (no tune job in flight with --cores 1): run 3
    # tunes exactly the points still missing and redoes the killed aggregate.
    assert job_count(run3.stderr, "tune") == total - present2
    assert job_count(run3.stderr, "aggregate") >= 1
    assert watch.checked > 0 and not watch.bad, watch.bad


def test_a_rerun_waits_for_an_orphaned_job_still_tuning_and_keeps_its_tsv(tmp_path):
    """kill -9 of snakemake, then the same command at once, while the orphaned job still tunes its point: the
    re-run's job for that point waits for the orphan and keeps its TSV. Before, it tuned the point a second
    time beside the orphan, in the same log. The orphan (its job and the worker tuning for it) is paused
    until the re-run's job is waiting, so that the re-run surely finds the point still held."""
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1, 16, 33])
    args = ("--cores", "1")
    proc, _ = start(wd, *args, name="run1")
    try:
        log = wait_for(lambda: tuning_log(wd), 300)  # the first point (M=33, the largest) mid-search
        orphans = jobs_under(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    killed_at, m = time.time(), int(log.stem[1:])
    paused = orphans + workers_of(wd)
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        rerun, out = start(wd, *args, name="run2")
        try:
            wait_for(lambda: "waiting for it, not tuning it twice" in out.read_text(), 90)
            assert not tsv(wd, 256, 512, m).exists()
        except BaseException:
            rerun.kill()
            raise
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    rerun.wait(timeout=600)
    wait_gone(orphans)
    text = out.read_text()
    assert rerun.returncode == 0, text[-3000:]
    check_complete(wd)
    meta, _ = read_tsv(tsv(wd, 256, 512, m))
    assert float(meta["started"]) < killed_at  # the orphan's
    assert f"tuned N=256 K=512 M={m}: {meta['best']} " in text and "(kept: tuned by pid " in text
    # Tuned once, and its log is the orphan's, with the re-run's note after it.
    points_log = log.read_text()
    assert points_log.count("] compile") == 1 and points_log.count("\nbest ") == 1, points_log
    assert points_log.rstrip().splitlines()[-1].startswith("kept "), points_log


# --- 4, 5. wrong numbers ------------------------------------------------------------------

def test_wrong_result_configs_are_recorded_and_never_chosen(tmp_path):
    """Three of the four configs give wrong numbers (among them the largest tiles, the interpreter's
    usual winner): every point records them as wrong_result and picks the fourth."""
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1, 33])
    wrong = ["M32_N128_K128_G1_w4_s2", "M16_N128_K128_G1_w4_s2", "M32_N64_K128_G1_w4_s2"]
    run = snakemake(wd, "--cores", "2", env={CORRUPT_ENV: ",".join(wrong)})
    assert run.returncode == 0, run.stderr[-3000:]
    best = load_config_file(config_json(wd, 256, 512))
    assert sorted(best) == [1, 33]
    for m, c in best.items():
        assert c.label() == "M16_N64_K128_G1_w4_s2"
        _, df = read_tsv(tsv(wd, 256, 512, m))
        status = {cfg.label(): s for cfg, s in zip(df["config"], df["status"])}
        assert status == {**{w: "wrong_result" for w in wrong}, "M16_N64_K128_G1_w4_s2": "ok"}
        notes = df.loc[df["status"] == "wrong_result", "note"]
        assert notes.str.startswith("relative error").all()


def test_every_candidate_wrong_fails_the_point_and_writes_no_json(tmp_path):
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1, 16])
    run = snakemake(wd, "--cores", "2", env={CORRUPT_ENV: "all"})
    assert run.returncode != 0
    for m in (1, 16):
        assert f"no config ran correctly for N=256 K=512 M={m}" in run.stderr, run.stderr[-3000:]
        log = (wd / "logs" / DEV / "tune" / "N256_K512" / f"M{m}.log").read_text()
        assert f"no config ran correctly for N=256 K=512 M={m}" in log and "wrong_result=4" in log
    assert "wrong_result=4" in run.stderr
    assert not tsvs(wd)
    assert not list((wd / "results").rglob("N=*.json"))
    assert job_count(run.stderr, "aggregate") == 1 and len(failed_commands(run.stderr)) == 2


# --- 7. truncated or hand-edited TSV --------------------------------------------------------

def test_truncated_or_hand_edited_tsv_is_refused_by_aggregate(tmp_path):
    wd = make_workdir(tmp_path, batch_sizes=[1, 16])
    tuned = snakemake(wd, "--cores", "2", "--until", "tune")
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert len(tsvs(wd)) == 4 and not list((wd / "results").rglob("N=*.json"))
    truncated, edited = tsv(wd, 256, 512, 1), tsv(wd, 384, 256, 16)
    fresh = {p: p.stat().st_mtime for p in tsvs(wd)}
    text = truncated.read_text()
    truncated.write_text(text[: len(text) * 2 // 3])          # a file cut mid-row
    lines = edited.read_text().splitlines(keepends=True)
    del lines[-2]                                           # a hand edit: one candidate's row deleted
    edited.write_text("".join(lines))

    run = snakemake(wd, "--cores", "2")
    assert run.returncode != 0
    assert job_count(run.stderr, "tune") == 0 and job_count(run.stderr, "aggregate") == 2
    rel = lambda p: str(p.relative_to(wd))  # noqa: E731
    assert f"aggregate N=256 K=512: {rel(truncated)}: truncated" in run.stderr, run.stderr[-3000:]
    assert f"aggregate N=384 K=256: {rel(edited)}: 3 rows but the end mark says 4" in run.stderr
    assert "delete that TSV and run the same command again" in run.stderr
    assert not list((wd / "results").rglob("N=*.json"))
    assert not list((wd / "results").rglob(".*.tmp.*"))

    # What the message says to do works: only the two deleted points are tuned again.
    truncated.unlink()
    edited.unlink()
    again = snakemake(wd, "--cores", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert job_count(again.stderr, "tune") == 2
    check_complete(wd)
    assert all(p.stat().st_mtime == t for p, t in fresh.items() if p not in (truncated, edited))


# --- 8. device mismatch ---------------------------------------------------------------------

def test_device_mismatch_names_both_devices_and_writes_nothing(tmp_path, monkeypatch):
    """No GPU here: torch.cuda is faked to report an H200 to a job writing H100 results."""
    import torch

    from w8a8_tuner.jobs.client import tune_job
    from w8a8_tuner.jobs.point import DeviceMismatch

    monkeypatch.setenv(slots.FAKE_GPUS_ENV, "1")
    monkeypatch.setenv(slots.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))  # restored after; the job sets it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H200")
    out = tmp_path / "results" / "NVIDIA_H100_80GB_HBM3" / "tune" / "f" / "N256_K512" / "M1.tsv"
    out.parent.mkdir(parents=True)
    log = tmp_path / "M1.log"
    settings = {"backend": "cuda", "device_name": "NVIDIA_H100_80GB_HBM3"}
    # In-process (persistent_worker=False): a worker is another process, where torch.cuda is not faked.
    with pytest.raises(DeviceMismatch) as err:
        tune_job(str(out), str(log), 256, 512, 1, settings, str(tmp_path / "cache"), compile_workers=1,
                 persistent_worker=False, worker_idle_s=1)
    message = str(err.value)
    assert "'NVIDIA_H100_80GB_HBM3'" in message and "'NVIDIA_H200'" in message and str(out) in message
    assert [p for p in out.parent.iterdir() if p.name != ".M1.tsv.lock"] == []  # the point's lock alone
    assert "slot fake0" in log.read_text() and "released_at" in log.read_text()
    # The job gave its slot back.
    slot = slots.acquire(timeout_s=1)
    assert slot.uuid == "fake0"
    slot.release()


# --- 9. unwritable results folder -----------------------------------------------------------

def _make_unwritable(folder: Path) -> None:
    """chmod does not stop root; the immutable attribute does."""
    folder.chmod(0o555)
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            folder.chmod(0o755)
            pytest.skip(f"running as root and cannot make {folder} immutable: {done.stderr.decode().strip()}")


def _make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)


@pytest.mark.parametrize("how", ["results is a file", "tune folder unwritable", "compile cache unwritable"])
def test_unwritable_results_folder_stops_before_any_job(tmp_path, how):
    """The compile cache too: before, a run with an unwritable results/<device>/triton_cache started its jobs."""
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1])
    if how == "results is a file":
        (wd / "results").write_text("not a folder\n")
        blocked, needle = None, f"cannot write to results/{DEV}/configs/: Not a directory (results is a file"
    else:
        blocked = wd / "results" / DEV / ("tune" if how == "tune folder unwritable" else "triton_cache")
        blocked.mkdir(parents=True)
        _make_unwritable(blocked)
        needle = f"cannot write to {blocked.relative_to(wd)}"
    try:
        run = snakemake(wd, "--cores", "2")
    finally:
        if blocked is not None:
            _make_writable(blocked)
    assert run.returncode != 0
    assert needle in run.stderr and "make it writable" in run.stderr, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert job_count(run.stderr, "tune") == 0 and not (wd / "logs" / DEV / "tune").exists()
    if how == "results is a file":
        assert (wd / "results").read_text() == "not a folder\n"
    else:
        # nothing was created beside the folder the test made unwritable
        assert [p.relative_to(wd / "results") for p in sorted((wd / "results").rglob("*"))] == \
            [Path(DEV), blocked.relative_to(wd / "results")]
