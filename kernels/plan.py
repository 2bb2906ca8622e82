"""From a (schema-valid) config mapping to the sweep: shapes per TP size, points, configs.

Holds the checks a JSON schema cannot express. Every error names the config key
and the offending value, and is raised before any job runs.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from kernels.naming import INTERPRET_DEVICE, normalize_device_name
from kernels.search_space import PARAMS, Config, expand, invalid_reason
from kernels.shapes import ShapeError, shapes_for

CPU_DEMO_HINT = (
    "To try the workflow on CPU (Triton interpreter, timings meaningless): "
    "snakemake --cores 2 --configfile .test/config.yaml. "
    "To plan a GPU sweep from a machine without that GPU, such as a cluster's head node "
    "(snakemake --profile profiles/slurm), set device_name to the GPU the jobs will get "
    "(e.g. --config device_name=NVIDIA_H100_80GB_HBM3)."
)


class ConfigError(ValueError):
    pass


class UnwritableFolder(OSError):
    pass


@dataclass(frozen=True)
class Plan:
    device_name: str
    backend: str
    block_shape: tuple[int, int]
    out_dtype: str
    batch_sizes: tuple[int, ...]
    shapes_by_tp: dict[int, list[tuple[int, int]]]
    configs: tuple[Config, ...]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Each distinct (N, K) once, however many TP sizes need it."""
        return sorted({s for shapes in self.shapes_by_tp.values() for s in shapes})

    def points(self) -> list[tuple[int, int, int]]:
        return [(n, k, m) for n, k in self.shapes for m in self.batch_sizes]


def detect_device_name(backend: str) -> str:
    if backend == "interpret":
        return INTERPRET_DEVICE
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"backend: 'cuda' but no GPU is visible here, and device_name is 'auto'. {CPU_DEMO_HINT}")
    return normalize_device_name(torch.cuda.get_device_name(0))


def schema_error_message(error: Exception) -> str:
    """One line naming the key and the value from Snakemake's schema error (its cause), not the whole schema."""
    cause = error.__context__
    if not hasattr(cause, "absolute_path") or not hasattr(cause, "message"):
        return str(error)
    key = ""
    for part in cause.absolute_path:
        key += f"[{part}]" if isinstance(part, int) else f"{'.' if key else ''}{part}"
    message = cause.message
    if cause.validator == "additionalProperties" and isinstance(cause.schema.get("properties"), dict):
        message += f"; known keys: {', '.join(cause.schema['properties'])}"
    return f"{key or 'top level'}: {message}"


def check_writable(folders, probe: bool = True) -> None:
    """Stop before any job if an output folder cannot be written.

    With probe=False nothing is created (for dry runs): only a path component that is
    a file, or an existing folder without write permission, is reported. With probe=True
    each folder is created and a probe file written and removed.
    """
    for folder in folders:
        folder = Path(folder)
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        existing = next((p for p in (folder, *folder.parents) if p.is_dir()), Path("."))
        try:
            if blocker is not None:
                raise NotADirectoryError(20, "Not a directory")
            if not probe:
                if not os.access(existing, os.W_OK | os.X_OK):
                    raise PermissionError(13, "Permission denied")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            test = folder / f".write-test.{socket.gethostname()}.{os.getpid()}"
            test.write_bytes(b"")
            test.unlink()
        except OSError as e:
            where = f" ({blocker} is a file, not a folder)" if blocker else ""
            raise UnwritableFolder(f"cannot write to {folder}/: {e.strerror or e}{where}; results and logs go "
                                   "there: make it writable, or run in another folder (snakemake -d)") from e


def check_search_space(space: dict, block_shape) -> tuple[Config, ...]:
    block_k = block_shape[1]
    bad_k = [v for v in space["BLOCK_SIZE_K"] if block_k % v]
    if bad_k:
        raise ConfigError(f"search_space.BLOCK_SIZE_K: {bad_k} do not divide block_k={block_k} "
                          "(a K step must stay within one scale group)")
    configs = tuple(c for c in expand(space) if invalid_reason(c, block_shape) is None)
    if not configs:
        raise ConfigError("search_space: no valid config is left")
    return configs


def make_plan(config: dict, detect=detect_device_name) -> Plan:
    """Validate what the schema cannot and expand the sweep. `detect` is swapped in tests."""
    block_shape = tuple(int(x) for x in config["block_shape"])
    backend = config["backend"]
    batch_sizes = [int(m) for m in config["batch_sizes"]]
    if len(set(batch_sizes)) != len(batch_sizes):
        dup = sorted({m for m in batch_sizes if batch_sizes.count(m) > 1})
        raise ConfigError(f"batch_sizes: {dup} listed more than once")
    if any(m < 1 for m in batch_sizes):
        raise ConfigError(f"batch_sizes: {[m for m in batch_sizes if m < 1]} must be positive")
    for n, k in config.get("shapes") or []:
        if n < 1 or k < 1:
            raise ConfigError(f"shapes: [{n}, {k}] has a dimension below 1")
    if config.get("input_type", "fp8") != "fp8":
        raise ConfigError(f"input_type: {config['input_type']!r} is not supported (only 'fp8')")
    configs = check_search_space({p: config["search_space"][p] for p in PARAMS}, block_shape)
    shapes_by_tp = {}
    for tp in config["tp_sizes"]:
        try:
            shapes_by_tp[int(tp)] = shapes_for(int(tp), config["model"], config.get("shapes"), block_shape)
        except ShapeError as e:
            raise ConfigError(str(e)) from e
    compare_dir = config.get("compare_dir")
    if compare_dir and not Path(compare_dir).is_dir():
        raise ConfigError(f"compare_dir: {compare_dir!r} is not a folder (from {Path.cwd()})")
    name = config["device_name"]
    device_name = detect(backend) if name == "auto" else normalize_device_name(name)
    return Plan(device_name, backend, block_shape, config["out_dtype"], tuple(sorted(batch_sizes)),
                shapes_by_tp, configs)
