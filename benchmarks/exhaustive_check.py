"""(c) Does the staged search find the best? Chosen config vs an exhaustive careful search.

For each point, every valid config of the space is timed carefully (long batches, many
repeats; configs that fail to compile, run out of resources or give wrong numbers
excluded), side by side with the config the workflow chose, in one process.

    python3 benchmarks/exhaustive_check.py RESULTS_DIR N,K,M [N,K,M ...]

RESULTS_DIR is results/<device> of a finished sweep (its JSONs and Triton cache are used).
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.jobs import prepare_environment  # noqa: E402


def main():
    results = Path(sys.argv[1])
    points = [tuple(int(x) for x in p.split(",")) for p in sys.argv[2:]]
    prepare_environment("cuda", str(results / "triton_cache"))
    import math

    import torch

    from kernels import compile as kcompile
    from kernels import timing
    from kernels.naming import config_file_name, load_config_file, pick_config
    from kernels.reference import MAX_RELATIVE_ERROR, random_operands, reference_matmul, relative_error
    from kernels.search_space import DEFAULT_SPACE, valid_configs
    from kernels.tuner import make_launcher

    device = results.name
    block = (128, 128)
    configs = valid_configs(DEFAULT_SPACE, block)
    rows = []
    for N, K, M in points:
        t0 = time.perf_counter()
        chosen = pick_config(load_config_file(results / "configs" / config_file_name(N, K, device, block)), M)
        point = kcompile.Point(M, N, K, block, "bfloat16")
        compiled = kcompile.precompile(point, configs, 16)
        ops = random_operands(M, N, K, block, device="cuda")
        ref = reference_matmul(ops)
        weights = timing.rotating_weights(ops.B, ops.Bs, on_gpu=True)
        copies = len(weights)
        out = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        times = {}
        for c in configs:
            if compiled[c].status != "ok":
                continue
            launch = make_launcher(ops, weights, out, c)
            out.fill_(math.nan)
            try:
                launch(0)
            except Exception:  # noqa: BLE001
                continue
            if not relative_error(out, ref) <= MAX_RELATIVE_ERROR:
                continue
            est = timing.time_batch(launch, 2, copies)
            times[c] = timing.median_time_us(launch, copies, 1000, 7, est)
        # Careful re-measure of the exhaustive top 3 and the chosen one, interleaved.
        top = sorted(times, key=times.get)[:3]
        final = {c: [] for c in {*top, chosen}}
        for _ in range(5):
            for c in final:
                launch = make_launcher(ops, weights, out, c)
                final[c].append(timing.median_time_us(launch, copies, 2000, 5, times.get(c, 10.0)))
        med = {c: statistics.median(v) for c, v in final.items()}
        best = min(med, key=med.get)
        ratio = med[chosen] / med[best]
        rows.append((N, K, M, chosen.label(), med[chosen], best.label(), med[best], ratio, len(times),
                     time.perf_counter() - t0))
        print(f"N={N} K={K} M={M}: chosen {chosen.label()} {med[chosen]:.2f} us, exhaustive best "
              f"{best.label()} {med[best]:.2f} us, chosen/best {ratio:.3f} ({len(times)} configs timed, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
    print("\n| N | K | M | chosen | us | exhaustive best | us | chosen/best |")
    print("|---|---|---|---|---|---|---|---|")
    for N, K, M, cl, ct, bl, bt, r, _, _ in rows:
        print(f"| {N} | {K} | {M} | {cl} | {ct:.2f} | {bl} | {bt:.2f} | {r:.3f} |")
    print(f"worst chosen/best: {max(r[7] for r in rows):.3f}")


if __name__ == "__main__":
    main()
