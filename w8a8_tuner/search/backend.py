"""Where a point runs: on a CUDA GPU, in Triton's interpreter on the CPU (tests and demos), or, for the
8-GPU projection, in a stand-in that sleeps measured costs (w8a8_tuner.standin).

Everything that differs between them is chosen here, once: the torch device, the bench
(w8a8_tuner.search.bench), the compiler and its compile function, how much cache the weight copies must
overflow, what a worker process prepares before its first point, and how one point is tuned. The rest of
the code takes a backend and has no `if interpret` or stand-in branch of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("cuda", "interpret")


@dataclass(frozen=True)
class Backend:
    name: str  # "cuda" or "interpret" (the sweep's setting)

    @property
    def device(self) -> str:
        return "cuda" if self.name == "cuda" else "cpu"

    @property
    def on_gpu(self) -> bool:
        return self.name == "cuda"

    def cache_bytes(self) -> int:
        """L2 bytes the rotating weight copies must overflow (the CPU interpreter has none to defeat)."""
        if not self.on_gpu:
            return 0
        import torch

        return torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size

    def bench(self):
        from w8a8_tuner.search.bench import GpuBench, WallBench

        return GpuBench() if self.on_gpu else WallBench()

    @property
    def compile_fn(self):
        """compile_fn(point, config, arch) -> CompileResult, run in compile pools (w8a8_tuner.search.compile)."""
        from w8a8_tuner.search.compile import compile_config

        return compile_config

    def compiler(self, point, workers: int, arch: int | None = None):
        """compile(configs) -> batches of {config: CompileResult} as they are known (the interpreter
        compiles nothing); `arch` is the GPU architecture compiled for (w8a8_tuner.search.compile)."""
        from w8a8_tuner.search import compile as kcompile

        if not self.on_gpu:
            return lambda configs: iter([{c: kcompile.CompileResult(kcompile.OK) for c in configs}])
        if arch is None:
            raise ValueError("compiling for a GPU needs its architecture (Backend.arch)")
        return lambda configs: kcompile.compile_stream(point, configs, workers, arch, self.compile_fn)

    def arch(self, device_name: str) -> int | None:
        """The architecture to compile for: known from the device's name, else asked of the GPU."""
        if not self.on_gpu:
            return None
        from w8a8_tuner.search.compile import target_arch

        known = target_arch(device_name)
        if known is not None:
            return known
        import torch

        major, minor = torch.cuda.get_device_capability()
        return major * 10 + minor

    # --- a process that tunes points (a persistent worker, or a job in-process) -------------------------

    def start(self, device_index: int | None, arch: int | None = None, compile_workers: int = 0) -> tuple:
        """Prepare this process to tune points: import torch and triton, start CUDA on the GPU and, given
        `arch` and `compile_workers`, the compile pool, so that the first point pays none of it. Returns the
        errors that fail one point but leave the process fit to tune the next."""
        from w8a8_tuner.search.stages import NoValidConfig

        if self.on_gpu:
            import torch

            torch.cuda.set_device(device_index)
            torch.empty(1, device="cuda")  # the CUDA context
            if arch is not None and compile_workers:
                from w8a8_tuner.search.compile import prewarm_pool

                prewarm_pool(arch, compile_workers, self.compile_fn)
        return (NoValidConfig,)

    def run_point(self, request: dict, device_index: int | None, log, tune: Callable) -> str:
        """Tune one job's point into its TSV; `tune(backend, request, device_index, log)` is the tuner
        (w8a8_tuner.jobs.point), which a stand-in replaces."""
        return tune(self, request, device_index, log)

    def after_point(self) -> None:
        """Between points: leave the GPU's memory to others."""
        if self.on_gpu:
            import torch

            torch.cuda.empty_cache()


@dataclass(frozen=True)
class StandInBackend(Backend):
    """The projection's stand-in (benchmarks/projection.py): a sweep's measured costs slept on fake GPUs, the
    compile pools, locks, workers and Snakemake real (w8a8_tuner.standin). Chosen by prepare() when
    w8a8_tuner.hooks.STANDIN_ENV names a costs file; never in production."""

    @property
    def on_gpu(self) -> bool:
        return False

    @property
    def compile_fn(self):
        from w8a8_tuner.standin import compile_config

        return compile_config

    def start(self, device_index: int | None, arch: int | None = None, compile_workers: int = 0) -> tuple:
        return ()  # no torch, no GPU

    def run_point(self, request: dict, device_index: int | None, log, tune: Callable) -> str:
        from w8a8_tuner.standin import active

        return active().run_point(request, log)

    def after_point(self) -> None:
        pass


def prepare(name: str, triton_cache: str | os.PathLike | None = None) -> Backend:
    """Set what Triton reads when it is first imported (interpreter mode, cache folder); call before that."""
    from w8a8_tuner import hooks

    if name not in BACKENDS:
        raise ValueError(f"backend {name!r}: expected one of {BACKENDS}")
    if name == "interpret":
        os.environ["TRITON_INTERPRET"] = "1"
    if triton_cache:
        os.environ["TRITON_CACHE_DIR"] = str(Path(triton_cache).resolve())
    return StandInBackend(name) if hooks.standin_on() else Backend(name)
