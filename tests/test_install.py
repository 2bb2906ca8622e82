"""`snakemake install` (w8a8_tuner.results.install) against stand-in engines laid out like each engine
(tests/fake_engines/): vLLM's model_executor/layers/quantization/utils/, SGLang's srt/layers/quantization/ and its
newer kernels/ops/quantization/ (with a re-export left in srt/). Each stand-in ships a file in its configs/ folder
and defines its loader as the engine does (the folder beside the module), so a test can ask the engine's own
lookup what it reads after an install. Copies of the stand-ins are installed into, never the repository's."""

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DEV, REPO, make_workdir, results, snakemake, stop_workers

from w8a8_tuner.results.install import (
    RECORD_NAME,
    InstallError,
    config_folders,
    install,
    plan_install,
    summary,
    tuned_files,
)
from w8a8_tuner.results.naming import config_file_name

FAKE_ENGINES = REPO / "tests" / "fake_engines"
H200 = "NVIDIA_H200"
SHIPPED_SHAPE = (2112, 7168)  # each stand-in ships this shape's file for the H200
VLLM_UTILS = "vllm/model_executor/layers/quantization/utils"
SGLANG_SRT = "sglang/srt/layers/quantization"
SGLANG_KERNELS = "sglang/kernels/ops/quantization"
LAYOUTS = {"vllm": (FAKE_ENGINES, "vllm"), "sglang_srt": (FAKE_ENGINES / "sglang_srt", "sglang"),
           "sglang_kernels": (FAKE_ENGINES / "sglang_kernels", "sglang")}


def forget_engines():
    for name in [m for m in sys.modules if m.split(".")[0] in ("vllm", "sglang", "fake_engine_launches")]:
        del sys.modules[name]


@pytest.fixture
def engines(tmp_path, monkeypatch):
    """Copies of stand-in engines, importable (found) here: engines('vllm', 'sglang_kernels') -> their root folder."""
    def put(*layouts):
        root = tmp_path / "site-packages"
        root.mkdir(exist_ok=True)
        for layout in layouts:
            source, package = LAYOUTS[layout]
            shutil.copytree(source / package, root / package, dirs_exist_ok=True)
        shutil.copy(FAKE_ENGINES / "fake_engine_launches.py", root)
        monkeypatch.syspath_prepend(str(root))
        return root

    forget_engines()
    yield put
    forget_engines()


def engine_reads(module: Path, kind: str, shape, device=DEV):
    """What the stand-in's loader (the engine's lookup, beside `module`) returns for the shape."""
    spec = importlib.util.spec_from_file_location(f"standin_{abs(hash(module))}", module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return getattr(loaded, f"get_w8a8_block_{kind}_configs")(*shape, 128, 128, device)


def tuned(folder: Path, shapes, engine="both", input_type="fp8", device=DEV, extra=None):
    """Tuned files as aggregate writes them; SGLang's differ from vLLM's (`extra` keys), as they may."""
    folder.mkdir(parents=True, exist_ok=True)
    files = tuned_files(shapes, device, (128, 128), input_type=input_type, engine=engine, configs_dir=folder)
    for e, _, path in files:
        entry = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
                 "num_stages": 2, **((extra or {}) if e == "sglang" else {})}
        path.write_text(json.dumps({"1": entry, "16": {**entry, "BLOCK_SIZE_M": 32}}, indent=4) + "\n")
    return files


def folders_for(files, input_type="fp8", python=None):
    return {e: config_folders(e, input_type, python) for e in dict.fromkeys(e for e, _, _ in files)}


# --- where each engine reads ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,engine,kind,folder", [
    ("vllm", "vllm", "fp8", VLLM_UTILS), ("vllm", "vllm", "int8", VLLM_UTILS),
    ("sglang_srt", "sglang", "fp8", SGLANG_SRT), ("sglang_srt", "sglang", "int8", SGLANG_SRT),
    ("sglang_kernels", "sglang", "fp8", SGLANG_KERNELS), ("sglang_kernels", "sglang", "int8", SGLANG_KERNELS),
])
def test_each_engines_folder_is_found_without_importing_it(engines, layout, engine, kind, folder):
    root = engines(layout)
    assert config_folders(engine, kind) == [root / folder / "configs"]
    assert engine not in sys.modules  # found by importlib.util.find_spec and reading files, never imported


def test_an_engine_that_is_not_installed_is_named(engines):
    engines("vllm")
    with pytest.raises(InstallError, match=r"engine: sglang: SGLang is not installed for this Python \(importlib"
                                           r".util.find_spec\('sglang'\) found nothing\); install it there, or set "
                                           "install.python to the Python that runs SGLang"):
        config_folders("sglang", "fp8")


def test_a_layout_without_the_loader_is_named(engines, tmp_path):
    root = engines("sglang_srt")
    (root / SGLANG_SRT / "fp8_kernel.py").write_text("# the loader moved elsewhere\n")
    shutil.rmtree(root / SGLANG_SRT / "configs")
    with pytest.raises(InstallError, match="cannot tell where SGLang at .* reads W8A8 block FP8 configs: none of .*"
                                           "defines get_w8a8_block_fp8_configs"):
        config_folders("sglang", "fp8")


def test_the_engines_own_files_tell_where_it_reads_when_the_loader_moved(engines):
    root = engines("vllm")
    (root / VLLM_UTILS / "fp8_utils.py").write_text("# a version whose loader lives in another module\n")
    assert config_folders("vllm", "fp8") == [root / VLLM_UTILS / "configs"]  # it ships its files there


def test_the_engines_python_is_asked_with_find_spec(engines, monkeypatch):
    root = engines("sglang_kernels")
    monkeypatch.setenv("PYTHONPATH", str(root))
    assert config_folders("sglang", "fp8", python=sys.executable) == [root / SGLANG_KERNELS / "configs"]
    with pytest.raises(InstallError, match="install.python: /no/such/python: cannot run it"):
        config_folders("sglang", "fp8", python="/no/such/python")


# --- installing ----------------------------------------------------------------------------------------------------

def test_engine_both_installs_each_engines_own_file_where_it_reads(engines, tmp_path):
    root = engines("vllm", "sglang_kernels")
    files = tuned(tmp_path / "results" / "configs", [(256, 512), (384, 256)], extra={"SPLIT_K": 1})
    copies = plan_install(files, folders_for(files), "refuse")
    assert {c.action for c in copies} == {"new"}
    install(copies)
    for n, k in [(256, 512), (384, 256)]:
        for engine, module in [("vllm", root / VLLM_UTILS / "fp8_utils.py"),
                               ("sglang", root / SGLANG_KERNELS / "fp8_kernel.py")]:
            own = tmp_path / "results" / "configs" / config_file_name(n, k, DEV, (128, 128), input_type="fp8",
                                                                      engine=engine)
            assert engine_reads(module, "fp8", (n, k)) == {int(m): v for m, v in json.loads(own.read_text()).items()}
    assert "SPLIT_K" in (root / SGLANG_KERNELS / "configs" / config_file_name(
        256, 512, DEV, (128, 128), input_type="fp8", engine="sglang")).read_text()
    assert not (root / "sglang/srt/layers/quantization/configs").exists()  # the re-export's folder: not read
    text = summary(copies, DEV, "fp8")
    assert f"N=256 K=512: vLLM reads {root / VLLM_UTILS / 'configs'}/N=256,K=512,device_name={DEV}" in text
    assert f"N=384 K=256: SGLang reads {root / SGLANG_KERNELS / 'configs'}/N=384,K=256" in text
    assert '"Using configuration from <file> for W8A8 Block FP8 kernel."' in text
    again = plan_install(files, folders_for(files), "refuse")
    assert {c.action for c in again} == {"current"}


def test_int8_one_name_goes_to_both_engines(engines, tmp_path):
    root = engines("vllm", "sglang_srt")
    files = tuned(tmp_path / "configs", [(256, 512)], input_type="int8")
    assert len({path for _, _, path in files}) == 1  # one file, two engines
    install(plan_install(files, folders_for(files, "int8"), "refuse"))
    assert engine_reads(root / VLLM_UTILS / "int8_utils.py", "int8", (256, 512)) == engine_reads(
        root / SGLANG_SRT / "int8_kernel.py", "int8", (256, 512)) != None  # noqa: E711


def shipped(root, folder, engine):
    name = config_file_name(*SHIPPED_SHAPE, H200, (128, 128), input_type="fp8", engine=engine)
    return root / folder / "configs" / name


def test_a_file_the_engine_ships_is_refused_and_nothing_is_written(engines, tmp_path):
    root = engines("vllm", "sglang_srt")
    files = tuned(tmp_path / "configs", [SHIPPED_SHAPE, (256, 512)], device=H200)
    before = {p: p.read_bytes() for p in (root / VLLM_UTILS / "configs").iterdir()}
    with pytest.raises(InstallError) as e:
        plan_install(files, folders_for(files), "refuse")
    assert str(e.value).startswith("install: 2 file(s) in the engine's folder were not put there by this workflow")
    assert str(shipped(root, VLLM_UTILS, "vllm")) in str(e.value)
    assert str(shipped(root, SGLANG_SRT, "sglang")) in str(e.value)
    assert "set install.existing: backup" in str(e.value) and "or merge" in str(e.value)
    assert {p: p.read_bytes() for p in (root / VLLM_UTILS / "configs").iterdir()} == before


def test_backup_keeps_the_engines_file_and_a_retuned_file_replaces_the_installed_one(engines, tmp_path):
    root = engines("vllm")
    files = tuned(tmp_path / "configs", [SHIPPED_SHAPE], engine="vllm", device=H200)
    dest, original = shipped(root, VLLM_UTILS, "vllm"), shipped(root, VLLM_UTILS, "vllm").read_text()
    copies = plan_install(files, folders_for(files), "backup")
    assert [c.action for c in copies] == ["backup"]
    install(copies)
    backup = dest.with_name(dest.name + ".orig")
    assert backup.read_text() == original and dest.read_text() == files[0][2].read_text()
    assert "kept as N=2112,K=7168,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json.orig" in summary(
        copies, H200, "fp8")
    # Re-tuned: the installed file is this workflow's (its record), so even `refuse` replaces it; the backup stays.
    files[0][2].write_text(files[0][2].read_text().replace('"num_warps": 4', '"num_warps": 8'))
    copies = plan_install(files, folders_for(files), "refuse")
    assert [c.action for c in copies] == ["update"]
    install(copies)
    assert dest.read_text() == files[0][2].read_text() and backup.read_text() == original
    assert sorted(p.name for p in dest.parent.iterdir() if p.name.startswith("N=2112")) == [dest.name, backup.name]
    # Edited by hand after the install: no longer this workflow's, so refused again.
    dest.write_text(dest.read_text().replace('"num_warps": 8', '"num_warps": 2'))
    with pytest.raises(InstallError, match="1 file.s. in the engine's folder were not put there"):
        plan_install(files, folders_for(files), "refuse")
    install(plan_install(files, folders_for(files), "backup"))  # a second backup never overwrites the first
    assert backup.read_text() == original and dest.with_name(dest.name + ".orig.1").exists()


def test_merge_keeps_the_engines_batch_sizes_the_tuned_file_lacks(engines, tmp_path):
    root = engines("sglang_srt")
    files = tuned(tmp_path / "configs", [SHIPPED_SHAPE], engine="sglang", device=H200)
    dest = shipped(root, SGLANG_SRT, "sglang")
    original = json.loads(dest.read_text())  # batch sizes 1 and 4096
    ours = json.loads(files[0][2].read_text())  # batch sizes 1 and 16
    install(plan_install(files, folders_for(files), "merge"))
    merged = json.loads(dest.read_text())
    assert list(merged) == ["1", "16", "4096"]  # sorted by batch size
    assert merged["1"] == ours["1"] and merged["16"] == ours["16"] and merged["4096"] == original["4096"]
    assert json.loads(dest.with_name(dest.name + ".orig").read_text()) == original
    assert engine_reads(root / SGLANG_SRT / "fp8_kernel.py", "fp8", SHIPPED_SHAPE, H200) == {
        int(m): v for m, v in merged.items()}
    # Re-tuned with fewer batch sizes: merged again from the engine's original, not from the last merge.
    files[0][2].write_text(json.dumps({"16": ours["16"]}, indent=4) + "\n")
    copies = plan_install(files, folders_for(files), "refuse")
    assert [c.action for c in copies] == ["merge"]
    install(copies)
    assert json.loads(dest.read_text()) == {"1": original["1"], "16": ours["16"], "4096": original["4096"]}
    record = json.loads((dest.parent / RECORD_NAME).read_text())[dest.name]
    assert record["merged"] and record["original"] == dest.name + ".orig"


def test_merge_with_a_damaged_file_names_it_and_leaves_it(engines, tmp_path):
    root = engines("vllm")
    files = tuned(tmp_path / "configs", [SHIPPED_SHAPE], engine="vllm", device=H200)
    dest = shipped(root, VLLM_UTILS, "vllm")
    dest.write_text("[1, 2")
    with pytest.raises(InstallError, match=re.escape(f"install.existing: merge: {dest} is not a JSON object of "
                                                     "batch sizes")):
        plan_install(files, folders_for(files), "merge")
    assert dest.read_text() == "[1, 2" and sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_a_folder_that_cannot_be_written_is_named_before_anything_is_written(engines, tmp_path):
    root = engines("sglang_srt")
    shutil.rmtree(root / SGLANG_SRT / "configs")
    (root / SGLANG_SRT / "configs").write_text("not a folder")
    files = tuned(tmp_path / "configs", [(256, 512)], engine="sglang")
    with pytest.raises(InstallError, match=f"install: cannot write to {root / SGLANG_SRT / 'configs'}"):
        plan_install(files, {"sglang": [root / SGLANG_SRT / "configs"]}, "refuse")


# --- through the real snakemake --------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_install_target_refuses_first_then_installs_each_engines_files(tmp_path, monkeypatch, engines):
    """engine: both, stand-in vLLM and SGLang (srt layout) found by the workflow's Python. A file already where vLLM
    would read the tuned one stops `snakemake install` before any job; the sweep ends saying where its files are
    and what to do next; `install.existing: backup` installs, keeping vLLM's file; a second install has nothing
    to do."""
    root = engines("vllm", "sglang_srt")
    monkeypatch.setenv("PYTHONPATH", str(root))
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1, 16], engine="both")
    vllm_dest = root / VLLM_UTILS / "configs" / config_file_name(256, 512, DEV, (128, 128), input_type="fp8",
                                                                 engine="vllm")
    vllm_dest.write_text('{"1": {"BLOCK_SIZE_M": 64}}\n')  # as if vLLM shipped one for this name
    try:
        refused = snakemake(wd, "install", "--cores", "2", "--resources", "gpu=1")
        assert refused.returncode != 0
        out = refused.stdout + refused.stderr
        assert "install: 1 file(s) in the engine's folder were not put there by this workflow" in out, out[-3000:]
        assert str(vllm_dest) in out and not list(results(wd).rglob("M*.tsv"))  # before any job

        sweep = snakemake(wd, "--cores", "2", "--resources", "gpu=1")
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        assert (f"Tuned files: 2 of this config's 2 JSON files, named for vLLM and SGLang, are in "
                f"results/{DEV}/configs/.\nNext: snakemake install (same config)") in sweep.stdout + sweep.stderr

        done = snakemake(wd, "install", "--cores", "2", "--resources", "gpu=1", "--config",
                         "install={existing: backup}")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout + done.stderr
        assert f"N=256 K=512: vLLM reads {vllm_dest} (replaced vLLM's own file, kept as {vllm_dest.name}.orig)" in out
        sglang_dest = root / SGLANG_SRT / "configs" / config_file_name(256, 512, DEV, (128, 128), input_type="fp8",
                                                                       engine="sglang")
        assert f"N=256 K=512: SGLang reads {sglang_dest} (installed)" in out
        for dest in (vllm_dest, sglang_dest):
            assert dest.read_text() == (results(wd) / "configs" / dest.name).read_text()
        assert vllm_dest.with_name(vllm_dest.name + ".orig").read_text() == '{"1": {"BLOCK_SIZE_M": 64}}\n'
        assert "Tuned files:" not in out  # install said where everything is

        again = snakemake(wd, "install", "--cores", "2")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert f"vLLM reads {vllm_dest} (already installed)" in again.stdout + again.stderr
        assert yaml.safe_load(sglang_dest.read_text()) == yaml.safe_load(
            (results(wd) / "configs" / sglang_dest.name).read_text())
    finally:
        stop_workers(wd)
