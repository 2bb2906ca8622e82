"""One point's work on the device: fresh random operands, the float32 reference, rotating weight
copies, an output buffer, launchers for configs, and the numbers check of many configs at once.

This is the one place where "operands -> weight copies -> launcher" is written; the tuner, verify
and the benchmarks all start from a `Workload` and time its launchers with a `Bench`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from kernels import engines
from kernels.block_fp8 import OUT_DTYPES, Kernels, bind_block_fp8, run_block_fp8, warmup_block_fp8
from kernels.reference import Operands, random_operands, reference_matmul
from w8a8_tuner.search.bench import Bench, Launch, rotating_weights
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
    first_us: float = math.nan  # the run's time when the check was timed (Workload.check with a bench)

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
    kernels: Kernels           # the Triton functions launched (kernels.engines: builtin or an engine's)
    _calls: dict = field(default_factory=dict, repr=False)  # per config, its bound call (Workload.call)
    _bound: dict = field(default_factory=dict, repr=False)  # per config, whether that call is a bound launch

    @classmethod
    def create(cls, M: int, N: int, K: int, block_shape, out_dtype: str, device: str, cache_bytes: int,
               seed: int | None = None, *, input_type: str, kernel: str) -> "Workload":
        """Operands of `input_type` (fp8, int8); launchers run `kernel` (builtin, vllm, sglang)."""
        kernels = engines.load(kernel, input_type)
        ops = random_operands(M, N, K, tuple(block_shape), device=device, seed=seed, input_type=input_type)
        out = torch.empty((M, N), dtype=OUT_DTYPES[out_dtype], device=device)
        return cls(M, N, K, ops, reference_matmul(ops), rotating_weights(ops.B, ops.Bs, cache_bytes), out,
                   kernels)

    def launcher(self, config: Config, out: torch.Tensor | None = None) -> Launch:
        """launch(copy): run `config` on weight copy `copy % copies`, writing `out` (default self.out), as the
        engine runs it (kernels.block_fp8.run_block_fp8: with a knob, the Hopper kernel, its partials
        buffer and the reduction)."""
        out = self.out if out is None else out
        weights = self.weights
        call = self.call(config)  # bound now, before any timing: a launch only swaps in its operands

        def launch(copy: int) -> torch.Tensor:
            B, Bs = weights[copy % len(weights)]
            call(B, Bs, out)
            return out

        return launch

    def call(self, config: Config):
        """call(B, Bs, C): one call of `config`, its kernels looked up once per workload (kernels.block_fp8.
        bind_block_fp8: a few microseconds of host time a launch instead of Triton's tens of dispatch)."""
        if config not in self._calls:
            A, As, block_shape, kernels, entry = self.ops.A, self.ops.As, self.ops.block_shape, self.kernels, \
                config.as_dict()
            B, Bs = self.weights[0]
            bound = bind_block_fp8(kernels, A, B, self.out, As, Bs, block_shape, entry)
            self._calls[config] = bound or (
                lambda B, Bs, C: run_block_fp8(kernels, A, B, C, As, Bs, block_shape, entry))
            self._bound[config] = bound is not None
        return self._calls[config]

    def relative_errors(self, outs: torch.Tensor) -> torch.Tensor:
        """||out - ref|| / ||ref|| per output in a (n, M, N) stack; inf where any element is not finite."""
        ref_norm = torch.linalg.vector_norm(self.ref).clamp(min=1e-30)
        outs = outs.float()
        err = torch.linalg.vector_norm(outs - self.ref, dim=(1, 2)) / ref_norm
        return torch.where(torch.isfinite(outs).flatten(1).all(dim=1), err, torch.full_like(err, math.inf))

    def check(self, configs: Iterable[Config], corrupt: Callable[[Config], bool] | None = None,
              bench: Bench | None = None) -> dict[Config, CheckOutcome]:
        """Run every config once into its own NaN-poisoned output and compare with the reference.

        Outputs of a chunk of configs are written side by side, so the poisoning, the error
        reduction and the host sync happen once per chunk, not once per config. With `bench`, those
        runs are also the configs' first timing round (one launch each, interleaved: `first_us`), so
        the check costs no launch of its own; a chunk in which a launch fails is run again one config
        at a time, untimed, to find which. `corrupt` (tests only) picks configs whose output is
        damaged after they run."""
        configs = list(configs)
        per_chunk = max(1, CHECK_CHUNK_BYTES // (self.M * self.N * 4))
        results: dict[Config, CheckOutcome] = {}
        for start in range(0, len(configs), per_chunk):
            chunk = configs[start:start + per_chunk]
            outs = torch.full((len(chunk), self.M, self.N), math.nan, dtype=self.out.dtype, device=self.out.device)
            loaded = []
            for i, c in enumerate(chunk):
                try:
                    self.load(c)
                    loaded.append(i)
                except Exception as e:  # noqa: BLE001 - a config that cannot load is a result, not a crash
                    results[c] = CheckOutcome(status=launch_failure(e), note=error_note(e))
            first_us = self._run_timed(chunk, loaded, outs, bench) if bench is not None else None
            if first_us is None:
                first_us, ran = {}, []
                outs.fill_(math.nan)
                for i in loaded:
                    try:
                        self.launcher(chunk[i], outs[i])(0)
                    except Exception as e:  # noqa: BLE001 - as above
                        results[chunk[i]] = CheckOutcome(status=launch_failure(e), note=error_note(e))
                        continue
                    ran.append(i)
            else:
                ran = loaded
            for i in ran:
                if corrupt is not None and corrupt(chunk[i]):
                    outs[i].view(-1)[:: max(1, outs[i].numel() // 7)] += 1.0
            if ran:
                errors = self.relative_errors(outs if len(ran) == len(chunk) else outs[ran]).tolist()
                for i, err in zip(ran, errors):
                    results[chunk[i]] = CheckOutcome(rel_error=err, first_us=first_us.get(i, math.nan))
        return results

    def _run_timed(self, chunk: list[Config], indices: list[int], outs: torch.Tensor, bench: Bench
                   ) -> dict[int, float] | None:
        """Each config of `indices` once into its own output, timed by `bench`; None if a launch failed."""
        if not indices:
            return {}
        try:
            times = bench.measure([self.launcher(chunk[i], outs[i]) for i in indices], 1, 1)
        except Exception:  # noqa: BLE001 - which config failed is found untimed, one at a time
            return None
        return {i: t[0] for i, t in zip(indices, times)}

    def load(self, config: Config) -> None:
        """Load the config's binary onto the GPU before it is launched: the first launch of a kernel
        would load it then, host time that would otherwise stretch the first timing's segments."""
        if not self.ops.A.is_cuda:
            return  # the interpreter has no binary to load
        self.call(config)
        if self._bound[config]:
            return  # binding looked the kernels up and loaded their binaries
        B, Bs = self.weights[0]
        parts = torch.empty((config.SPLIT_K, self.M, self.N), dtype=torch.float32, device=self.out.device) \
            if config.SPLIT_K > 1 else None
        for compiled in warmup_block_fp8(self.kernels, self.ops.A, B, self.out, self.ops.As, Bs,
                                         self.ops.block_shape, config.as_dict(), parts):
            init = getattr(compiled, "_init_handles", None)  # Triton loads lazily; an unloadable binary raises here
            if init is not None:
                init()
