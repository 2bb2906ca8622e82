"""Which launch-parameter values outside vLLM's space pay, and where? (issue: a wider search space)

For each point the tuner's own search runs twice on this GPU, once over vLLM's space and once over
vLLM's space plus the candidate values (EXTRA: BLOCK_SIZE_N 16, BLOCK_SIZE_K 32, num_warps 1 and 2,
num_stages 6 to 8, for the small tiles where they can matter). The two winners are then timed side
by side with a control (the wider winner twice) over FINAL_ROUNDS interleaved rounds:
vllm/wide > 1 means the wider space found a faster config. The wider winner's values say which
extra value paid.

    python3 -m benchmarks.space_check [--points N,K,M;...] --out DIR

Writes DIR/space_points.tsv and prints a table and, per extra value, the points whose winner used it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from benchmarks import common

FINAL_BUDGET_US, FINAL_ROUNDS = 2000.0, 15
# Candidate values beyond vLLM's space, crossed with the small tiles where they can matter.
EXTRA = {"BLOCK_SIZE_M": [16, 32, 64], "BLOCK_SIZE_N": [16, 32, 64, 128], "BLOCK_SIZE_K": [32, 64, 128],
         "GROUP_SIZE_M": [1], "num_warps": [1, 2, 4, 8], "num_stages": [2, 3, 4, 5, 6, 7, 8]}
# Shapes of DeepSeek-V3 TP=8 with K=7168 (three specializations in all) at small and mid batch sizes.
DEFAULT_POINTS = [(n, 7168, m) for n in (576, 1536, 4608, 24576) for m in (1, 16, 64)]


def extra_values(config, vllm_space) -> list[str]:
    """The values of `config` that vLLM's space lacks, as 'PARAM=value'."""
    return [f"{p}={v}" for p, v in config.as_dict().items() if v not in vllm_space[p]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default=None, help="N,K,M;N,K,M... (default: K=7168 shapes at M=1,16,64)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--backend", default="cuda", choices=["cuda", "interpret"], help="interpret: a CPU check")
    ap.add_argument("--cache", default="/tmp/w8a8-space-check")
    ap.add_argument("--tiny", action="store_true", help="a few configs only (a CPU check of this script)")
    args = ap.parse_args()
    from w8a8_tuner.search.backend import prepare

    backend = prepare(args.backend, args.cache)
    import torch
    import triton

    from w8a8_tuner.search.bench import launches_for
    from w8a8_tuner.search.compile import Point
    from w8a8_tuner.search.settings import SearchSettings
    from w8a8_tuner.search.space import expand, valid_configs
    from w8a8_tuner.search.stages import tune_point
    from w8a8_tuner.search.workload import Workload

    cfg = common.defaults()
    search = SearchSettings.from_tuning(cfg["tuning"])
    block = tuple(cfg["block_shape"])
    vllm_space, extra = cfg["search_space"], EXTRA
    if args.tiny:
        vllm_space = {**vllm_space, "BLOCK_SIZE_M": [16], "BLOCK_SIZE_N": [32, 64], "GROUP_SIZE_M": [1],
                      "BLOCK_SIZE_K": [128], "num_warps": [4], "num_stages": [2]}
        extra = {**vllm_space, "BLOCK_SIZE_N": [16], "num_warps": [2]}
    vllm = list(valid_configs(vllm_space, block))
    wide = sorted(set(vllm) | set(expand(extra)))
    points = ([tuple(int(x) for x in p.split(",")) for p in args.points.split(";")] if args.points
              else DEFAULT_POINTS)
    device = torch.cuda.get_device_name() if backend.on_gpu else "CPU (interpreter)"
    arch = backend.arch(device.replace(" ", "_"))
    print(f"{device}, torch {torch.__version__}, triton {triton.__version__}; {len(vllm)} vLLM configs, "
          f"{len(wide)} wider", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for N, K, M in points:
        t0 = time.perf_counter()
        point = Point(M, N, K, block, cfg["out_dtype"])
        workload = Workload.create(M, N, K, block, cfg["out_dtype"], backend.device, backend.cache_bytes(),
                                   input_type=cfg["input_type"], kernel=cfg["kernel"])
        bench = backend.bench()
        compiler = backend.compiler(point, args.workers, arch)
        t_wide0 = time.perf_counter()
        best_wide = tune_point(workload, wide, search, bench, compiler, log=lambda s: None).best
        t_wide = time.perf_counter() - t_wide0
        t_vllm0 = time.perf_counter()
        best_vllm = tune_point(workload, vllm, search, bench, compiler, log=lambda s: None).best
        t_vllm = time.perf_counter() - t_vllm0  # compiled already: the search alone
        contenders = [best_vllm, best_wide, best_wide]
        launchers = [workload.launcher(c) for c in contenders]
        first = bench.median_us(launchers, 1, 3)
        us = bench.median_us(launchers, [launches_for(t, FINAL_BUDGET_US) for t in first], FINAL_ROUNDS)
        row = {"N": N, "K": K, "M": M, "vllm": best_vllm.label(), "vllm_us": us[0], "wide": best_wide.label(),
               "wide_us": us[1], "vllm_over_wide": us[0] / us[1], "control": us[2] / us[1],
               "extra": ",".join(extra_values(best_wide, vllm_space)) or "-",
               "search_s_wide": t_wide, "search_s_vllm": t_vllm, "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"N={N} K={K} M={M}: vLLM {row['vllm']} {us[0]:.2f} us, wider {row['wide']} {us[1]:.2f} us, "
              f"vllm/wide {row['vllm_over_wide']:.3f} (control {row['control']:.3f}), extra {row['extra']}; "
              f"search {t_wide:.1f} s wide (compile included), {t_vllm:.1f} s vLLM", flush=True)
    cols = list(rows[0])
    (out / "space_points.tsv").write_text("\t".join(cols) + "\n" + "".join(
        "\t".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n" for r in rows))
    ratios = [r["vllm_over_wide"] for r in rows]
    print(f"\nvllm/wide geomean {statistics.geometric_mean(ratios):.3f}, max {max(ratios):.3f}, "
          f"min {min(ratios):.3f}; control max deviation {max(abs(r['control'] - 1) for r in rows):.3f}")
    values = sorted({v for r in rows for v in r["extra"].split(",") if v != "-"})
    for v in values:
        used = [r for r in rows if v in r["extra"].split(",")]
        print(f"{v}: winner at {len(used)} points, vllm/wide there "
              + ", ".join(f"M={r['M']} N={r['N']} {r['vllm_over_wide']:.3f}" for r in used))


if __name__ == "__main__":
    main()
