"""Which Triton function a tune launches: this package's kernel, or an installed engine's own.

`kernel: builtin` launches kernels.block_fp8's kernel; `kernel: vllm` or `sglang` the installed
engine's function for the operand type (`input_type`), found where the engine defines it. Every
one of them takes the argument list of kernels.block_fp8.launch_args (vLLM's order, which SGLang
shares) and the six launch parameters as keywords, so the workload and the compile step launch
them alike. An engine moves its files between releases: the places are tried in order.

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
    ("sglang", "fp8"): ("sglang.srt.layers.quantization.fp8_kernel:_w8a8_block_fp8_matmul",),
    ("sglang", "int8"): ("sglang.srt.layers.quantization.int8_kernel:_w8a8_block_int8_matmul",
                         "sglang.kernels.ops.quantization.int8_kernel:_w8a8_block_int8_matmul"),
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
    for place in places(kernel, input_type):
        module, function = place.split(":")
        path = source_file(module)
        if path is not None and re.search(rf"\b{re.escape(function)}\b", path.read_text(errors="replace")):
            return place
    return None


def not_found_message(kernel: str, input_type: str) -> str:
    tried = " or ".join(f"{p.split(':')[0]}.{p.split(':')[1]}" for p in places(kernel, input_type))
    return f"cannot import {tried}: {kernel} is not installed for this Python or is a version without it"


def load(kernel: str, input_type: str):
    """The Triton function for (kernel, input_type); KernelNotFound names every place tried and why."""
    errors = []
    for place in places(kernel, input_type):
        module, function = place.split(":")
        try:
            return getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as e:
            errors.append(f"{module}.{function}: {type(e).__name__}: {e}")
    raise KernelNotFound(f"kernel {kernel!r} (input_type {input_type!r}): " + "; ".join(errors))
