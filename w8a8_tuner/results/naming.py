"""File names and JSON layout that vLLM's and SGLang's loaders expect, and how they pick an entry."""

from __future__ import annotations

import json
import os
from pathlib import Path

from w8a8_tuner.search.space import PARAMS, Config

# Device name used for the interpreter backend; never a real GPU's name.
INTERPRET_DEVICE = "cpu_interpreter"


class ConfigFileError(ValueError):
    """A JSON config file that an engine could not load as it is; the message names the file."""


def normalize_device_name(raw: str) -> str:
    """vLLM's rule: torch.cuda.get_device_name() with spaces replaced by '_'."""
    return raw.strip().replace(" ", "_")


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


def load_config_file(path) -> dict[int, Config]:
    """Read a tuned file the way vLLM does (int keys, values passed as launch kwargs); anything an
    engine could not use is a ConfigFileError naming the file and the entry."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigFileError(f"{path}: not a readable JSON file: {e}") from e
    if not isinstance(raw, dict) or not raw:
        raise ConfigFileError(f"{path}: expected an object of batch sizes, got {type(raw).__name__} {raw!r:.80}")
    out = {}
    for key, value in raw.items():
        try:
            m = int(key)
        except ValueError:
            raise ConfigFileError(f"{path}: key {key!r} is not a batch size") from None
        if not isinstance(value, dict) or set(value) != set(PARAMS):
            got = sorted(value) if isinstance(value, dict) else repr(value)
            raise ConfigFileError(f"{path}: entry {key!r} has keys {got}, expected {list(PARAMS)}")
        if not all(isinstance(value[p], int) and not isinstance(value[p], bool) and value[p] > 0 for p in PARAMS):
            raise ConfigFileError(f"{path}: entry {key!r} has a value that is not a positive integer: {value}")
        out[m] = Config(**{p: value[p] for p in PARAMS})
    return out


def pick_config(configs: dict[int, Config], M: int) -> Config:
    """vLLM's choice for batch size M: the key nearest to M (ties go to the smaller key)."""
    return configs[nearest_key(configs, M)]


def nearest_key(configs: dict[int, Config], M: int) -> int:
    return min(configs, key=lambda key: abs(key - M))
