"""Bad config values stop the real `snakemake` before any job, naming the key; nothing is written."""

import pytest
import yaml

from conftest import snakemake


def run_with(workdir, change):
    path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    change(cfg)
    path.write_text(yaml.safe_dump(cfg))
    return snakemake(workdir, "--cores", "2")


CASES = [
    ("unknown key", lambda c: c.update(batchsizes=[1]), "batchsizes"),
    ("wrong type", lambda c: c.update(batch_sizes="16"), "batch_sizes"),
    ("non-positive batch", lambda c: c.update(batch_sizes=[0, 16]), "batch_sizes"),
    ("duplicate batch", lambda c: c.update(batch_sizes=[16, 16]), "batch_sizes"),
    ("bad block split", lambda c: c.update(shapes=[], tp_sizes=[32]), "tp_sizes: tp=32 splits K=18432"),
    ("BLOCK_SIZE_K not dividing block_k",
     lambda c: c["search_space"].update(BLOCK_SIZE_K=[128, 256]), "search_space.BLOCK_SIZE_K: [256]"),
    ("empty list", lambda c: c["search_space"].update(num_warps=[]), "num_warps"),
    ("unknown out_dtype", lambda c: c.update(out_dtype="int8"), "out_dtype"),
    ("unknown input_type", lambda c: c.update(input_type="int8"), "input_type"),
    ("zero dimension", lambda c: c.update(shapes=[[0, 256]]), "shapes"),
    ("negative dimension", lambda c: c.update(shapes=[[256, -1]]), "shapes"),
    ("unknown backend", lambda c: c.update(backend="rocm"), "backend"),
]


@pytest.mark.parametrize("name,change,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_value_stops_before_any_job(workdir, name, change, needle):
    run = run_with(workdir, change)
    assert run.returncode != 0
    assert needle in run.stderr, run.stderr[-2000:]
    assert not (workdir / "results").exists()
    assert "tune" not in run.stdout
