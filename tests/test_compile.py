"""Compiling without a GPU: real Triton compiles for a Hopper (or Ampere) target on this CPU machine, outcomes
shared on disk through per-config files and locks, streamed in batches as they finish."""

import fcntl
import json
import os
import threading
import time

import pytest

from w8a8_tuner.search.compile import (
    Point,
    _read_outcome,
    compile_for_points,
    compile_stream,
    outcome_folder,
    specialization_key,
    target_arch,
)
from w8a8_tuner.search.space import Config

POINT = Point(16, 256, 256, (128, 128), "bfloat16")
SMALL = [Config(16, 32, 128, 1, 4, 2), Config(16, 64, 128, 1, 4, 2)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    return tmp_path / "triton"


@pytest.mark.parametrize("name,arch", [
    ("NVIDIA_H100_80GB_HBM3", 90), ("NVIDIA_H200", 90), ("NVIDIA_H20", 90), ("NVIDIA_A100-SXM4-80GB", 80),
    ("NVIDIA_L40S", 89), ("NVIDIA_A10G", 86), ("NVIDIA_B200", 100), ("cpu_interpreter", None), ("Some_New_GPU", None),
])
def test_architecture_from_the_device_name(name, arch):
    assert target_arch(name) == arch


def test_compiles_for_hopper_without_a_gpu_and_reuses_outcomes(cache):
    batches = list(compile_stream(POINT, SMALL, workers=2, arch=90))
    got = {c: r for b in batches for c, r in b.items()}
    assert set(got) == set(SMALL) and {r.status for r in got.values()} == {"ok"}
    assert all(r.seconds > 0 for r in got.values())
    folder = outcome_folder(POINT, 90)
    assert folder.parent.name == "sm90" and folder.name == specialization_key(POINT)
    binaries = sorted(p.name for p in cache.iterdir() if p.name != "w8a8_compiled")
    assert binaries, "nothing landed in Triton's cache"
    cubins = [p for p in cache.rglob("*.cubin")]
    assert len(cubins) == len(SMALL)
    # Known outcomes come back in one first batch, and nothing is compiled again.
    again = list(compile_stream(POINT, SMALL, workers=2, arch=90))
    assert len(again) == 1 and {c: r.status for c, r in again[0].items()} == {c: "ok" for c in SMALL}
    assert sorted(p.name for p in cache.iterdir() if p.name != "w8a8_compiled") == binaries


def test_shared_memory_over_the_architecture_limit_is_out_of_resources(cache):
    # On sm89 (Ada) 5 stages keep 4 buffers: 4 x (128 + 128) x 128 fp8 bytes = 131072 > 101376.
    big = Config(128, 128, 128, 1, 4, 5)
    (ada,) = list(compile_stream(POINT, [big], workers=1, arch=89))
    assert ada[big].status == "out_of_resources" and "> 101376 bytes" in ada[big].note


def test_a_config_another_process_is_compiling_is_waited_for_not_compiled_twice(cache):
    """Hold one config's lock as another job would; the stream compiles the rest, then takes the
    outcome the other job writes instead of compiling that config itself."""
    held, other = SMALL
    folder = outcome_folder(POINT, 90)
    folder.mkdir(parents=True)
    fd = os.open(folder / f"{held.label()}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    batches = []
    t = threading.Thread(target=lambda: batches.extend(compile_stream(POINT, SMALL, workers=2, arch=90)))
    t.start()
    deadline = time.monotonic() + 120
    while not batches and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    assert t.is_alive(), "the stream must wait for the held config"
    assert [set(b) for b in batches] == [{other}]  # the free one came out on its own
    (folder / f"{held.label()}.json").write_text(json.dumps({"status": "compile_error", "note": "by the other job"}))
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    t.join(timeout=120)
    assert not t.is_alive()
    assert batches[-1][held].note == "by the other job"


def test_a_damaged_outcome_is_compiled_again(cache):
    folder = outcome_folder(POINT, 90)
    folder.mkdir(parents=True)
    (folder / f"{SMALL[0].label()}.json").write_text("{not json")
    assert _read_outcome(folder / f"{SMALL[0].label()}.json") is None
    points = [POINT, Point(32, 256, 256, (128, 128), "bfloat16")]
    out = compile_for_points(points, lambda m: SMALL[:1], workers=1, arch=90)
    assert out[SMALL[0]].status == "ok"


def test_points_of_several_specializations_are_refused(cache):
    with pytest.raises(ValueError, match="several specializations"):
        compile_for_points([POINT, Point(1, 256, 256, (128, 128), "bfloat16")], lambda m: SMALL, workers=1,
                           arch=90)


def niceness_of_the_compile_process(point, config, arch):
    """A compile function that reports its process's CPU priority (module level: sent to the pool by name)."""
    from w8a8_tuner.search.compile import CompileResult

    return CompileResult("ok", note=str(os.nice(0)))


def test_compile_jobs_compile_at_a_lower_cpu_priority_than_tune_jobs(cache):
    """Compile jobs work ahead (nice); a tune job's own compiles keep the normal priority: the GPU waits on them."""
    base = os.nice(0)
    ahead = compile_for_points([POINT], lambda m: SMALL[:1], workers=1, arch=90,
                               compile_fn=niceness_of_the_compile_process, nice=7)
    assert int(ahead[SMALL[0]].note) == base + 7
    (own,) = list(compile_stream(Point(1, 256, 256, (128, 128), "bfloat16"), SMALL[1:], 1, 90,
                                 niceness_of_the_compile_process))
    assert int(own[SMALL[1]].note) == base
