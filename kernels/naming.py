"""File names and JSON layout that vLLM's and SGLang's loaders expect."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kernels.search_space import PARAMS, Config

# Device name used for the interpreter backend; never a real GPU's name.
INTERPRET_DEVICE = "cpu_interpreter"

def normalize_device_name(raw: str) -> str:
    """vLLM's rule: torch.cuda.get_device_name() with spaces replaced by '_'."""
    return raw.replace(" ", "_")


def config_file_name(N: int, K: int, device_name: str, block_shape) -> str:
    """Name vLLM's get_w8a8_block_fp8_configs() (and SGLang's loader) looks for."""
    block_n, block_k = block_shape
    return f"N={N},K={K},device_name={device_name},dtype=fp8_w8a8,block_shape=[{block_n},{block_k}].json"


def compare_file_for(compare_dir: str | os.PathLike | None, N: int, K: int, device_name: str, block_shape) -> str:
    """The file an engine with this config folder would load for (N, K) on this device, or ''."""
    if not compare_dir:
        return ""
    path = os.path.join(os.fspath(compare_dir), config_file_name(N, K, device_name, block_shape))
    return path if os.path.isfile(path) else ""


def configs_to_json(best: dict[int, Config]) -> str:
    """Batch sizes as string keys sorted numerically; the six parameters as ints."""
    ordered = {str(m): best[m].as_dict() for m in sorted(best)}
    return json.dumps(ordered, indent=4) + "\n"


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary name in the same folder, then rename: never a half file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_config_file(path) -> dict[int, Config]:
    """Read a tuned file the way vLLM does: int keys, values passed as launch kwargs."""
    with open(path) as f:
        raw = json.load(f)
    out = {}
    for key, value in raw.items():
        if set(value) != set(PARAMS):
            raise ValueError(f"{path}: entry {key!r} has keys {sorted(value)}, expected {list(PARAMS)}")
        out[int(key)] = Config(**{p: int(value[p]) for p in PARAMS})
    return out


def pick_config(configs: dict[int, Config], M: int) -> Config:
    """vLLM's choice for batch size M: the key nearest to M (ties go to the smaller key)."""
    return configs[min(configs, key=lambda key: abs(key - M))]
