"""GPU slots with fake GPUs: exclusive while held, freed when a holder is killed."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import snakemake

from w8a8_tuner.jobs import slots

HOLDER = """
import time
from w8a8_tuner.jobs import slots
s = slots.acquire(timeout_s=60, gpus=['fake0', 'fake1'])
print(s.uuid, flush=True)
time.sleep(600)
"""


@pytest.fixture
def lock_env(tmp_path, monkeypatch):
    monkeypatch.setenv(slots.LOCK_DIR_ENV, str(tmp_path / "locks"))
    return {**os.environ, slots.LOCK_DIR_ENV: str(tmp_path / "locks")}


def start_holder(env):
    p = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE,
                         text=True, env=env)
    return p, p.stdout.readline().strip()


def test_holders_get_distinct_slots_and_kill_frees(lock_env):
    a, slot_a = start_holder(lock_env)
    b, slot_b = start_holder(lock_env)
    try:
        assert {slot_a, slot_b} == {"fake0", "fake1"}
        with pytest.raises(TimeoutError, match="no free GPU slot among 2"):
            slots.acquire(timeout_s=0.5, gpus=["fake0", "fake1"])
        a.send_signal(signal.SIGKILL)
        a.wait()
        t0 = time.monotonic()
        s = slots.acquire(timeout_s=10, gpus=["fake0", "fake1"])
        assert s.uuid == slot_a and time.monotonic() - t0 < 5
        s.release()
    finally:
        for p in (a, b):
            p.kill()
            p.wait()


def test_unusable_lock_folder_names_the_variable(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(slots.LOCK_DIR_ENV, str(blocker / "locks"))
    with pytest.raises(OSError, match=f"GPU slot locks cannot be written in {blocker / 'locks'} "
                                      rf"\({slots.LOCK_DIR_ENV}=.*set {slots.LOCK_DIR_ENV} to a writable"):
        slots.check_lock_dir()


def test_no_visible_gpu_is_an_error():
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        slots.acquire(gpus=[])


def test_concurrent_jobs_never_share_a_slot(workdir):
    """The real workflow with 2 fake GPUs and gpu=2: overlapping jobs hold different slots."""
    run = snakemake(workdir, "--cores", "2", "--resources", "gpu=2",
                    env={slots.FAKE_GPUS_ENV: "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    intervals = []
    for log in (workdir / "logs").rglob("M*.log"):
        text = log.read_text()
        got = re.search(r"slot (\S+) .* acquired_at ([\d.]+)", text)
        rel = re.search(r"released_at ([\d.]+)", text)
        assert got and rel, f"{log} has no slot record:\n{text}"
        intervals.append((got.group(1), float(got.group(2)), float(rel.group(1))))
    assert len(intervals) == 6
    assert {s for s, _, _ in intervals} <= {"fake0", "fake1"}
    for i, (s1, a1, b1) in enumerate(intervals):
        for s2, a2, b2 in intervals[i + 1:]:
            if s1 == s2:
                assert b1 <= a2 or b2 <= a1, f"two jobs held {s1} at once"
    overlapping = [(x, y) for i, x in enumerate(intervals) for y in intervals[i + 1:] if x[1] < y[2] and y[1] < x[2]]
    assert overlapping, "with gpu=2 some jobs should have run at the same time"


def test_pin_to_narrows_the_process_to_the_slot_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    # A real GPU UUID (CUDA not started in this CPU test process): the process sees only it, as index 0.
    assert slots.pin_to(slots.Slot(index=1, uuid="GPU-0123-abcd", fd=-1)) == 0
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-0123-abcd"
    # No UUID to pin by (fake or index-named slot): keep the environment, use the slot's index.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert slots.pin_to(slots.Slot(index=1, uuid="fake1", fd=-1)) == 1
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_fake_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv(slots.FAKE_GPUS_ENV, "4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert slots.visible_gpus() == ["fake3", "fake1"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert slots.visible_gpus() == ["fake0", "fake1", "fake2", "fake3"]


# --- a point's lock: a job of a killed run that still tunes a point is waited for, its TSV kept ---------------

POINT_HOLDER = """
import sys, time
from w8a8_tuner.jobs.client import point_held
with point_held(sys.argv[1], print):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_point_held_by_another_process_is_waited_for(tmp_path):
    from w8a8_tuner.jobs.client import point_held

    tsv = tmp_path / "M1.tsv"
    holder = subprocess.Popen([sys.executable, "-c", POINT_HOLDER, str(tsv), "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        said, t0 = [], time.monotonic()
        with point_held(str(tsv), said.append) as who:
            waited = time.monotonic() - t0
        assert who == f"pid {holder.pid} on {os.uname().nodename}" and waited > 1
        assert len(said) == 1 and said[0].startswith(f"{who} is tuning this point") and "waiting for it" in said[0]
        with point_held(str(tsv), said.append) as who:  # free now: taken at once, nobody named
            assert who == ""
    finally:
        holder.kill()
        holder.wait()


def test_a_finished_tsv_is_kept_only_if_whole_and_of_these_settings(tmp_path):
    import random

    from test_results import EXPECTED, fake_point

    from w8a8_tuner.jobs.client import finished_point

    settings = {**{k: EXPECTED[k] for k in ("fingerprint", "device_name", "backend", "block_shape", "out_dtype")},
                "search_space": {"BLOCK_SIZE_M": [16, 32], "BLOCK_SIZE_N": [64, 128], "BLOCK_SIZE_K": [128],
                                 "GROUP_SIZE_M": [1], "num_warps": [4], "num_stages": [2]}}
    tsv = tmp_path / "M1.tsv"
    assert finished_point(str(tsv), 256, 512, 1, settings) is None  # nothing there
    best = fake_point(tsv, 1, random.Random())
    assert finished_point(str(tsv), 256, 512, 1, settings).startswith(f"{best.label()} ")
    assert finished_point(str(tsv), 256, 512, 1, {**settings, "fingerprint": "other"}) is None  # other settings
    tsv.write_text(tsv.read_text()[:-40])  # damaged: tuned again
    assert finished_point(str(tsv), 256, 512, 1, settings) is None
