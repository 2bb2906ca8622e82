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


# (case, change, what the message must show: the key and the offending value)
CASES = [
    ("unknown key", lambda c: c.update(batchsizes=[1]), ["top level", "'batchsizes' was unexpected"]),
    ("wrong type", lambda c: c.update(batch_sizes="16"), ["batch_sizes: '16' is not of type 'array'"]),
    ("wrong item type", lambda c: c.update(batch_sizes=[1.5]), ["batch_sizes[0]: 1.5 is not of type 'integer'"]),
    ("non-positive batch", lambda c: c.update(batch_sizes=[0, 16]), ["batch_sizes[0]: 0 is less than the minimum"]),
    ("negative batch", lambda c: c.update(batch_sizes=[16, -4]), ["batch_sizes[1]: -4 is less than the minimum"]),
    ("duplicate batch", lambda c: c.update(batch_sizes=[16, 16]), ["batch_sizes: [16, 16] has non-unique"]),
    ("duplicate tp size", lambda c: c.update(tp_sizes=[8, 8]), ["tp_sizes: [8, 8] has non-unique"]),
    ("bad block split", lambda c: c.update(shapes=[], tp_sizes=[32]),
     ["tp_sizes: tp=32 splits K=18432 into 576, not a multiple of block_k=128"]),
    ("block_shape not dividing a split", lambda c: c.update(shapes=[], tp_sizes=[16], block_shape=[128, 256]),
     ["tp_sizes: tp=16 splits K=18432 into 1152, not a multiple of block_k=256"]),
    ("block_shape zero", lambda c: c.update(block_shape=[0, 128]), ["block_shape[0]: 0 is less than the minimum"]),
    ("BLOCK_SIZE_K not dividing block_k",
     lambda c: c["search_space"].update(BLOCK_SIZE_K=[128, 256]),
     ["search_space.BLOCK_SIZE_K: [256] do not divide block_k=128"]),
    ("BLOCK_SIZE_K not a power of two",
     lambda c: c["search_space"].update(BLOCK_SIZE_K=[96]), ["search_space.BLOCK_SIZE_K[0]: 96 is not one of"]),
    ("empty search space list", lambda c: c["search_space"].update(num_warps=[]),
     ["search_space.num_warps: [] should be non-empty"]),
    ("search space missing a parameter", lambda c: c["search_space"].pop("num_stages"),
     ["search_space: 'num_stages' is a required property"]),
    ("unknown search space parameter", lambda c: c["search_space"].update(waves=[1]),
     ["search_space: Additional properties", "'waves' was unexpected"]),
    ("unknown out_dtype", lambda c: c.update(out_dtype="int8"), ["out_dtype: 'int8' is not one of"]),
    ("unknown input_type", lambda c: c.update(input_type="int8"), ["input_type: 'int8' is not one of ['fp8']"]),
    ("zero dimension", lambda c: c.update(shapes=[[0, 256]]), ["shapes[0][0]: 0 is less than the minimum"]),
    ("negative dimension", lambda c: c.update(shapes=[[256, -1]]), ["shapes[0][1]: -1 is less than the minimum"]),
    ("unknown backend", lambda c: c.update(backend="rocm"), ["backend: 'rocm' is not one of"]),
    ("bad tuning value", lambda c: c["tuning"].update(top_k=0), ["tuning.top_k: 0 is less than the minimum"]),
]


@pytest.mark.parametrize("name,change,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_value_stops_before_any_job(workdir, name, change, needles):
    run = run_with(workdir, change)
    assert run.returncode != 0
    assert "Invalid configuration: " in run.stderr, run.stderr[-2000:]
    for needle in needles:
        assert needle in run.stderr, run.stderr[-2000:]
    # One short message, not the schema dumped.
    assert len(run.stderr.splitlines()) < 15, run.stderr[-2000:]
    assert not (workdir / "results").exists() and not (workdir / "logs").exists()
    assert "tune" not in run.stdout
