"""First look on a GPU: versions, the kernels against the float32 reference, launches, and the bench against itself.

    PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_check

1. The plain kernel with vLLM's fallback config and SGLang's Hopper kernel (SWAP_AB, every SPLIT_K, the
   split-K reduction) on fresh random operands (odd sizes, M=1, [32, 32] blocks), output poisoned first:
   relative error against the float32 reference.
2. Bound launches (kernels.block_fp8.bind_block_fp8) against Triton's dispatch: the same output bits, and
   the host time per launch of each.
3. The bench (w8a8_tuner.search.bench.GpuBench) at N=576 K=7168 M=1, where host launch latency is largest
   against the kernel: one config as two contenders (the control: their ratio is the noise), single
   launches, batches as CUDA graphs and batches as launches, and the held stream each needed.
4. Compiling without the GPU: configs (plain and with knobs) compiled by the offline compile processes
   are then launched here; the launches must find their binaries in the cache (no new cache entry).
"""

from __future__ import annotations

import math
import statistics
import time


def main() -> None:
    from w8a8_tuner.search.backend import prepare

    backend = prepare("cuda", "/tmp/w8a8-gpu-check-cache")
    import torch
    import triton

    from kernels.block_fp8 import BUILTIN, bind_block_fp8, block_fp8_matmul, run_block_fp8
    from kernels.reference import random_operands, reference_matmul, relative_error
    from w8a8_tuner.search.bench import GpuBench
    from w8a8_tuner.search.space import Config, vllm_default_config
    from w8a8_tuner.search.workload import Workload

    print(f"torch {torch.__version__} triton {triton.__version__} gpu {torch.cuda.get_device_name()}")
    worst = 0.0
    for block in ((128, 128), (32, 32)):
        default = vllm_default_config(block, input_type="fp8")
        hopper = [Config(16, 64, min(64, block[1]), 1, 4, 3, SWAP_AB=True, SPLIT_K=s) for s in (1, 2, 4, 8, 16)] + [
            Config(16, 32, block[1], 1, 4, 4, SPLIT_K=s) for s in (2, 8)]
        for M, N, K in [(1, 576, 7168), (3, 200, 320), (16, 4608, 7168), (100, 1536, 5120)]:
            ops = random_operands(M, N, K, block, device="cuda", input_type="fp8")
            ref = reference_matmul(ops)
            for config in [default, *hopper]:
                for dt in (torch.bfloat16, torch.float32):
                    out = torch.full((M, N), math.nan, dtype=dt, device="cuda")
                    block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, block, config.as_dict(), dt, out=out)
                    err = relative_error(out, ref)
                    worst = max(worst, err) if dt == torch.bfloat16 else worst
                    if not err < (8e-3 if dt == torch.bfloat16 else 1e-3):
                        print(f"WRONG block {block} M={M} N={N} K={K} {config.label()} {dt}: {err:.2e}")
    print(f"check: plain and Hopper kernels, blocks [128,128] and [32,32]: worst bf16 relative error {worst:.2e}")

    # 2. bound launches against Triton's dispatch
    M, N, K, block = 1, 576, 7168, (128, 128)
    ops = random_operands(M, N, K, block, device="cuda", input_type="fp8")
    for config in (Config(16, 32, 128, 1, 4, 5), Config(16, 64, 64, 1, 4, 3, SWAP_AB=True, SPLIT_K=8)):
        entry = config.as_dict()
        a = torch.full((M, N), math.nan, dtype=torch.bfloat16, device="cuda")
        b = torch.full((M, N), math.nan, dtype=torch.bfloat16, device="cuda")
        run_block_fp8(BUILTIN, ops.A, ops.B, a, ops.As, ops.Bs, block, entry)
        bound = bind_block_fp8(BUILTIN, ops.A, ops.B, b, ops.As, ops.Bs, block, entry)
        bound(ops.B, ops.Bs, b)
        torch.cuda.synchronize()
        host = {}
        calls = (("dispatch", lambda a=a, entry=entry: run_block_fp8(BUILTIN, ops.A, ops.B, a, ops.As, ops.Bs, block,
                                                                     entry)),
                 ("bound", lambda bound=bound, b=b: bound(ops.B, ops.Bs, b)))
        for name, fn in calls:
            t0 = time.perf_counter()
            for _ in range(200):
                fn()
            host[name] = (time.perf_counter() - t0) / 200 * 1e6
            torch.cuda.synchronize()
        print(f"launch {config.label()}: bound output {'==' if torch.equal(a, b) else '!='} dispatch output; host "
              f"per call: Triton dispatch {host['dispatch']:.1f} us, bound {host['bound']:.1f} us")

    # 3. the bench against itself
    workload = Workload.create(M, N, K, block, "bfloat16", "cuda", backend.cache_bytes(), seed=0,
                               input_type="fp8", kernel="builtin")
    small, big = Config(16, 32, 128, 1, 4, 5), Config(16, 64, 128, 1, 4, 4)
    knob = Config(16, 64, 64, 1, 4, 3, SWAP_AB=True, SPLIT_K=8)
    configs = (small, small, big, knob)
    launchers = [workload.launcher(c) for c in configs]
    for launch in launchers:
        launch(0)
    torch.cuda.synchronize()
    for label, graphs, launches in (("single launches", True, 1), ("batches of 50, graphs", True, 50),
                                    ("batches of 50, launches", False, 50)):
        bench = GpuBench(graphs=graphs)
        t0 = time.perf_counter()
        samples = bench.measure(launchers, launches, 21)
        wall = time.perf_counter() - t0
        a, b, c, d = (statistics.median(s) for s in samples)
        print(f"bench, {label}: {small.label()} {a:.2f} us and again {b:.2f} us (control ratio {b / a:.4f}), "
              f"{big.label()} {c:.2f} us, {knob.label()} {d:.2f} us; host "
              + ", ".join(f"{k} {v:.1f} us" for k, v in bench.host_us.items())
              + f" a call, {bench.retries} segments queued again, {wall:.2f} s wall")
    offline_compile_check(backend, torch)


def offline_compile_check(backend, torch) -> None:
    import os
    from pathlib import Path

    from w8a8_tuner.search.compile import Point, compile_stream
    from w8a8_tuner.search.space import Config
    from w8a8_tuner.search.workload import Workload

    cache = Path(os.environ["TRITON_CACHE_DIR"])
    M, N, K, block = 8, 1536, 7168, (128, 128)
    configs = [Config(16, 64, 128, 1, 4, 3), Config(64, 128, 128, 16, 8, 4), Config(32, 32, 64, 1, 2, 6),
               Config(16, 128, 64, 1, 4, 4, SWAP_AB=True), Config(16, 32, 128, 1, 4, 3, SPLIT_K=4)]
    arch = backend.arch(torch.cuda.get_device_name().replace(" ", "_"))
    t0 = time.perf_counter()
    outcomes = {c: r for b in compile_stream(Point(M, N, K, block, "bfloat16"), configs, 5, arch) for c, r in b.items()}
    entries = {p.name for p in cache.iterdir()}
    workload = Workload.create(M, N, K, block, "bfloat16", "cuda", backend.cache_bytes(), seed=1,
                               input_type="fp8", kernel="builtin")
    checks = workload.check(configs)
    added = {p.name for p in cache.iterdir()} - entries
    kinds = sorted({f.suffix for name in added for f in (cache / name).iterdir()})
    print(f"offline compile for sm{arch} ({time.perf_counter() - t0:.1f} s): "
          + ", ".join(f"{c.label()} {outcomes[c].status} rel.err {checks[c].rel_error:.1e}" for c in configs)
          + f"; cache entries the launches added: {len(added)} holding {kinds or 'nothing'} "
          "(no .cubin: the launches used the offline binaries; a .so is Triton's launcher stub)")


if __name__ == "__main__":
    main()
