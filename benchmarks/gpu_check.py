"""First look on a GPU: versions, kernel vs float32 reference, and one full-space tune with phase times.

Run on the GPU host from the repo root:
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --N 4608 --K 7168 --M 64
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.jobs import prepare_environment  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--N", type=int, default=4608)
    ap.add_argument("--K", type=int, default=7168)
    ap.add_argument("--M", type=int, nargs="+", default=[64])
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--cache", default="/tmp/w8a8-check-cache")
    args = ap.parse_args()
    prepare_environment("cuda", args.cache)

    import torch
    import triton

    from kernels import timing
    from kernels.kernel import block_fp8_matmul
    from kernels.reference import random_operands, reference_matmul, relative_error
    from kernels.search_space import DEFAULT_SPACE, valid_configs, vllm_default_config
    from kernels.tuner import Settings, make_launcher, tune_point

    print(f"torch {torch.__version__} triton {triton.__version__} gpu {torch.cuda.get_device_name()}")
    block = (128, 128)
    default = vllm_default_config(block)
    for M, N, K in [(1, 576, 7168), (33, 200, 300), (100, 4608, 7168), (4096, 7168, 2304)]:
        ops = random_operands(M, N, K, block, device="cuda")
        ref = reference_matmul(ops)
        for dt in (torch.bfloat16, torch.float16, torch.float32):
            out = torch.full((M, N), float("nan"), dtype=dt, device="cuda")
            block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, block, default, dt, out=out)
            print(f"check M={M} N={N} K={K} {dt}: rel err {relative_error(out, ref):.2e}")

    configs = valid_configs(DEFAULT_SPACE, block)
    for M in args.M:
        t0 = time.perf_counter()
        rep = tune_point(args.N, args.K, M, configs, block, "bfloat16",
                         Settings(compile_workers=args.workers), log=lambda s: print("   ", s))
        wall = time.perf_counter() - t0
        ops = random_operands(M, args.N, args.K, block, device="cuda")
        out = torch.empty((M, args.N), dtype=torch.bfloat16, device="cuda")
        weights = timing.rotating_weights(ops.B, ops.Bs, on_gpu=True)
        copies = len(weights)
        times = {}
        for name, cfg in (("tuned", rep.best), ("vllm_default", default)):
            launch = make_launcher(ops, weights, out, cfg)
            launch(0)
            times[name] = timing.median_time_us(launch, copies, 2000, 21, timing.time_batch(launch, 1, copies))
        print(f"point N={args.N} K={args.K} M={M}: wall {wall:.1f} s, best {rep.best.label()} "
              f"{times['tuned']:.2f} us, vLLM default {times['vllm_default']:.2f} us, "
              f"speedup {times['vllm_default'] / times['tuned']:.2f}x")


if __name__ == "__main__":
    main()
