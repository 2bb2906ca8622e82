"""Compiling without a GPU: real Triton compiles for a Hopper (or Ampere) target on this CPU machine, outcomes
shared on disk through per-config files and locks, streamed in batches as they finish."""

import fcntl
import json
import os
import threading
import time

import pytest

from w8a8_tuner.search.compile import (
    MAX_COMPILE_ATTEMPTS,
    Point,
    _read_outcome,
    compile_for_points,
    compile_stream,
    outcome_folder,
    precompile,
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


# --- a compiler that was killed or crashed says nothing about the config: retried, never cached ------------

@pytest.fixture
def killing_ptxas(tmp_path, monkeypatch):
    """TRITON_PTXAS_BLACKWELL_PATH -> a ptxas that kills itself with SIGKILL (as the out-of-memory killer would kill
    ptxas mid-compile) while its counter file holds a number above 0, else runs the real ptxas. Returns the
    folder with `kills_left` (what to set) and `calls` (one line per compile)."""
    from triton import knobs

    real = knobs.nvidia.ptxas_blackwell.path  # what Triton runs for sm90 and later (knobs.nvidia.ptxas below)
    folder = tmp_path / "ptxas"
    folder.mkdir()
    (folder / "kills_left").write_text("0\n")
    wrapper = folder / "ptxas"
    wrapper.write_text(f"""#!/bin/bash
case " $* " in *" --version "*) exec {real} "$@";; esac
echo call >> {folder}/calls
left=$(cat {folder}/kills_left)
if [ "$left" -gt 0 ]; then echo $((left - 1)) > {folder}/kills_left; kill -9 $$; fi
exec {real} "$@"
""")
    wrapper.chmod(0o755)
    monkeypatch.setenv("TRITON_PTXAS_BLACKWELL_PATH", str(wrapper))
    return folder


def test_a_ptxas_killed_mid_compile_is_compiled_again_not_cached(cache, killing_ptxas):
    """Before: the kill was cached as the config's compile_error, for every later job (and compile job)."""
    (killing_ptxas / "kills_left").write_text("1\n")
    (batch,) = list(compile_stream(POINT, SMALL[:1], workers=1, arch=90))
    assert batch[SMALL[0]].status == "ok"
    assert (killing_ptxas / "calls").read_text().count("call") == 2  # killed once, then compiled
    assert json.loads((outcome_folder(POINT, 90) / f"{SMALL[0].label()}.json").read_text())["status"] == "ok"


def test_a_ptxas_killed_every_time_is_reported_and_compiled_again_by_the_next_job(cache, killing_ptxas):
    (killing_ptxas / "kills_left").write_text("100\n")
    (batch,) = list(compile_stream(POINT, SMALL[:1], workers=1, arch=90))
    result = batch[SMALL[0]]
    assert result.status == "compile_error", result
    assert "ptxas killed by SIGKILL" in result.note and f"{MAX_COMPILE_ATTEMPTS} attempts" in result.note
    assert "not cached" in result.note
    assert (killing_ptxas / "calls").read_text().count("call") == MAX_COMPILE_ATTEMPTS
    assert not (outcome_folder(POINT, 90) / f"{SMALL[0].label()}.json").exists()
    # The next job (the same process, as a persistent worker is) compiles it once ptxas lives.
    (killing_ptxas / "kills_left").write_text("0\n")
    (again,) = list(compile_stream(POINT, SMALL[:1], workers=1, arch=90))
    assert again[SMALL[0]].status == "ok"


def test_a_kill_cached_by_an_earlier_version_is_compiled_again(cache):
    """Outcomes written before compiler failures were told apart: a killed ptxas's compile_error is not final."""
    folder = outcome_folder(POINT, 90)
    folder.mkdir(parents=True)
    killed, refused = SMALL
    killed_note = "PTXASError: PTXAS error: `ptxas` failed with error code -9"
    (folder / f"{killed.label()}.json").write_text(json.dumps({"status": "compile_error", "note": killed_note}))
    refused_note = "CompilationError: at 12:4: the config's own"
    (folder / f"{refused.label()}.json").write_text(json.dumps({"status": "compile_error", "note": refused_note}))
    got = precompile(POINT, SMALL, workers=1, arch=90)
    assert got[killed].status == "ok" and got[refused].note == "CompilationError: at 12:4: the config's own"


def dies_the_first_time(point, config, arch):
    """A compile function whose process dies (killed, as by the out-of-memory killer) the first time per config."""
    import signal

    from w8a8_tuner.search.compile import CompileResult

    mark = os.path.join(os.environ["TRITON_CACHE_DIR"], f"died-{config.label()}")
    if not os.path.exists(mark) or os.environ.get("DIE_ALWAYS"):
        open(mark, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return CompileResult("ok")


def raises_memory_error(point, config, arch):
    raise MemoryError


def test_a_compile_process_that_dies_is_replaced_and_its_configs_compiled_again(cache):
    """Before: the dead pool process failed the whole tune job (BrokenProcessPool)."""
    got = precompile(POINT, SMALL, workers=2, arch=90, compile_fn=dies_the_first_time)
    assert {c: r.status for c, r in got.items()} == {c: "ok" for c in SMALL}


def test_a_compile_process_that_always_dies_is_reported_not_cached(cache, monkeypatch):
    monkeypatch.setenv("DIE_ALWAYS", "1")
    got = precompile(POINT, SMALL[:1], workers=1, arch=90, compile_fn=dies_the_first_time)
    result = got[SMALL[0]]
    assert result.status == "compile_error" and "the compile process died" in result.note, result
    assert f"{MAX_COMPILE_ATTEMPTS} attempts" in result.note and "not cached" in result.note
    assert not (outcome_folder(POINT, 90) / f"{SMALL[0].label()}.json").exists()


def test_a_memory_error_is_retried_and_not_cached(cache):
    got = precompile(POINT, SMALL[:1], workers=1, arch=90, compile_fn=raises_memory_error)
    result = got[SMALL[0]]
    assert result.status == "compile_error" and "not the config: MemoryError" in result.note, result
    assert f"{MAX_COMPILE_ATTEMPTS} attempts" in result.note and "not cached" in result.note
    assert not (outcome_folder(POINT, 90) / f"{SMALL[0].label()}.json").exists()
