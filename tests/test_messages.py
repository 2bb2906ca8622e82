"""What the real snakemake says for bad input and unusual command lines: one clear line naming the file,
key or value, before any job, and nothing written. TESTING.md lists the cases."""

import re
import subprocess

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TEST_CONFIG, job_count, job_env, make_workdir, snakemake

from w8a8_tuner.jobs import slots
from w8a8_tuner.plan.shapes import model_shapes
from w8a8_tuner.results.naming import config_file_name

pytestmark = pytest.mark.e2e

GPU_DRY = ["-n", "--cores", "8", "--resources", "gpu=8"]


def nothing_written(wd):
    return not (wd / "results").exists() and not (wd / "logs").exists()


def test_command_line_values_are_read_as_yaml(tmp_path):
    """`--config batch_sizes=[1,16] tp_sizes=[4] verify=true` used to fail: '1' is not of type 'integer'."""
    run = snakemake(tmp_path, *GPU_DRY, "--config", "batch_sizes=[1,16]", "tp_sizes=[4]", "verify=true",
                    "device_name=NVIDIA_H100_80GB_HBM3")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert job_count(run.stdout, "tune") == 8 * 2 and job_count(run.stdout, "verify") == 8  # DeepSeek-V3, TP=4


def test_device_name_with_spaces_names_files_as_the_engines_do(tmp_path):
    run = snakemake(tmp_path, *GPU_DRY, "--quiet", "host", "--config", "device_name=NVIDIA H100 80GB HBM3",
                    "shapes=[[576,7168]]", "batch_sizes=[1]")
    assert run.returncode == 0, run.stderr[-2000:]
    assert config_file_name(576, 7168, "NVIDIA_H100_80GB_HBM3", (128, 128), input_type="fp8",
                            engine="vllm") in run.stdout
    assert "results/NVIDIA_H100_80GB_HBM3/" in run.stdout


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x"])
def test_device_name_that_is_no_folder_name_stops_the_run(tmp_path, name):
    """`device_name: ..` passed and wrote tune/, configs/ and aggregate/ into the folder above results/."""
    wd = make_workdir(tmp_path, device_name=name)
    run = snakemake(wd, "--cores", "2")
    assert run.returncode != 0
    assert f"Invalid configuration: device_name: {name!r} is not a device name" in run.stderr, run.stderr[-2000:]
    assert {p.name for p in wd.iterdir()} <= {"config", ".snakemake"}  # no tune/, configs/, aggregate/
    assert {p.name for p in tmp_path.iterdir()} == {"wd"}


@pytest.mark.parametrize("values,needle", [
    (["batch_sizes=[1,16.0]"], "batch_sizes[1]: 16.0 is not a whole number (write 16)"),
    (["tuning={'top_k': 2.0}"], "tuning.top_k: 2.0 is not a whole number (write 2)"),
    (["device_name=NVIDIA_H200"], "backend: 'interpret' with device_name: 'NVIDIA_H200': the interpreter's timings"),
    ([f"device_name={'H' * 200}", "backend=cuda"], f"device_name: '{'H' * 200}' (200 bytes) makes the file name"),
], ids=["float batch size", "float tuning count", "interpreter under a GPU's name", "device name too long"])
def test_values_of_the_wrong_type_size_or_sense_stop_before_any_job(tmp_path, values, needle):
    """Before: a batch size 16.0 stopped the run with a traceback (invalid literal for int(): '16.0'), and the
    interpreter wrote CPU timings under an H200's name, where vLLM on an H200 would load them."""
    wd = make_workdir(tmp_path)
    run = snakemake(wd, "--cores", "2", "--config", *values)
    assert run.returncode != 0
    assert f"Invalid configuration: {needle}" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and nothing_written(wd)


def test_unusable_lock_folder_stops_before_any_job(tmp_path):
    wd = make_workdir(tmp_path)
    (tmp_path / "afile").write_text("")
    run = snakemake(wd, "--cores", "2", env={slots.LOCK_DIR_ENV: str(tmp_path / "afile" / "locks")})
    assert run.returncode != 0
    assert f"GPU slot locks cannot be written in {tmp_path / 'afile' / 'locks'}" in run.stderr, run.stderr[-2000:]
    assert f"set {slots.LOCK_DIR_ENV} to a writable" in run.stderr
    assert job_count(run.stderr, "tune") > 0 and not list((wd / "logs").rglob("M*.log"))


def test_yaml_syntax_error_names_the_config_file(tmp_path):
    wd = make_workdir(tmp_path)
    path = wd / "config" / "config.yaml"
    path.write_text(path.read_text() + "tp_sizes: [8\n")
    run = snakemake(wd, "--cores", "2")
    assert run.returncode != 0
    assert "Invalid configuration: config file config/config.yaml, line" in run.stderr, run.stderr[-2000:]
    assert "not valid YAML" in run.stderr and nothing_written(wd)


@pytest.mark.parametrize("where", ["config/config.yaml", "--configfile"])
def test_duplicate_key_names_the_file_and_the_key(tmp_path, where):
    """A key given twice in one file silently kept the last value."""
    wd = make_workdir(tmp_path)
    if where == "--configfile":
        extra = tmp_path / "extra.yaml"
        extra.write_text("batch_sizes: [1]\nout_dtype: float16\nbatch_sizes: [16]\n")
        run = snakemake(wd, "--cores", "2", "--configfile", str(extra))
        name = str(extra)
    else:
        path = wd / "config" / "config.yaml"
        path.write_text(path.read_text() + "out_dtype: float16\nout_dtype: float32\n")
        run = snakemake(wd, "--cores", "2")
        name, extra = "config/config.yaml", None
    assert run.returncode != 0
    key = "batch_sizes" if extra else "out_dtype"
    assert f"Invalid configuration: config file {name}: key {key!r} is given twice" in run.stderr, run.stderr[-2000:]
    assert nothing_written(wd)


def test_malformed_compare_file_stops_the_run_at_start(tmp_path):
    """A malformed JSON in compare_dir was found only at verify time, without the file's name."""
    folder = tmp_path / "vllm_configs"
    folder.mkdir()
    bad = folder / config_file_name(256, 512, "cpu_interpreter", (128, 128), input_type="fp8", engine="vllm")
    bad.write_text("{'not': json")
    wd = make_workdir(tmp_path, compare_dir=str(folder))
    run = snakemake(wd, "--cores", "2")
    assert run.returncode != 0
    assert f"Invalid configuration: compare_dir: {bad}: not a readable JSON file" in run.stderr, run.stderr[-2000:]
    assert nothing_written(wd)


def test_report_before_any_run_says_what_to_run(tmp_path):
    """It printed 'Report created.' for an empty report, plus a docutils error."""
    wd = make_workdir(tmp_path)
    run = snakemake(wd, "--report", "report.html")
    assert run.returncode != 0
    assert "nothing to report yet for this configuration" in run.stderr, run.stderr[-2000:]
    assert not (wd / "report.html").exists()


def test_report_without_verification_says_how_to_add_it(tmp_path):
    """A report of the tuned files alone: its first page says there is no verification and how to add it."""
    wd = make_workdir(tmp_path, shapes=[[256, 512]], batch_sizes=[1])
    assert snakemake(wd, "--cores", "2").returncode == 0
    run = snakemake(wd, "--cores", "2", "--report", "report.html")
    assert run.returncode == 0, run.stderr[-2000:]
    html = (wd / "report.html").read_text()
    assert "<strong>Not verified</strong>" in html and "system-message" not in html
    text = " ".join(re.sub(r"<[^>]*>", "", html).replace("\\n", " ").split())  # the words, without markup
    assert "snakemake verify_all --cores all" in text and "snakemake --report report.html verify_all" in text
    assert "verify: true" in text


def test_slurm_profile_with_its_placeholders_fails_fast(tmp_path):
    """The EDIT_ME partition passed a dry run silently (and failed every job on the cluster)."""
    wd = make_workdir(tmp_path)
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    assert cfg["backend"] == "interpret"
    run = snakemake(wd, "-n", "--profile", str(REPO / "profiles" / "slurm"))
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert ("the profile still holds 3 placeholder(s) of profiles/slurm/config.yaml: default-resources: "
            "slurm_partition=EDIT_ME_gpu_partition; default-resources: slurm_account=EDIT_ME_account; set-resources: "
            "compile: slurm_partition=EDIT_ME_cpu_partition") in out, out[-2000:]
    assert nothing_written(wd)


def test_targets_after_options_that_take_several_values(tmp_path):
    """`--config device_name=X tp8` takes tp8 as a config value (argparse); `--` ends the list (README)."""
    run = snakemake(tmp_path, "-n", "--cores", "2", "--config", "device_name=NVIDIA_H100_80GB_HBM3", "--", "tp8")
    assert run.returncode == 0, run.stderr[-2000:]
    points = len(model_shapes("deepseek_v3", 8)) * 18  # the default shapes at TP=8, vLLM's 18 batch sizes
    assert job_count(run.stdout, "tune") == points and job_count(run.stdout, "tp8") == 1
    assert job_count(run.stdout, "all") == 0


def checkout_copy(root, **config):
    """A copy of this checkout's workflow (Snakefile, workflow/, profiles/) whose config/config.yaml holds `config`."""
    import shutil

    copy = root / "checkout"
    shutil.copytree(REPO / "workflow", copy / "workflow")
    shutil.copytree(REPO / "profiles", copy / "profiles")
    shutil.copy(REPO / "Snakefile", copy / "Snakefile")
    (copy / "config").mkdir()
    (copy / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def test_workdir_elsewhere_reads_the_checkouts_config(tmp_path):
    """`snakemake -d elsewhere` ignored the checkout's config/config.yaml and planned the default sweep (here: the
    GPU sweep of DeepSeek-V3, which stops on a machine without a GPU). Now a folder without a config/config.yaml
    takes the one beside the Snakefile, and the run says which file it read."""
    cfg = {**yaml.safe_load(TEST_CONFIG.read_text()), "shapes": [[256, 512]], "batch_sizes": [1, 16]}
    copy = checkout_copy(tmp_path, **cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run([SNAKEMAKE, "-s", str(copy / "Snakefile"), "-d", str(elsewhere), "-n", "--cores", "2"],
                         capture_output=True, text=True, env=job_env(elsewhere))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert job_count(run.stdout, "tune") == 2 and job_count(run.stdout, "aggregate") == 1
    assert (f"config: {copy / 'config' / 'config.yaml'} (beside the Snakefile: {elsewhere} has no "
            "config/config.yaml)") in run.stderr
    # A working directory with its own config/config.yaml reads that one, and says so.
    wd = make_workdir(tmp_path)
    own = subprocess.run([SNAKEMAKE, "-s", str(copy / "Snakefile"), "-d", str(wd), "-n", "--cores", "2",
                          "--configfile", str(TEST_CONFIG), "--config", "batch_sizes=[1]"],
                         capture_output=True, text=True, env=job_env(wd))
    assert own.returncode == 0, own.stdout[-2000:] + own.stderr[-2000:]
    assert f"config: config/config.yaml, --configfile {TEST_CONFIG}, --config values" in own.stderr
    assert job_count(own.stdout, "tune") == 2  # its own config: the CI config's two shapes, at batch size 1


def test_a_file_system_without_file_locks_stops_before_any_job(tmp_path, monkeypatch):
    """Where flock fails (NFS without lock support, Lustre without -o flock), the run died in onstart with a bare
    `OSError: [Errno 37] No locks available`. Here every flock of the snakemake process fails as it would there (a
    sitecustomize module on its path replaces fcntl.flock)."""
    shim = tmp_path / "no_flock"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import errno, fcntl\n\n\ndef flock(fd, operation):\n    raise OSError(errno.ENOLCK, 'No locks available')\n"
        "\n\nfcntl.flock = flock\n")
    monkeypatch.setenv("PYTHONPATH", str(shim))
    wd = make_workdir(tmp_path)
    run = snakemake(wd, "--cores", "2")
    assert run.returncode != 0
    assert (".snakemake/ is on a file system without working file locks (flock: No locks available): compile and "
            "tune jobs share compiled kernels through locks there") in run.stderr, run.stderr[-2000:]
    assert not (wd / "results").exists() and not (wd / "logs").exists()


def test_yaml_syntax_error_in_a_configfile_is_named_by_the_config_check(tmp_path):
    """Snakemake reads a --configfile before the workflow runs and names neither the file nor the line (TESTING.md,
    Not covered here); the check the message points to does, as the workflow does for config/config.yaml."""
    import sys

    bad = tmp_path / "my.yaml"
    bad.write_text("batch_sizes: [1, 16]\ntp_sizes: [8\n")
    run = snakemake(make_workdir(tmp_path), "-n", "--configfile", str(bad))
    assert run.returncode != 0 and "Config file is not valid JSON or YAML" in run.stdout + run.stderr
    check = subprocess.run([sys.executable, "-m", "w8a8_tuner.plan.config", str(bad), str(TEST_CONFIG)],
                           capture_output=True, text=True)
    assert check.returncode == 1
    assert f"Invalid configuration: config file {bad}, line 3 column 1: not valid YAML" in check.stderr, check.stderr
    assert f"{TEST_CONFIG}: readable" in check.stdout
