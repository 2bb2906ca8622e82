"""The 8-GPU projection (benchmarks/projection.py): measured costs replayed through the real snakemake on
fake GPUs, with the stand-in (w8a8_tuner.standin) sleeping each compile and each point's GPU time."""

import json

import pytest
from conftest import validated, wait_for, workers_of

from benchmarks.projection import Node, build_costs, run_node, synthetic_costs, write_report

pytestmark = pytest.mark.e2e

SPACE = {"BLOCK_SIZE_M": [16, 32], "BLOCK_SIZE_N": [64, 128], "BLOCK_SIZE_K": [128], "GROUP_SIZE_M": [1, 16],
         "num_warps": [4], "num_stages": [2]}
SCALE = 20.0  # 0.6 s compiles sleep 30 ms


def test_projection_replays_costs_on_fake_gpus_through_snakemake(tmp_path):
    config = validated(device_name="NVIDIA_H200", shapes=[[256, 512], [384, 256]], batch_sizes=[1, 32],
                       search_space=SPACE, search_space_extra=[])
    costs = synthetic_costs(config, compile_s=0.6, first_round_ms=20, rest_s=0.4, worker_start_s=1.0)
    needed = {(spec, label) for spec, c in costs["compile"].items() for label in c["configs"]}

    runs = [run_node(costs, Node(gpus, cores, SCALE), tmp_path, timeout_s=300, snakemake_args=[])
            for gpus, cores in ((1, 3), (2, 4))]
    text = write_report(runs, costs, tmp_path / "out")

    for run in runs:
        wd = tmp_path / run["node"]
        results = wd / "results" / "NVIDIA_H200"
        assert len(list(results.glob("tune/*/N*_K*/M*.tsv"))) == len(costs["points"]) == run["points"] == 4
        assert len(list((results / "configs").glob("*.json"))) == 2
        # each config the sweep needs was compiled exactly once, by a compile job or a tune worker
        assert run["compiled_configs"] == len(needed) and run["compiled_twice"] == 0
        assert wait_for(lambda wd=wd: not workers_of(wd), timeout=30), "the run's workers were left running"
    assert set(runs[1]["slots"]) == {"fake0", "fake1"}, "both fake GPUs took points"
    assert all(s["jobs"] >= 1 for s in runs[1]["slots"].values())
    for field in ("wall_s", "speedup", "gpu_floor_s", "first_tune_job_s", "job_gap_s_median", "busy_min"):
        assert field in (tmp_path / "out" / "summary.tsv").read_text().splitlines()[0].split("\t")
    one, two = (run["node"] for run in runs)
    assert f"bottleneck on {two}:" in text and f"speedup {two} over {one}" in text
    assert json.loads((tmp_path / "out" / "runs.json").read_text())[1]["gpus"] == 2

    # The costs a sweep folder gives back (here the 1-GPU run's): every point and every compiled config.
    back = build_costs(tmp_path / runs[0]["node"], compile_scale=SCALE)
    assert set(back["points"]) == set(costs["points"])
    assert {(spec, label) for spec, c in back["compile"].items() for label in c["configs"]} == needed
    assert back["compile_mean_s"] == pytest.approx(0.6, rel=0.5)
    rest = [p["rest_s"] for p in back["points"].values()]
    assert min(rest) == pytest.approx(0.4 / SCALE, abs=0.02)
    assert back["worker_start_s"] > 0
