"""Where a point runs: on a CUDA GPU, or in Triton's interpreter on the CPU (tests and demos).

Everything that differs between the two is chosen here, once: the torch device, the bench
(w8a8_tuner.search.bench), the compiler and how much cache the weight copies must overflow.
The rest of the code takes these as arguments and has no `if interpret` of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("cuda", "interpret")


@dataclass(frozen=True)
class Backend:
    name: str  # "cuda" or "interpret"

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

    def compiler(self, point, workers: int, arch: int | None = None):
        """compile(configs) -> batches of {config: CompileResult} as they are known (the interpreter
        compiles nothing); `arch` is the GPU architecture compiled for (w8a8_tuner.search.compile)."""
        from w8a8_tuner.search import compile as kcompile

        if not self.on_gpu:
            return lambda configs: iter([{c: kcompile.CompileResult(kcompile.OK) for c in configs}])
        if arch is None:
            raise ValueError("compiling for a GPU needs its architecture (Backend.arch)")
        return lambda configs: kcompile.compile_stream(point, configs, workers, arch)

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


def prepare(name: str, triton_cache: str | os.PathLike | None = None) -> Backend:
    """Set what Triton reads when it is first imported (interpreter mode, cache folder); call before that."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r}: expected one of {BACKENDS}")
    if name == "interpret":
        os.environ["TRITON_INTERPRET"] = "1"
    if triton_cache:
        os.environ["TRITON_CACHE_DIR"] = str(Path(triton_cache).resolve())
    return Backend(name)
