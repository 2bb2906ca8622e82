"""First look on a GPU: versions, the kernel against the float32 reference, and the bench against itself.

    PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_check

1. The kernel with vLLM's fallback config on fresh random operands (odd sizes and M=1 included),
   every output dtype, output poisoned first: relative error against the float32 reference.
2. The bench (w8a8_tuner.search.bench.GpuBench) at N=576 K=7168 M=1, where host launch latency is
   largest against the kernel: one config as two contenders (the control: their ratio is the
   noise), single launches vs batches, and the old first timing (events around one launch, stream
   not held) for comparison.
3. Compiling without the GPU: configs compiled by the offline compile processes (a GPUTarget for the
   architecture the device name gives, no CUDA) are then launched here; the launch must find their
   binaries in the cache (no new cache entry) and be right.
"""

from __future__ import annotations

import math
import statistics


def main() -> None:
    from w8a8_tuner.search.backend import prepare

    backend = prepare("cuda", "/tmp/w8a8-gpu-check-cache")
    import torch
    import triton

    from kernels.block_fp8 import OUT_DTYPES, block_fp8_matmul
    from kernels.reference import random_operands, reference_matmul, relative_error
    from w8a8_tuner.search.space import Config, vllm_default_config
    from w8a8_tuner.search.workload import Workload

    print(f"torch {torch.__version__} triton {triton.__version__} gpu {torch.cuda.get_device_name()}")
    block = (128, 128)
    default = vllm_default_config(block, input_type="fp8")
    for M, N, K in [(1, 576, 7168), (33, 200, 300), (100, 4608, 7168), (4096, 7168, 2304)]:
        ops = random_operands(M, N, K, block, device="cuda", input_type="fp8")
        ref = reference_matmul(ops)
        for name, dt in OUT_DTYPES.items():
            out = torch.full((M, N), math.nan, dtype=dt, device="cuda")
            block_fp8_matmul(ops.A, ops.B, ops.As, ops.Bs, block, default.as_dict(), dt, out=out)
            print(f"check M={M} N={N} K={K} {name}: relative error {relative_error(out, ref):.2e}")

    M, N, K = 1, 576, 7168
    workload = Workload.create(M, N, K, block, "bfloat16", "cuda", backend.cache_bytes(), seed=0,
                               input_type="fp8", kernel="builtin")
    bench = backend.bench()
    small, big = Config(16, 32, 128, 1, 4, 5), Config(16, 64, 128, 1, 4, 4)
    launchers = [workload.launcher(c) for c in (small, small, big)]
    for launch in launchers:
        launch(0)
    torch.cuda.synchronize()
    single = bench.measure(launchers, 1, 21)
    batched = bench.measure(launchers, 50, 21)
    for label, samples in (("single launches", single), ("batches of 50", batched)):
        a, b, c = (statistics.median(s) for s in samples)
        print(f"bench, {label}: {small.label()} {a:.2f} us and again {b:.2f} us (control ratio {b / a:.4f}), "
              f"{big.label()} {c:.2f} us")
    print(f"bench: host {bench.host_us:.1f} us per launch or event, {bench.retries} segments queued again")
    # The old first timing: events around one launch, the stream not held.
    old = []
    for _ in range(21):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        launchers[0](1)
        end.record()
        end.synchronize()
        old.append(start.elapsed_time(end) * 1000)
    print(f"old first timing (stream not held): {small.label()} {statistics.median(old):.2f} us")
    offline_compile_check(backend, torch)


def offline_compile_check(backend, torch) -> None:
    import os
    import time
    from pathlib import Path

    from w8a8_tuner.search.compile import Point, compile_stream
    from w8a8_tuner.search.space import Config
    from w8a8_tuner.search.workload import Workload

    cache = Path(os.environ["TRITON_CACHE_DIR"])
    M, N, K, block = 48, 1536, 7168, (128, 128)
    configs = [Config(16, 64, 128, 1, 4, 3), Config(64, 128, 128, 16, 8, 4), Config(32, 32, 64, 1, 2, 6)]
    arch = backend.arch(torch.cuda.get_device_name().replace(" ", "_"))
    t0 = time.perf_counter()
    outcomes = {c: r for b in compile_stream(Point(M, N, K, block, "bfloat16"), configs, 3, arch) for c, r in b.items()}
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
