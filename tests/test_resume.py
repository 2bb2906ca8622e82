"""Resume without re-tuning, and never a stale result: the real snakemake after the things that happen to
a sweep's folder between two runs (a git pull, a fresh clone with results copied in, a changed setting,
a damaged file). TESTING.md lists the cases."""

import json
import os
import shutil
import subprocess
import time

import pytest
import yaml
from conftest import (
    DEV,
    REPO,
    SNAKEMAKE,
    check_complete,
    config_json,
    job_count,
    job_env,
    make_workdir,
    results,
    snakemake,
    stop_workers,
    tsv,
    tsvs,
)

from w8a8_tuner.hooks import CORRUPT_ENV
from w8a8_tuner.results.naming import config_file_name, load_config_file
from w8a8_tuner.results.tsv import COLUMNS

pytestmark = pytest.mark.e2e

ONE_SHAPE = dict(shapes=[[256, 512]], batch_sizes=[1, 16])


@pytest.fixture(autouse=True)
def _stop_workers(tmp_path):
    yield
    stop_workers(tmp_path / "wd")


def checkout(root):
    """A copy of the repository's workflow files (new file times, like a fresh clone or a git pull)."""
    dest = root / "checkout"
    dest.mkdir()
    for name in ("Snakefile", "workflow", "profiles", "config"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def run(wd, *args, snakefile=None, env=None):
    """The real snakemake in `wd`, on this repository's Snakefile or on a copy's."""
    if snakefile is None:
        return snakemake(wd, "--cores", "2", *args, env=env)
    return subprocess.run([SNAKEMAKE, "-s", str(snakefile), "-d", str(wd), "--cores", "2", *args],
                          capture_output=True, text=True, env=job_env(wd, env), timeout=900)


def tuned(run) -> int:
    return job_count(run.stderr + run.stdout, "tune")


def test_code_changes_and_a_fresh_checkout_retune_nothing(tmp_path):
    """Defect 1: touching the workflow's code (what a git pull or a fresh clone does) planned every tune
    job again ("Code has changed since last execution")."""
    code = checkout(tmp_path)
    wd = make_workdir(tmp_path, **ONE_SHAPE)
    first = run(wd, snakefile=code / "Snakefile")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.stat().st_mtime_ns for p in tsvs(wd)}
    later = time.time() + 5
    for path in code.rglob("*"):
        os.utime(path, (later, later))
    again = run(wd, "-n", snakefile=code / "Snakefile")
    assert again.returncode == 0 and tuned(again) == 0, again.stdout[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr
    # The same with the repository's own workflow files (another checkout of the same code).
    assert tuned(run(wd, "-n")) == 0
    assert {p: p.stat().st_mtime_ns for p in tsvs(wd)} == before


@pytest.mark.parametrize("keep_times", [True, False], ids=["cp -p", "cp"])
def test_results_copied_into_a_fresh_clone_retune_nothing(tmp_path, keep_times):
    """Defect 1: copying results into a fresh clone (no .snakemake records) planned every tune job again."""
    wd = make_workdir(tmp_path, **ONE_SHAPE)
    assert run(wd).returncode == 0
    fresh = tmp_path / "fresh"
    shutil.copytree(wd / "config", fresh / "config")
    shutil.copytree(wd / "results", fresh / "results", copy_function=shutil.copy2 if keep_times else shutil.copy)
    dry = snakemake(fresh, "-n", "--cores", "2")
    assert dry.returncode == 0 and tuned(dry) == 0, dry.stdout[-3000:]
    done = snakemake(fresh, "--cores", "2")
    assert done.returncode == 0 and tuned(done) == 0
    assert load_config_file(config_json(fresh, 256, 512)) == load_config_file(config_json(wd, 256, 512))
    stop_workers(fresh)


@pytest.mark.parametrize("change", [{"worker_idle_s": 7}, {"persistent_worker": False}, {"compile_workers": 3}],
                         ids=["worker_idle_s", "persistent_worker", "compile_workers"])
def test_a_setting_that_cannot_change_a_result_retunes_nothing(tmp_path, change):
    """Defect 1: the whole `tuning` dict was one param, so any change planned every tune job again."""
    wd = make_workdir(tmp_path, **ONE_SHAPE)
    assert run(wd).returncode == 0
    tuning = {**yaml.safe_load((wd / "config" / "config.yaml").read_text())["tuning"], **change}
    (wd / "changed.yaml").write_text(yaml.safe_dump({"tuning": tuning}))
    again = run(wd, "--configfile", str(wd / "changed.yaml"))
    assert again.returncode == 0 and tuned(again) == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize("triggers", [[], ["--rerun-triggers", "mtime"]], ids=["profile", "mtime only"])
def test_a_result_setting_changed_and_back_never_keeps_a_stale_json(tmp_path, triggers):
    """Defect 2: after out_dtype or the search space changed, 'Nothing to be done' kept the old JSON. Now a
    changed setting tunes into its own folder, and a JSON made with other settings is made again, also
    when file times say it is up to date; changing back re-tunes nothing."""
    wd = make_workdir(tmp_path, **ONE_SHAPE)
    assert run(wd, *triggers).returncode == 0
    original = config_json(wd, 256, 512).read_text()
    first_tsvs = tsvs(wd)
    f16 = run(wd, *triggers, "--config", "out_dtype=float16")
    assert f16.returncode == 0 and tuned(f16) == 2, f16.stderr[-3000:]
    assert len(tsvs(wd)) == 4 and first_tsvs < tsvs(wd)  # the bf16 results are kept beside the fp16 ones
    [header] = [line for line in tsv(wd, 256, 512, 1).read_text().splitlines() if line.startswith("# out_dtype")]
    assert header == "# out_dtype: float16"
    back = run(wd, *triggers)
    assert back.returncode == 0 and tuned(back) == 0, back.stderr[-3000:]
    assert job_count(back.stderr, "aggregate") == 1 and "the JSON is stale (made with other settings" in back.stderr
    assert config_json(wd, 256, 512).read_text() == original
    space = yaml.safe_load((wd / "config" / "config.yaml").read_text())["search_space"]
    (wd / "space.yaml").write_text(yaml.safe_dump({"search_space": {**space, "BLOCK_SIZE_M": [16]}}))
    narrower = run(wd, *triggers, "--configfile", str(wd / "space.yaml"))
    assert narrower.returncode == 0 and tuned(narrower) == 2
    for c in load_config_file(config_json(wd, 256, 512)).values():
        assert c.BLOCK_SIZE_M == 16


def test_a_new_batch_size_tunes_exactly_the_new_points(tmp_path):
    wd = make_workdir(tmp_path, shapes=[[256, 512], [384, 256]], batch_sizes=[1, 16])
    assert run(wd).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in tsvs(wd)}
    more = run(wd, "--config", "batch_sizes=[1,16,33]")
    assert more.returncode == 0 and tuned(more) == 2, more.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in before} == before
    fewer = run(wd, "--config", "batch_sizes=[1]")
    assert fewer.returncode == 0 and tuned(fewer) == 0
    assert list(json.loads(config_json(wd, 256, 512).read_text())) == ["1"]  # not the stale [1, 16, 33] file


def test_configs_holds_exactly_what_the_current_settings_make(tmp_path):
    """After `engine: both` then `engine: vllm` with a batch size added, SGLang's file kept its old batch sizes
    in configs/, where `cp results/<device>/configs/*.json` installs it. Now a file there that the current
    settings do not make is moved to outdated_configs/ (a dry run only says so), and its name is printed."""
    wd = make_workdir(tmp_path, engine="both", **ONE_SHAPE)
    assert run(wd).returncode == 0
    folder = results(wd) / "configs"
    vllm, sglang = (folder / config_file_name(256, 512, DEV, (128, 128), input_type="fp8", engine=e)
                    for e in ("vllm", "sglang"))
    old_sglang = sglang.read_text()
    dry = run(wd, "-n", "--config", "engine=vllm", "batch_sizes=[1,16,33]")
    assert dry.returncode == 0 and job_count(dry.stdout, "set_aside_outdated_configs") == 1, dry.stdout[-3000:]
    assert f"{sglang.relative_to(wd)}: not made by the current settings" in dry.stderr, dry.stderr[-3000:]
    assert sglang.exists() and not (results(wd) / "outdated_configs").exists()  # a dry run moves nothing

    again = run(wd, "--config", "engine=vllm", "batch_sizes=[1,16,33]")
    assert again.returncode == 0 and tuned(again) == 1, again.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == [vllm.name]
    assert sorted(load_config_file(vllm)) == [1, 16, 33]
    [moved] = [p for p in (results(wd) / "outdated_configs").glob("*/*") if p.name == sglang.name]
    assert moved.read_text() == old_sglang
    assert f"moved {sglang.relative_to(wd)} to {moved.parent.relative_to(wd)}/" in again.stderr, again.stderr[-3000:]
    record = (moved.parent / "moved.tsv").read_text()
    assert sglang.name in record and "engine: vllm" in record
    assert "Nothing to be done" in run(wd, "--config", "engine=vllm", "batch_sizes=[1,16,33]").stderr

    # A shape no longer configured: its file goes too; back to both engines: remade from the TSVs, no tuning.
    other = run(wd, "--config", "engine=both", "shapes=[[384,256]]", "batch_sizes=[1]")
    assert other.returncode == 0 and tuned(other) == 1, other.stderr[-3000:]
    assert f"{vllm.relative_to(wd)}: not made by the current settings (a shape they do not tune)" in other.stderr
    back = run(wd, "--config", "engine=both", "batch_sizes=[1,16,33]")
    assert back.returncode == 0 and tuned(back) == 0, back.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == sorted([vllm.name, sglang.name])
    assert load_config_file(sglang) == load_config_file(vllm) and sorted(load_config_file(sglang)) == [1, 16, 33]


def test_a_json_replaced_by_garbage_is_made_again(tmp_path):
    """Defect 8: a damaged JSON was not noticed ('Nothing to be done')."""
    wd = make_workdir(tmp_path, **ONE_SHAPE)
    assert run(wd).returncode == 0
    good = config_json(wd, 256, 512).read_text()
    config_json(wd, 256, 512).write_text("garbage\n")
    dry = run(wd, "-n")
    assert job_count(dry.stdout, "aggregate") == 1 and tuned(dry) == 0
    fixed = run(wd)
    assert fixed.returncode == 0 and tuned(fixed) == 0
    assert "the JSON is stale (" in dry.stderr and "block_shape=[128,128].json changed on disk since it was written" \
        in dry.stderr  # names the file: a shape may have one JSON per engine
    assert config_json(wd, 256, 512).read_text() == good
    assert "Nothing to be done" in run(wd).stderr + run(wd).stdout
    assert not list((results(wd) / "aggregate" / "stale").glob("*"))


@pytest.mark.parametrize("value,needle", [("nan", "time_us='nan' is not a number"),
                                          ("abc", "time_us='abc' is not a number"),
                                          ("-2.5", "time_us='-2.5' is not a positive finite time"),
                                          ("-inf", "time_us='-inf' is not a positive finite time")])
def test_impossible_time_in_a_tsv_never_reaches_the_json(tmp_path, value, needle):
    """Defects 3 and 4: a text time made the column text and the JSON got the slowest finalist; a negative
    or -inf time won. Now aggregate refuses the file, naming it, the row and the value."""
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1])
    assert run(wd, "--until", "tune").returncode == 0
    path = tsv(wd, 256, 512, 1)
    lines = path.read_text().splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if line.startswith("BLOCK_SIZE_M"))
    loser = header + 2  # the second row: a finalist that did not win
    cells = lines[loser].rstrip("\n").split("\t")
    cells[COLUMNS.index("time_us")] = value
    lines[loser] = "\t".join(cells) + "\n"
    path.write_text("".join(lines))
    bad = run(wd)
    assert bad.returncode != 0
    assert needle in bad.stderr and str(path.relative_to(wd)) in bad.stderr, bad.stderr[-3000:]
    assert not config_json(wd, 256, 512).exists()


def test_ok_row_with_a_wrong_result_never_wins(tmp_path):
    """Defect 4: a row marked ok with rel_error 0.9 won the JSON."""
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1])
    assert run(wd, "--until", "tune").returncode == 0
    path = tsv(wd, 256, 512, 1)
    lines = path.read_text().splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if line.startswith("BLOCK_SIZE_M"))
    cells = lines[header + 1].rstrip("\n").split("\t")
    cells[COLUMNS.index("rel_error")] = "0.9"  # of the winner's row
    lines[header + 1] = "\t".join(cells) + "\n"
    path.write_text("".join(lines))
    bad = run(wd)
    assert bad.returncode != 0 and "ok with rel_error='0.9', over the limit" in bad.stderr
    assert not config_json(wd, 256, 512).exists()


def test_all_wrong_leaves_nothing_and_the_next_run_tunes_it(tmp_path):
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1])
    failed = run(wd, env={CORRUPT_ENV: "all"})
    assert failed.returncode != 0 and not tsvs(wd)
    ok = run(wd)
    assert ok.returncode == 0 and tuned(ok) == 1
    check_complete(wd)
