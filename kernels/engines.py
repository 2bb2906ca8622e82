"""Which Triton function a tune launches: this package's kernel, or an installed engine's own.

`kernel: builtin` launches kernels.block_fp8's kernels; `kernel: vllm` or `sglang` the installed
engine's functions for the operand type (`input_type`), found where the engine defines them. Every
one of them takes the argument list of kernels.block_fp8.launch_args (vLLM's order, which SGLang
shares) and the six launch parameters as keywords (SGLang's newer kernels also `needs_masking`), so
the workload and the compile step launch them alike (kernels.block_fp8.run_block_fp8). SGLang's
FP8 Hopper kernel and its split-K reduction (the knobs SWAP_AB, SPLIT_K) have places of their own.
An engine moves its files between releases: the places are tried in order.

`find` answers without importing anything (no torch, no triton: usable on a cluster's head node);
`load` imports the function.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

BUILTIN = "builtin"

# (kernel, input_type) -> places "module:function", tried in order.
PLACES = {
    (BUILTIN, "fp8"): ("kernels.block_fp8:block_fp8_matmul_kernel",),
    (BUILTIN, "int8"): ("kernels.block_fp8:block_fp8_matmul_kernel",),
    ("vllm", "fp8"): ("vllm.model_executor.layers.quantization.utils.fp8_utils:_w8a8_triton_block_scaled_mm",),
    ("vllm", "int8"): ("vllm.model_executor.layers.quantization.utils.int8_utils:_w8a8_block_int8_matmul",),
    ("sglang", "fp8"): ("sglang.kernels.ops.quantization.fp8_kernel:_w8a8_block_fp8_matmul",
                        "sglang.srt.layers.quantization.fp8_kernel:_w8a8_block_fp8_matmul"),
    ("sglang", "int8"): ("sglang.kernels.ops.quantization.int8_kernel:_w8a8_block_int8_matmul",
                         "sglang.srt.layers.quantization.int8_kernel:_w8a8_block_int8_matmul"),
}

# (kernel, input_type) -> (Hopper kernel places, split-K reduction places): only SGLang's FP8 kernel has
# the knobs (the builtin one mirrors it); a pair missing here means configs with knobs cannot run.
HOPPER_PLACES = {
    (BUILTIN, "fp8"): (("kernels.block_fp8:block_fp8_matmul_hopper_kernel",),
                       ("kernels.block_fp8:split_k_reduce_kernel",)),
    ("sglang", "fp8"): (("sglang.kernels.ops.quantization.fp8_kernel:_w8a8_block_fp8_matmul_hopper",
                         "sglang.srt.layers.quantization.fp8_kernel:_w8a8_block_fp8_matmul_hopper"),
                        ("sglang.kernels.ops.quantization.fp8_kernel:_reduce_block_fp8_split_k",
                         "sglang.srt.layers.quantization.fp8_kernel:_reduce_block_fp8_split_k")),
}


class KernelNotFound(ImportError):
    """The engine's kernel function is not installed here; the message names every place tried."""


def places(kernel: str, input_type: str) -> tuple[str, ...]:
    if (kernel, input_type) not in PLACES:
        raise KernelNotFound(f"no kernel {kernel!r} for input_type {input_type!r}")
    return PLACES[(kernel, input_type)]


def source_file(module: str) -> Path | None:
    """The file that defines `module`, found without importing it or its parents."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin else None
    for root in spec.submodule_search_locations or ():
        for candidate in (Path(root, *rest).with_suffix(".py"), Path(root, *rest, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def find(kernel: str, input_type: str) -> str | None:
    """The first place ("module:function") whose module file is installed and defines the function
    by that name, or None. Reads source text only (nothing is imported)."""
    return _find_first(places(kernel, input_type))


def has_knob_kernels(kernel: str, input_type: str) -> bool:
    """Whether the Hopper kernel and its reduction are installed for (kernel, input_type): configs with
    SWAP_AB or SPLIT_K can run. Reads source text only."""
    pair = HOPPER_PLACES.get((kernel, input_type))
    return pair is not None and all(_find_first(p) is not None for p in pair)


def _find_first(candidates) -> str | None:
    for place in candidates:
        module, function = place.split(":")
        path = source_file(module)
        if path is not None and re.search(rf"\b{re.escape(function)}\b", path.read_text(errors="replace")):
            return place
    return None


def not_found_message(kernel: str, input_type: str) -> str:
    tried = " or ".join(f"{p.split(':')[0]}.{p.split(':')[1]}" for p in places(kernel, input_type))
    return f"cannot import {tried}: {kernel} is not installed for this Python or is a version without it"


def load(kernel: str, input_type: str):
    """The Triton functions for (kernel, input_type): a kernels.block_fp8.Kernels, with the Hopper kernel
    and reduction where the engine has them (else None); KernelNotFound names every place tried and why."""
    from kernels.block_fp8 import Kernels

    plain = _load_first(places(kernel, input_type), f"kernel {kernel!r} (input_type {input_type!r})")
    pair = HOPPER_PLACES.get((kernel, input_type))
    if pair is None or not has_knob_kernels(kernel, input_type):
        return Kernels(plain, None, None)
    what = f"the Hopper kernel of {kernel!r} (input_type {input_type!r})"
    return Kernels(plain, _load_first(pair[0], what), _load_first(pair[1], what))


def _load_first(candidates, what: str):
    errors = []
    for place in candidates:
        module, function = place.split(":")
        try:
            return getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as e:
            errors.append(f"{module}.{function}: {type(e).__name__}: {e}")
    raise KernelNotFound(f"{what}: " + "; ".join(errors))
