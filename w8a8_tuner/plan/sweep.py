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
    config_file_names,
    engines_of,
    load_config_file,
    normalize_device_name,
)
from w8a8_tuner.search.space import (
    KNOB_PARAMS,
    PARAMS,
    Config,
    SpaceError,
    configs_at,
    is_knob_region,
    region_configs,
    resolve,
    valid_configs,
)

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
    space_extra: tuple[dict, ...] = ()     # search_space_extra: configs added per batch-size region (the knob
    # regions only where knobs can run: knobs_reason), BLOCK_SIZE_K made concrete for the block shape
    knobs: bool = False                    # configs with SGLang's Hopper knobs are tuned (knobs_reason)

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
    """The first visible GPU's name as the engines name it, read with nvidia-smi (torch's import and CUDA's
    start cost seconds at every start of the workflow); torch where nvidia-smi is missing."""
    if backend == "interpret":
        return INTERPRET_DEVICE
    from w8a8_tuner.jobs.slots import visible_gpu_names

    names = visible_gpu_names()
    if names is None:
        import torch

        names = [torch.cuda.get_device_name(0)] if torch.cuda.is_available() else []
    if not names:
        raise ConfigError(f"backend: 'cuda' but no GPU is visible here, and device_name is 'auto'. {CPU_DEMO_HINT}")
    return normalize_device_name(names[0])


def make_plan(config: dict, detect=detect_device_name, given=None) -> Plan:
    """Check what the schema cannot and expand the sweep. `detect` is swapped in tests; `given` holds the keys
    the user set (None: all), so a block_shape left at its default yields to the model_config's."""
    try:
        table = shape_table(config, given)
    except ShapeError as e:
        raise ConfigError(str(e)) from e
    block_shape = table.block_shape
    backend = config["backend"]
    name = config["device_name"]
    device_name = detect(backend) if name == "auto" else normalize_device_name(name)
    if backend == "interpret" and device_name not in (INTERPRET_DEVICE, NO_DEVICE):
        # CPU wall times under a GPU's name would be loaded by an engine on that GPU
        raise ConfigError(f"backend: 'interpret' with device_name: {name!r}: the interpreter's timings are CPU wall "
                          f"times, meaningless for a GPU, and an engine would load the files named for it; leave "
                          f"device_name at auto (results go under {INTERPRET_DEVICE}) or tune with backend: cuda")
    if table.log is not None:
        try:
            check_log_agrees(table.log, device_name=None if device_name == NO_DEVICE else device_name,
                             backend=backend, input_type=config["input_type"], engines=engines_of(config["engine"]))
        except ShapeError as e:
            raise ConfigError(str(e)) from e
    check_kernel(config["kernel"], config["input_type"])
    no_knobs = knobs_reason(config["engine"], config["input_type"], config["kernel"], backend, device_name)
    try:
        space = resolve({p: config["search_space"][p] for p in PARAMS}, block_shape, "search_space")
        space = {p: sorted(set(v)) for p, v in space.items()}
        configs = valid_configs(space, block_shape)
        extra = []
        for i, region in enumerate(config["search_space_extra"]):
            if region["min_M"] > region["max_M"]:
                raise ConfigError(f"search_space_extra[{i}]: min_M={region['min_M']} > max_M={region['max_M']}")
            region = resolve(dict(region), block_shape, f"search_space_extra[{i}]")
            if is_knob_region(region) and no_knobs:
                continue  # SGLang's Hopper knobs cannot run here (knobs_reason): the region adds nothing
            if not region_configs(region):
                raise ConfigError(f"search_space_extra[{i}]: no config (a region listing "
                                  f"{' or '.join(KNOB_PARAMS)} adds only configs that carry a knob)")
            extra.append(region)
    except SpaceError as e:
        raise ConfigError(str(e)) from e
    plan = Plan(device_name, backend, block_shape, config["out_dtype"], tuple(sorted(config["batch_sizes"])),
                table.shapes_by_tp(), configs, space, config["input_type"], config["kernel"], config["engine"],
                table, tuple(extra), knobs=not no_knobs and any(is_knob_region(r) for r in extra))
    check_name_lengths(plan)
    check_compare_dir(config.get("compare_dir"), plan)
    return plan


def knobs_reason(engine: str, input_type: str, kernel: str, backend: str, device_name: str) -> str:
    """Why configs with SGLang's Hopper knobs (SWAP_AB, SPLIT_K) are not tuned for these settings, or '' if
    they are: only SGLang reads them (engine sglang or both), only its FP8 kernel has them, and it runs
    them only on sm90 (the interpreter, meaningless timings, runs them anywhere: tests and demos)."""
    from kernels.knobs import HOPPER_ARCH
    from w8a8_tuner.search.compile import target_arch

    if engine == "vllm":
        return "engine: vllm (vLLM's kernel has no knobs)"
    if input_type != "fp8":
        return f"input_type: {input_type} (only SGLang's FP8 kernel has the knobs)"
    if not engines.has_knob_kernels(kernel, input_type):
        return f"kernel: {kernel} has no Hopper kernel installed"
    if backend != "interpret" and target_arch(device_name) != HOPPER_ARCH:
        return f"device {device_name} is not a Hopper GPU (SGLang runs the knobs on sm90 only)"
    return ""


# The longest file name (bytes) that ext4, xfs, NFS and Lustre take.
NAME_MAX = 255


def check_name_lengths(plan: Plan) -> None:
    """Every file the sweep writes can be named: its longest names are the engines' JSON names, which hold the
    device name and the shape."""
    for n, k in plan.shapes:
        for name in config_file_names(n, k, plan.device_name, plan.block_shape, input_type=plan.input_type,
                                      engine=plan.engine):
            size = len(name.encode())
            if size <= NAME_MAX:
                continue
            device = len(plan.device_name.encode())
            limit = f"{size} bytes long, over the {NAME_MAX}-byte limit of file names"
            if size - device <= NAME_MAX:
                raise ConfigError(f"device_name: {plan.device_name!r} ({device} bytes) makes the file name of N={n} "
                                  f"K={k} {limit}")
            source = plan.shape_table.model.where if plan.shape_table else "shapes"
            raise ConfigError(f"{source}: N={_digits(n)} K={_digits(k)} makes its file name {limit}")


def _digits(number: int) -> str:
    text = str(number)
    return text if len(text) <= 20 else f"{text[:12]}... ({len(text)} digits)"


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
