"""From a schema-valid config (defaults filled by the schema) to the sweep: shapes per TP size, points,
configs, and the settings every result depends on.

Holds the checks a JSON schema cannot express. Every error names the config key and the
offending value (or the file), and is raised before any job runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from kernels import engines
from w8a8_tuner.plan.logs import check_log_agrees
from w8a8_tuner.plan.shapes import ShapeError, ShapeTable, shape_table
from w8a8_tuner.results.naming import (
    INTERPRET_DEVICE,
    ConfigFileError,
    compare_file_for,
    engines_of,
    load_config_file,
    normalize_device_name,
)
from w8a8_tuner.search.space import PARAMS, Config, SpaceError, configs_at, valid_configs

CPU_DEMO_HINT = (
    "To try the workflow on CPU (Triton interpreter, timings meaningless): "
    "snakemake --cores 2 --configfile .test/config.yaml. "
    "To plan a GPU sweep from a machine without that GPU, such as a cluster's head node "
    "(snakemake --profile profiles/slurm), set device_name to the GPU the jobs will get "
    "(e.g. --config device_name=NVIDIA_H100_80GB_HBM3)."
)


# The device name of a plan made only to list shapes (`snakemake shapes`), where device_name is auto: shapes do
# not depend on the device, and such a plan names no file.
NO_DEVICE = "device_not_needed"


class ConfigError(ValueError):
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
    search_space: dict[str, list[int]]
    input_type: str   # operand type: fp8 or int8
    kernel: str       # the Triton function tuned: builtin, or the installed engine's (kernels.engines)
    engine: str       # whose file names the tuned JSONs get: vllm, sglang or both (results.naming)
    shape_table: ShapeTable | None = None  # the layers each shape serves per TP size (results/shapes.tsv)
    space_extra: tuple[dict, ...] = ()     # search_space_extra: configs added per batch-size region

    def configs_at(self, M: int) -> tuple[Config, ...]:
        """The configs tuned at batch size M (search_space plus the extra regions that hold M)."""
        return configs_at(self.search_space, list(self.space_extra), self.block_shape, M)

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


def make_plan(config: dict, detect=detect_device_name, given=None) -> Plan:
    """Check what the schema cannot and expand the sweep. `detect` is swapped in tests; `given` holds the keys
    the user set (None: all), so a block_shape left at its default yields to the model_config's."""
    try:
        table = shape_table(config, given)
    except ShapeError as e:
        raise ConfigError(str(e)) from e
    block_shape = table.block_shape
    backend = config["backend"]
    space = {p: sorted(set(config["search_space"][p])) for p in PARAMS}
    try:
        configs = valid_configs(space, block_shape)
    except SpaceError as e:
        raise ConfigError(str(e)) from e
    extra = tuple(config["search_space_extra"])
    for i, region in enumerate(extra):
        if region["min_M"] > region["max_M"]:
            raise ConfigError(f"search_space_extra[{i}]: min_M={region['min_M']} > max_M={region['max_M']}")
    name = config["device_name"]
    device_name = detect(backend) if name == "auto" else normalize_device_name(name)
    if table.log is not None:
        try:
            check_log_agrees(table.log, device_name=None if device_name == NO_DEVICE else device_name,
                             backend=backend, input_type=config["input_type"], engines=engines_of(config["engine"]))
        except ShapeError as e:
            raise ConfigError(str(e)) from e
    check_kernel(config["kernel"], config["input_type"])
    plan = Plan(device_name, backend, block_shape, config["out_dtype"], tuple(sorted(config["batch_sizes"])),
                table.shapes_by_tp(), configs, space, config["input_type"], config["kernel"], config["engine"],
                table, extra)
    check_compare_dir(config.get("compare_dir"), plan)
    return plan


def check_kernel(kernel: str, input_type: str) -> None:
    """The engine whose kernel is to be tuned is installed here (checked without importing it)."""
    if engines.find(kernel, input_type) is None:
        raise ConfigError(f"kernel: {kernel!r} with input_type: {input_type!r}: "
                          f"{engines.not_found_message(kernel, input_type)} ({sys.executable}); "
                          f"install it in this environment, or set kernel: {engines.BUILTIN}")


def check_compare_dir(compare_dir: str | None, plan: Plan) -> None:
    """compare_dir is a folder, and every file in it that verify would read loads as the engine loads it."""
    if not compare_dir:
        return
    if not Path(compare_dir).is_dir():
        raise ConfigError(f"compare_dir: {compare_dir!r} is not a folder (from {Path.cwd()})")
    for n, k in plan.shapes:
        path = compare_file_for(compare_dir, n, k, plan.device_name, plan.block_shape, input_type=plan.input_type)
        if path:
            try:
                load_config_file(path)
            except ConfigFileError as e:
                raise ConfigError(f"compare_dir: {e}") from e
