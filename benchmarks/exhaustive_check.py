"""Does the staged search find the best config? And how far is each stage's timing from the careful one?

For each point, every distinct valid config of the space (the configs the tuner times) is compiled,
checked against the float32 reference, and timed with the tuner's own bench three ways:
  estimate  the tuner's first timing (single launches, `estimate_rounds` interleaved rounds; the first
            round on its own too, which decides what gets the other rounds)
  screen    the tuner's screen (`screen_budget_us` batches, `screen_repeats` rounds)
  careful   CAREFUL_BUDGET_US batches, CAREFUL_ROUNDS interleaved rounds
The config the workflow chose (from a sweep's JSON with --results, or found here by running the
tuner's search on the same GPU with --tune) and the exhaustive top 5 are then re-measured
side by side (FINAL_BUDGET_US, FINAL_ROUNDS): chosen/best is the check.

    python3 -m benchmarks.exhaustive_check --points smoke|tp8|tp8small|N,K,M[;N,K,M...] (--results DIR | --tune) \
        --out DIR [--config settings.yaml]

(tp8small: every DeepSeek-V3 TP=8 shape at M = 1, 4, 16, where SGLang's Hopper knobs are tuned with
`engine: sglang` in --config.)

Writes DIR/points.tsv (one row per point) and DIR/timings.tsv (every config's three timings), and
prints the ratio distributions that set the tuner's cutoffs: for each stage, the stage's time over
the careful time of every config, and the careful winner's stage time over the stage's best (what
a cutoff must keep).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

from benchmarks import common

CAREFUL_BUDGET_US, CAREFUL_ROUNDS = 300.0, 5
FINAL_BUDGET_US, FINAL_ROUNDS, TOP = 2000.0, 15, 5


def parse_points(text: str) -> list[tuple[int, int, int]]:
    if text == "tp8":
        return common.exhaustive_points()
    if text == "tp8small":
        return common.small_batch_points()
    if text == "smoke":
        return common.SMOKE_POINTS
    return [tuple(int(x) for x in p.split(",")) for p in text.split(";")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", required=True)
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--results", help="results/<device> of a finished sweep: its JSONs give the chosen configs")
    how.add_argument("--tune", action="store_true", help="find the chosen config here with the tuner's search")
    ap.add_argument("--cache", default=None, help="Triton cache (default: the sweep's, or /tmp/w8a8-exhaustive)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--config", help="a YAML file of workflow settings over the defaults (search_space, tuning)")
    ap.add_argument("--backend", default="cuda", choices=["cuda", "interpret"],
                    help="interpret: a CPU check of this script")
    args = ap.parse_args()
    import yaml

    from w8a8_tuner.search.backend import prepare

    cache = args.cache or (str(Path(args.results) / "triton_cache") if args.results else "/tmp/w8a8-exhaustive")
    backend = prepare(args.backend, cache)
    cfg = common.defaults(**(yaml.safe_load(Path(args.config).read_text()) if args.config else {}))

    import torch
    import triton

    from w8a8_tuner.plan.sweep import make_plan
    from w8a8_tuner.results.naming import config_file_names, load_config_file, pick_config, runs_knobs
    from w8a8_tuner.search.bench import launches_for
    from w8a8_tuner.search.compile import Point
    from w8a8_tuner.search.settings import SearchSettings
    from w8a8_tuner.search.space import pruned_at, timed_at
    from w8a8_tuner.search.stages import tune_point
    from w8a8_tuner.search.status import OK
    from w8a8_tuner.search.workload import Workload

    search = SearchSettings.from_tuning(cfg["tuning"])
    device = torch.cuda.get_device_name() if backend.on_gpu else "CPU (interpreter)"
    # the configs the workflow tunes at M (search_space, its extra regions where they apply, the block shape)
    plan = make_plan({**cfg, "backend": args.backend,
                      "device_name": device.replace(" ", "_") if backend.on_gpu else "auto"},
                     detect=lambda b: "cpu_interpreter")
    space_at = plan.configs_at
    block = plan.block_shape
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arch = backend.arch(device.replace(" ", "_"))
    print(f"{device}, torch {torch.__version__}, triton {triton.__version__}; search {search}", flush=True)
    point_rows, timing_rows = [], []
    for N, K, M in parse_points(args.points):
        t0 = time.perf_counter()
        if args.results:
            names = config_file_names(N, K, Path(args.results).name, block, input_type=cfg["input_type"],
                                      engine=cfg["engine"])
            knob_names = [n for n in names if runs_knobs(n, N, K, Path(args.results).name, block,
                                                         input_type=cfg["input_type"])]
            name = knob_names[0] if plan.knobs and knob_names else names[0]  # the file with the widest space
            if not (Path(args.results) / "configs" / name).exists():  # a sweep of other shapes
                print(f"N={N} K={K} M={M}: skipped, no {name} in {args.results}/configs", flush=True)
                continue
        point = Point(M, N, K, block, cfg["out_dtype"], cfg["input_type"], cfg["kernel"])
        bench = backend.bench()
        workload = Workload.create(M, N, K, block, cfg["out_dtype"], backend.device, backend.cache_bytes(),
                                   input_type=cfg["input_type"], kernel=cfg["kernel"])
        if args.results:
            chosen = pick_config(load_config_file(Path(args.results) / "configs" / name), M)
        else:
            report = tune_point(workload, list(space_at(M)), search, bench,
                                backend.compiler(point, args.workers, arch),
                                prune=lambda cs, m, k: pruned_at(cs, m, k, search.prune_accumulators),
                                log=lambda s: None)
            chosen = report.best
        configs = timed_at(list(space_at(M)), M, K, search.prune_accumulators)
        compiled = {c: r for batch in backend.compiler(point, args.workers, arch)(configs) for c, r in batch.items()}
        checks = workload.check([c for c in configs if compiled[c].status == OK])
        ok = [c for c, r in checks.items() if r.right]
        launchers = [workload.launcher(c) for c in ok]
        # the tuner's first timing, every round for every config (the tuner gives the configs far
        # behind after round one no more rounds: `round1` says whether that could drop the winner)
        round1 = [s[0] for s in bench.measure(launchers, 1, 1)]
        later = bench.measure(launchers, 1, search.estimate_rounds - 1) if search.estimate_rounds > 1 else \
            [[] for _ in launchers]
        est = [statistics.median([f, *rest]) for f, rest in zip(round1, later)]
        screen = bench.median_us(launchers, [launches_for(t, search.screen_budget_us) for t in est],
                                 search.screen_repeats)
        careful = bench.median_us(launchers, [launches_for(t, CAREFUL_BUDGET_US) for t in est], CAREFUL_ROUNDS)
        for c, e, s, t in zip(ok, est, screen, careful):
            timing_rows.append(f"{N}\t{K}\t{M}\t{c.label()}\t{e:.3f}\t{s:.3f}\t{t:.3f}")
        by_careful = sorted(range(len(ok)), key=lambda i: careful[i])
        final = [ok[i] for i in by_careful[:TOP]]
        if chosen not in final:
            final.append(chosen)
        final_launchers = [workload.launcher(c) for c in final]
        first = bench.median_us(final_launchers, 1, 3)
        final_us = bench.median_us(final_launchers, [launches_for(t, FINAL_BUDGET_US) for t in first], FINAL_ROUNDS)
        best_i = min(range(len(final)), key=lambda i: final_us[i])
        chosen_us = final_us[final.index(chosen)]
        win = by_careful[0]  # the careful winner: what each stage's cutoff has to keep
        plain_careful = [careful[i] for i in range(len(ok)) if not ok[i].knobs]
        row = {"N": N, "K": K, "M": M, "configs": len(ok), "chosen": chosen.label(), "chosen_us": chosen_us,
               "best": final[best_i].label(), "best_us": final_us[best_i],
               "knob_configs": sum(c.knobs for c in ok),
               "best_plain_over_best_careful": min(plain_careful) / careful[by_careful[0]] if plain_careful
               else math.nan,
               "chosen_over_best": chosen_us / final_us[best_i],
               "winner_est_over_best_est": est[win] / min(est),
               "winner_screen_over_best_screen": screen[win] / min(screen),
               "winner_first_round_over_best": round1[win] / min(round1),
               "seconds": time.perf_counter() - t0, "bench_retries": getattr(bench, "retries", 0),
               "host_us": getattr(bench, "host_us", {}).get("launch", math.nan)}
        point_rows.append(row)
        print(f"N={N} K={K} M={M}: chosen {row['chosen']} {chosen_us:.2f} us, best {row['best']} "
              f"{row['best_us']:.2f} us, chosen/best {row['chosen_over_best']:.3f}; careful winner's estimate "
              f"{row['winner_est_over_best_est']:.3f}x the best estimate, "
              f"screen {row['winner_screen_over_best_screen']:.3f}x "
              f"({len(ok)} configs, {row['seconds']:.0f} s, bench retries {row['bench_retries']}, "
              f"host {row['host_us']:.1f} us a launch)",
              flush=True)
    cols = list(point_rows[0])
    (out / "points.tsv").write_text("\t".join(cols) + "\n" + "".join(
        "\t".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n" for r in point_rows))
    header = "N\tK\tM\tconfig\testimate_us\tscreen_us\tcareful_us\n"
    (out / "timings.tsv").write_text(header + "\n".join(timing_rows) + "\n")
    summarize(point_rows, timing_rows)


def quantiles(values: list[float]) -> str:
    v = sorted(values)
    q = lambda p: v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]  # noqa: E731
    return (f"min {v[0]:.3f}, p0.1 {q(0.001):.3f}, p1 {q(0.01):.3f}, p50 {q(0.5):.3f}, p99 {q(0.99):.3f}, "
            f"p99.9 {q(0.999):.3f}, max {v[-1]:.3f} (n={len(v)})")


def summarize(point_rows, timing_rows) -> None:
    rows = [line.split("\t") for line in timing_rows]
    est = [float(r[4]) / float(r[6]) for r in rows]
    scr = [float(r[5]) / float(r[6]) for r in rows]
    print("\nestimate / careful, every config: " + quantiles(est))
    print("screen / careful, every config:   " + quantiles(scr))
    print("careful winner's estimate / best estimate, per point: "
          + quantiles([r["winner_est_over_best_est"] for r in point_rows]))
    print("careful winner's screen / best screen, per point:     "
          + quantiles([r["winner_screen_over_best_screen"] for r in point_rows]))
    print("careful winner's first round / best first round, per point (estimate_drop must exceed it): "
          + quantiles([r["winner_first_round_over_best"] for r in point_rows]))
    print("\n| N | K | M | chosen | us | exhaustive best | us | chosen/best |")
    print("|---|---|---|---|---|---|---|---|")
    for r in point_rows:
        print(f"| {r['N']} | {r['K']} | {r['M']} | {r['chosen']} | {r['chosen_us']:.2f} | {r['best']} | "
              f"{r['best_us']:.2f} | {r['chosen_over_best']:.3f} |")
    ratios = [r["chosen_over_best"] for r in point_rows]
    print(f"points: {len(ratios)}; chosen/best worst {max(ratios):.3f}, median {statistics.median(ratios):.3f}, "
          f"over 1.02: {sum(x > 1.02 for x in ratios)}")


if __name__ == "__main__":
    main()
