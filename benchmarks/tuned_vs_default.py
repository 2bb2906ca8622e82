"""Tuned configs vs vLLM's fallback config, side by side, for every batch size of some shapes.

    python3 benchmarks/tuned_vs_default.py RESULTS_DIR N,K [N,K ...]

RESULTS_DIR is results/<device> of a finished sweep. Both configs of a point are timed in
the same process, interleaved, with the tuner's method (cold L2, median of long batches).
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.jobs import prepare_environment  # noqa: E402


def main():
    results = Path(sys.argv[1])
    prepare_environment("cuda", str(results / "triton_cache"))
    import torch

    from kernels import timing
    from kernels.naming import config_file_name, load_config_file
    from kernels.reference import random_operands
    from kernels.search_space import vllm_default_config
    from kernels.tuner import make_launcher

    block = (128, 128)
    default = vllm_default_config(block)
    ratios = []
    print("| N | K | M | tuned | tuned us | default us | speedup |")
    print("|---|---|---|---|---|---|---|")
    for shape in sys.argv[2:]:
        N, K = (int(x) for x in shape.split(","))
        tuned = load_config_file(results / "configs" / config_file_name(N, K, results.name, block))
        for M, config in tuned.items():
            ops = random_operands(M, N, K, block, device="cuda")
            weights = timing.rotating_weights(ops.B, ops.Bs, on_gpu=True)
            copies = len(weights)
            out = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
            samples = {config: [], default: []}
            for _ in range(5):
                for c in samples:
                    launch = make_launcher(ops, weights, out, c)
                    launch(0)
                    samples[c].append(timing.median_time_us(launch, copies, 2000, 5,
                                                            timing.time_batch(launch, 1, copies)))
            t_tuned, t_default = statistics.median(samples[config]), statistics.median(samples[default])
            ratios.append(t_default / t_tuned)
            print(f"| {N} | {K} | {M} | {config.label()} | {t_tuned:.2f} | {t_default:.2f} | "
                  f"{t_default / t_tuned:.2f} |", flush=True)
    print(f"geomean speedup of tuned over vLLM default: {statistics.geometric_mean(ratios):.3f} "
          f"over {len(ratios)} points; min {min(ratios):.3f}, max {max(ratios):.3f}")


if __name__ == "__main__":
    main()
