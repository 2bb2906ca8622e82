"""(b) The tuning loop of vLLM's benchmark_w8a8_block_fp8.py, re-implemented, against this workflow.

`run`: vLLM's loop on the points and search space of a workflow config file: one process,
each config compiled when first launched (serially), 5 warm-up launches, then 10 launches
each bracketed by synchronize and events, mean latency, best of all configs; no check of
the numbers. Inputs as vLLM draws them (uniform fp8 values, scales * 1e-2). Writes the
chosen configs and the wall time.

`compare`: the configs chosen by `run` and by the workflow, timed side by side in one
process with the workflow's careful method (cold L2, median of long batches).

    python3 -m benchmarks.vllm_baseline run CONFIG.yaml OUT.json
    python3 -m benchmarks.vllm_baseline compare OUT.json RESULTS_DIR CONFIG.yaml
"""

import json
import statistics
import sys
import time
from pathlib import Path

import yaml

from benchmarks import common


def load(config_path):
    return common.defaults(**yaml.safe_load(Path(config_path).read_text()))


def run(config_path, out_path):
    import torch
    import triton

    from kernels.block_fp8 import OUT_DTYPES, block_fp8_matmul
    from w8a8_tuner.search.space import valid_configs

    cfg = load(config_path)
    block = tuple(cfg["block_shape"])
    space = valid_configs(cfg["search_space"], block)
    out_dtype = OUT_DTYPES[cfg["out_dtype"]]
    fp8 = torch.float8_e4m3fn
    fmax = torch.finfo(fp8).max
    t_all = time.perf_counter()
    chosen = {}
    for N, K in cfg["shapes"]:
        for M in cfg["batch_sizes"]:
            t0 = time.perf_counter()
            A = ((torch.rand(M, K, device="cuda") - 0.5) * 2 * fmax).clamp(-fmax, fmax).to(fp8)
            B = ((torch.rand(N, K, device="cuda") - 0.5) * 2 * fmax).clamp(-fmax, fmax).to(fp8)
            As = torch.rand(M, triton.cdiv(K, block[1]), device="cuda") * 1e-2
            Bs = torch.rand(triton.cdiv(N, block[0]), triton.cdiv(K, block[1]), device="cuda") * 1e-2
            best, best_t = None, float("inf")
            for c in space:
                def launch(A=A, B=B, As=As, Bs=Bs, c=c):
                    block_fp8_matmul(A, B, As, Bs, block, c.as_dict(), out_dtype)
                try:
                    torch.cuda.synchronize()
                    for _ in range(5):
                        launch()
                    torch.cuda.synchronize()
                except triton.runtime.errors.OutOfResources:
                    continue
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                lat = []
                for _ in range(10):
                    torch.cuda.synchronize()
                    start.record()
                    launch()
                    end.record()
                    end.synchronize()
                    lat.append(start.elapsed_time(end))
                mean_us = sum(lat) / len(lat) * 1000
                if mean_us < best_t:
                    best, best_t = c, mean_us
            chosen[f"{N},{K},{M}"] = best.as_dict()
            print(f"vLLM loop N={N} K={K} M={M}: {best.label()} {best_t:.2f} us ({time.perf_counter() - t0:.1f} s)",
                  flush=True)
    wall = time.perf_counter() - t_all
    Path(out_path).write_text(json.dumps({"wall_s": wall, "chosen": chosen}, indent=1))
    print(f"vLLM loop wall: {wall:.1f} s for {len(chosen)} points, {len(space)} configs each")


def compare(out_path, results_dir, config_path):
    from w8a8_tuner.results.naming import config_file_names, load_config_file, pick_config
    from w8a8_tuner.search.backend import prepare
    from w8a8_tuner.search.bench import launches_for
    from w8a8_tuner.search.space import Config
    from w8a8_tuner.search.workload import Workload

    backend = prepare("cuda")
    cfg = load(config_path)
    block = tuple(cfg["block_shape"])
    base = json.loads(Path(out_path).read_text())
    results_dir = Path(results_dir)
    bench = backend.bench()
    ratios = []
    print("| N | K | M | vLLM loop chose | us | workflow chose | us | vLLM/workflow |")
    print("|---|---|---|---|---|---|---|---|")
    for key, cdict in base["chosen"].items():
        N, K, M = (int(x) for x in key.split(","))
        name = config_file_names(N, K, results_dir.name, block, input_type=cfg["input_type"], engine=cfg["engine"])[0]
        ours = pick_config(load_config_file(results_dir / "configs" / name), M)
        theirs = Config(**cdict)
        workload = Workload.create(M, N, K, block, cfg["out_dtype"], "cuda", backend.cache_bytes(),
                                   input_type=cfg["input_type"], kernel=cfg["kernel"])
        launchers = [workload.launcher(c) for c in (ours, theirs)]
        first = bench.median_us(launchers, 1, 3)
        t_ours, t_theirs = bench.median_us(launchers, [launches_for(t, 2000) for t in first], 15)
        ratios.append(t_theirs / t_ours)
        print(f"| {N} | {K} | {M} | {theirs.label()} | {t_theirs:.2f} | {ours.label()} | {t_ours:.2f} | "
              f"{t_theirs / t_ours:.3f} |")
    print(f"geomean vLLM-loop config time / workflow config time: {statistics.geometric_mean(ratios):.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3])
    else:
        compare(sys.argv[2], sys.argv[3], sys.argv[4])
