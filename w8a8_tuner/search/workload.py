"""One point's work on the device: fresh random operands, the float32 reference, rotating weight
copies, an output buffer, launchers for configs, and the numbers check of many configs at once.

This is the one place where "operands -> weight copies -> launcher" is written; the tuner, verify
and the benchmarks all start from a `Workload` and time its launchers with a `Bench`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from kernels.block_fp8 import OUT_DTYPES, block_fp8_matmul_kernel, grid_size, launch_args
from kernels.reference import Operands, random_operands, reference_matmul
from w8a8_tuner.search.bench import Launch, rotating_weights
from w8a8_tuner.search.space import Config
from w8a8_tuner.search.status import MAX_RELATIVE_ERROR, error_note, launch_failure

# Output bytes checked at once: one fill, one error reduction and one host sync per chunk.
CHECK_CHUNK_BYTES = 1 << 30


@dataclass
class CheckOutcome:
    """A config's numbers check: relative error, or why it could not run."""

    rel_error: float = math.nan
    status: str = ""   # "" if it ran; else launch_error / out_of_resources
    note: str = ""

    @property
    def right(self) -> bool:
        return not self.status and self.rel_error <= MAX_RELATIVE_ERROR


@dataclass
class Workload:
    M: int
    N: int
    K: int
    ops: Operands
    ref: torch.Tensor          # float32 reference product
    weights: list              # [(B, Bs)] and its copies
    out: torch.Tensor          # the output the launchers write by default

    @classmethod
    def create(cls, M: int, N: int, K: int, block_shape, out_dtype: str, device: str, cache_bytes: int,
               seed: int | None = None) -> "Workload":
        ops = random_operands(M, N, K, tuple(block_shape), device=device, seed=seed)
        out = torch.empty((M, N), dtype=OUT_DTYPES[out_dtype], device=device)
        return cls(M, N, K, ops, reference_matmul(ops), rotating_weights(ops.B, ops.Bs, cache_bytes), out)

    def launcher(self, config: Config, out: torch.Tensor | None = None) -> Launch:
        """launch(copy): run `config` on weight copy `copy % copies`, writing `out` (default self.out)."""
        out = self.out if out is None else out
        kernel = block_fp8_matmul_kernel[(grid_size(self.M, self.N, config.as_dict()),)]
        kwargs = config.as_dict()
        args = [launch_args(self.ops.A, B, out, self.ops.As, Bs, self.ops.block_shape) for B, Bs in self.weights]
        copies = len(args)

        def launch(copy: int) -> torch.Tensor:
            kernel(*args[copy % copies], **kwargs)
            return out

        return launch

    def relative_errors(self, outs: torch.Tensor) -> torch.Tensor:
        """||out - ref|| / ||ref|| per output in a (n, M, N) stack; inf where any element is not finite."""
        ref_norm = torch.linalg.vector_norm(self.ref).clamp(min=1e-30)
        outs = outs.float()
        err = torch.linalg.vector_norm(outs - self.ref, dim=(1, 2)) / ref_norm
        return torch.where(torch.isfinite(outs).flatten(1).all(dim=1), err, torch.full_like(err, math.inf))

    def check(self, configs: Iterable[Config], corrupt: Callable[[Config], bool] | None = None
              ) -> dict[Config, CheckOutcome]:
        """Run every config once into its own NaN-poisoned output and compare with the reference.

        Outputs of a chunk of configs are written side by side, so the poisoning, the error
        reduction and the host sync happen once per chunk, not once per config. `corrupt`
        (tests only) picks configs whose output is damaged after they run."""
        configs = list(configs)
        per_chunk = max(1, CHECK_CHUNK_BYTES // (self.M * self.N * 4))
        results: dict[Config, CheckOutcome] = {}
        for start in range(0, len(configs), per_chunk):
            chunk = configs[start:start + per_chunk]
            outs = torch.full((len(chunk), self.M, self.N), math.nan, dtype=self.out.dtype, device=self.out.device)
            ran = []
            for i, c in enumerate(chunk):
                try:
                    self.launcher(c, outs[i])(0)
                except Exception as e:  # noqa: BLE001 - a config that cannot launch is a result, not a crash
                    results[c] = CheckOutcome(status=launch_failure(e), note=error_note(e))
                    continue
                if corrupt is not None and corrupt(c):
                    outs[i].view(-1)[:: max(1, outs[i].numel() // 7)] += 1.0
                ran.append(i)
            if ran:
                errors = self.relative_errors(outs if len(ran) == len(chunk) else outs[ran]).tolist()
                for i, err in zip(ran, errors):
                    results[chunk[i]] = CheckOutcome(rel_error=err)
        return results
