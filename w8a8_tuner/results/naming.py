"""File names and JSON layout that vLLM's and SGLang's loaders expect, and how they pick an entry."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kernels.knobs import SPLIT_K_VALUES
from w8a8_tuner.search.space import KNOB_PARAMS, PARAMS, Config

# Device name used for the interpreter backend; never a real GPU's name.
INTERPRET_DEVICE = "cpu_interpreter"


class ConfigFileError(ValueError):
    """A JSON config file that an engine could not load as it is; the message names the file."""


def normalize_device_name(raw: str) -> str:
    """vLLM's rule: torch.cuda.get_device_name() with spaces replaced by '_'."""
    return raw.strip().replace(" ", "_")


# The `dtype=` part of a file name, per operand type (`input_type`): the same in vLLM and SGLang.
DTYPE_TAGS = {"fp8": "fp8_w8a8", "int8": "int8_w8a8"}

# The engines, in the order `engine: both` writes and compare_dir looks for their files.
ENGINES = ("vllm", "sglang")
# How the engines and the operand types are named in messages (and in the engines' logs: "W8A8 Block FP8").
ENGINE_LABELS = {"vllm": "vLLM", "sglang": "SGLang"}
INPUT_LABELS = {"fp8": "FP8", "int8": "INT8"}

# What separates block_n and block_k in `block_shape=[...]`, as each engine's loader spells it:
#   vLLM  fp8  get_w8a8_block_fp8_configs   (vllm/model_executor/layers/quantization/utils/fp8_utils.py)  [128,128]
#   vLLM  int8 get_w8a8_block_int8_configs  (.../quantization/utils/int8_utils.py)                         [128, 128]
#   SGLang fp8 and int8 get_w8a8_block_{fp8,int8}_configs (python/sglang/srt/layers/quantization/
#              fp8_kernel.py, int8_kernel.py)                                                            [128, 128]
BLOCK_SHAPE_SEPARATORS = {
    ("vllm", "fp8"): ",",
    ("vllm", "int8"): ", ",
    ("sglang", "fp8"): ", ",
    ("sglang", "int8"): ", ",
}


def engines_of(engine: str) -> tuple[str, ...]:
    """The engines an `engine` setting writes files for ('both': every one, vLLM's first)."""
    return ENGINES if engine == "both" else (engine,)


def config_file_name(N: int, K: int, device_name: str, block_shape, *, input_type: str, engine: str) -> str:
    """The name `engine`'s get_w8a8_block_{fp8,int8}_configs() builds for (N, K) on this device."""
    block_n, block_k = block_shape
    sep = BLOCK_SHAPE_SEPARATORS[(engine, input_type)]
    return (f"N={N},K={K},device_name={device_name},dtype={DTYPE_TAGS[input_type]},"
            f"block_shape=[{block_n}{sep}{block_k}].json")


# config_file_name's names read back; which engine spells the block shape so is found by building the name again.
_FILE_NAME = re.compile(r"N=(\d+),K=(\d+),device_name=([^,/]+),dtype=(\w+),block_shape=\[(\d+), ?(\d+)\]\.json$")


@dataclass(frozen=True)
class ConfigFileName:
    N: int
    K: int
    device_name: str
    input_type: str
    block_shape: tuple[int, int]
    engines: tuple[str, ...]  # whose loader builds exactly this name


def parse_config_file_name(name: str) -> ConfigFileName | None:
    """What an engine's config file name says (config_file_name read back), or None for another name."""
    m = _FILE_NAME.match(name)
    input_type = next((t for t, tag in DTYPE_TAGS.items() if m and tag == m[4]), None)
    if input_type is None:
        return None
    N, K, block_shape = int(m[1]), int(m[2]), (int(m[5]), int(m[6]))
    engines = tuple(engines_reading(name, N, K, m[3], block_shape, input_type=input_type))
    return ConfigFileName(N, K, m[3], input_type, block_shape, engines) if engines else None


def config_file_names(N: int, K: int, device_name: str, block_shape, *, input_type: str, engine: str) -> list[str]:
    """Every file an `engine` setting (vllm, sglang or both) gets for (N, K), each once, vLLM's first:
    where two engines spell a name alike (int8), one file serves both."""
    names = [config_file_name(N, K, device_name, block_shape, input_type=input_type, engine=e)
             for e in engines_of(engine)]
    return list(dict.fromkeys(names))


def engines_reading(name: str, N: int, K: int, device_name: str, block_shape, *, input_type: str) -> list[str]:
    """The engines whose loader looks for a file of this name."""
    return [e for e in ENGINES
            if config_file_name(N, K, device_name, block_shape, input_type=input_type, engine=e) == name]


def compare_file_for(compare_dir: str | os.PathLike | None, N: int, K: int, device_name: str, block_shape, *,
                     input_type: str) -> str:
    """The file an engine with this config folder would load for (N, K) on this device, or '': the
    name vLLM looks for first, then SGLang's."""
    if not compare_dir:
        return ""
    for engine in ENGINES:
        name = config_file_name(N, K, device_name, block_shape, input_type=input_type, engine=engine)
        path = os.path.join(os.fspath(compare_dir), name)
        if os.path.isfile(path):
            return path
    return ""


def runs_knobs(name: str, N: int, K: int, device_name: str, block_shape, *, input_type: str) -> bool:
    """Whether every engine that reads a file of this name runs configs with SGLang's Hopper knobs (only
    SGLang does; a name vLLM also reads must hold configs without them)."""
    return engines_reading(name, N, K, device_name, block_shape, input_type=input_type) == ["sglang"]


def configs_to_json(best: dict[int, Config]) -> str:
    """Batch sizes as string keys sorted numerically; the six parameters as ints, and SWAP_AB (a boolean)
    and SPLIT_K where the config carries a knob (Config.as_dict)."""
    ordered = {str(m): best[m].as_dict() for m in sorted(best)}
    return json.dumps(ordered, indent=4) + "\n"


def load_config_file(path) -> dict[int, Config]:
    """Read a tuned file the way the engines do (int keys, values passed as launch kwargs; SGLang also reads
    SWAP_AB and SPLIT_K); anything an engine could not use is a ConfigFileError naming the file and the entry."""
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
        if not isinstance(value, dict) or not set(PARAMS) <= set(value) <= set(PARAMS) | set(KNOB_PARAMS):
            got = sorted(value) if isinstance(value, dict) else repr(value)
            raise ConfigFileError(f"{path}: entry {key!r} has keys {got}, expected {list(PARAMS)} "
                                  f"(and optionally {list(KNOB_PARAMS)})")
        if not all(isinstance(value[p], int) and not isinstance(value[p], bool) and value[p] > 0 for p in PARAMS):
            raise ConfigFileError(f"{path}: entry {key!r} has a value that is not a positive integer: {value}")
        if not isinstance(value.get("SWAP_AB", False), bool):
            raise ConfigFileError(f"{path}: entry {key!r} has SWAP_AB={value['SWAP_AB']!r}, not true or false")
        if value.get("SPLIT_K", 1) not in SPLIT_K_VALUES or isinstance(value.get("SPLIT_K", 1), bool):
            raise ConfigFileError(f"{path}: entry {key!r} has SPLIT_K={value['SPLIT_K']!r}, not one of "
                                  f"{list(SPLIT_K_VALUES)}")
        out[m] = Config(**value)
    return out


def pick_config(configs: dict[int, Config], M: int) -> Config:
    """vLLM's choice for batch size M: the key nearest to M (ties go to the smaller key)."""
    return configs[nearest_key(configs, M)]


def nearest_key(configs: dict[int, Config], M: int) -> int:
    return min(configs, key=lambda key: abs(key - M))
