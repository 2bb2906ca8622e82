import os
import sys
import time
from pathlib import Path

from snakemake.utils import validate

from w8a8_tuner.jobs.client import RUN_STARTED_ENV
from w8a8_tuner.jobs.slots import check_lock_dir, try_lock
from w8a8_tuner.plan.checks import UnwritableFolder, check_file_locks, check_slurm_profile, check_writable
from w8a8_tuner.plan.config import (ConfigFileProblem, apply_aliases, check_whole_numbers, deep_update, load_strict,
                                    schema_error_message, yaml_values)
from w8a8_tuner.plan.settings import result_settings, settings_point, settings_text, verify_settings
from w8a8_tuner.plan.sweep import NO_DEVICE, ConfigError, detect_device_name, make_plan
from w8a8_tuner.results.aggregate import stale_reason
from w8a8_tuner.results.naming import (ENGINE_LABELS, compare_file_for, config_file_names, engines_reading,
                                      runs_knobs)
from w8a8_tuner.results.outdated import outdated_files, why_outdated
from w8a8_tuner.search.compile import specialization_key, target_arch
from w8a8_tuner.search.space import default_owner, engine_default_config


# --- configuration: files read strictly, --config values as YAML, schema with defaults --------
# (Snakemake's own `configfile:` would keep a duplicated key silently and not name a broken file.)
DEFAULT_CONFIG = "config/config.yaml"


def default_config():
    """The working directory's config/config.yaml; where it has none (`snakemake -d elsewhere`), the one beside
    the Snakefile, so that -d moves the outputs, not the sweep. None where neither exists."""
    if Path(DEFAULT_CONFIG).exists():
        return DEFAULT_CONFIG
    beside = Path(workflow.basedir) / DEFAULT_CONFIG
    return str(beside) if beside.exists() else None


def config_sources():
    """Every config file read, in order (later ones win), and a label for each: what a user should see."""
    default = default_config()
    sources = []
    if default == DEFAULT_CONFIG:
        sources.append((DEFAULT_CONFIG, DEFAULT_CONFIG))
    elif default:
        sources.append((default, f"{default} (beside the Snakefile: {Path.cwd()} has no {DEFAULT_CONFIG})"))
    sources += [(str(f), f"--configfile {f}") for f in workflow.overwrite_configfiles]
    return sources


def load_config(sources):
    merged = {}
    for path, _ in sources:
        deep_update(merged, load_strict(path))
    return deep_update(merged, yaml_values(dict(workflow.config_settings.config)))


_CONFIG_SOURCES = config_sources()
if workflow.is_main_process:
    _read = [label for _, label in _CONFIG_SOURCES] + (["--config values"] if workflow.config_settings.config else [])
    print(f"config: {', '.join(_read) or 'the defaults of workflow/schemas/config.schema.yaml (no config file)'}",
          file=sys.stderr)
try:
    _loaded = apply_aliases(load_config(_CONFIG_SOURCES))
except ConfigFileProblem as e:
    raise WorkflowError(f"Invalid configuration: {e}")
config.clear()
config.update(_loaded)
try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as e:
    raise WorkflowError(f"Invalid configuration: {schema_error_message(e)}")


def requested_targets():
    """The targets on this command line, read as Snakemake reads them (its parser): in the main process the
    targets given, in a job's process (`run:` jobs re-read the Snakefile) the rules of its jobs; None where
    that cannot be read."""
    try:
        from snakemake.cli import get_argument_parser

        args = get_argument_parser().parse_known_args(sys.argv[1:])[0]
    except (Exception, SystemExit):
        return None
    if args.target_jobs:
        return {job.rulename for job in args.target_jobs}
    return set(args.targets or ())


# `snakemake shapes` alone needs no GPU and no device: shapes do not depend on it, and its table is not under a
# device's folder (workflow/rules/shapes.smk). Then nothing of the sweep is checked, marked or written.
TARGETS = requested_targets()
SHAPES_ONLY = bool(TARGETS) and TARGETS <= {"shapes"}


def plan_device(backend):
    return NO_DEVICE if SHAPES_ONLY else detect_device_name(backend)


try:
    check_whole_numbers(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
except ConfigFileProblem as e:
    raise WorkflowError(f"Invalid configuration: {e}")
try:
    # a block_shape left out yields to model_config's (or the log's)
    PLAN = make_plan(config, detect=plan_device, given=set(_loaded))
except ConfigError as e:
    raise WorkflowError(f"Invalid configuration: {e}")

DEVICE = PLAN.device_name
config["device_name"] = DEVICE  # the resolved name, for the report and for cluster jobs
RESULTS = f"results/{DEVICE}"
LOGS = f"logs/{DEVICE}"
# Everything a tuned point depends on besides (N, K, M); its fingerprint names the sweep's folder.
SETTINGS = result_settings(PLAN, config["tuning"])
SWEEP = f"{RESULTS}/tune/{SETTINGS['fingerprint']}"
# Compiled kernels, shared by every job on the node and kept across resumed runs.
TRITON_CACHE = f"{RESULTS}/triton_cache"
# A tune job's small client runs with the Python that runs Snakemake (where this package is installed).
PYTHON = sys.executable

wildcard_constraints:
    N=r"\d+",
    K=r"\d+",
    M=r"\d+",
    spec=r"[1nx]+-[\w-]+",
    moved_at=r"\d{8}-\d{6}",


def settings_json():
    return f"{SWEEP}/settings.json"


def tune_tsv(N, K, M):
    return f"{SWEEP}/N{N}_K{K}/M{M}.tsv"


def config_names(N, K):
    """The shape's JSON file names: one per engine spelling `engine` asks for (both: vLLM's first)."""
    return config_file_names(N, K, DEVICE, PLAN.block_shape, input_type=PLAN.input_type, engine=PLAN.engine)


def config_jsons(N, K):
    return [f"{RESULTS}/configs/{name}" for name in config_names(N, K)]


def json_runs_knobs(N, K):
    """Per JSON of the shape (config_names' order): whether its engine runs configs with Hopper knobs."""
    return [runs_knobs(name, N, K, DEVICE, PLAN.block_shape, input_type=PLAN.input_type) for name in config_names(N, K)]


def config_json(N, K):
    """The JSON verify checks: SGLang's where the shape has one (it holds the knob configs, and verify times the
    best config without a knob beside it), else the first."""
    paths = config_jsons(N, K)
    knob_paths = [p for p, knobs in zip(paths, json_runs_knobs(N, K)) if knobs]
    return knob_paths[0] if knob_paths else paths[0]


def json_engines(name, N, K):
    """Which engines load the file of this name (a label in the report)."""
    return ", ".join(engines_reading(name, N, K, DEVICE, PLAN.block_shape, input_type=PLAN.input_type))


def manifest(N, K):
    return f"{RESULTS}/aggregate/N{N}_K{K}.tsv"


def shape_tsvs(N, K):
    return {str(m): tune_tsv(N, K, m) for m in PLAN.batch_sizes}


def tp_config_files(tp):
    return [path for n, k in PLAN.shapes_by_tp[tp] for path in config_jsons(n, k)]


def all_config_files():
    return [path for n, k in PLAN.shapes for path in config_jsons(n, k)]


# --- configs/ holds exactly the files the current settings make (w8a8_tuner.results.outdated) -------
# Any other (another engine's name, a shape no longer configured) is moved into a folder of its own by
# rule set_aside_outdated_configs, first in any run that makes config files; a dry run only says so.
def outdated_configs():
    """{file in configs/ the current settings do not make: why}"""
    spelling = f"engine: {PLAN.engine}, input_type: {PLAN.input_type}, block_shape: {list(PLAN.block_shape)}"
    return {path: why_outdated(path.name, PLAN.shapes, spelling)
            for path in outdated_files(f"{RESULTS}/configs", all_config_files())}


OUTDATED = outdated_configs() if workflow.is_main_process else {}
OUTDATED_FOLDER = f"{RESULTS}/outdated_configs/{time.strftime('%Y%m%d-%H%M%S')}"  # the move's folder, this run
for _path, _why in OUTDATED.items():
    print(f"{_path}: {_why}; a run that makes config files (default target, tpN, verify_all) moves it to "
          f"{OUTDATED_FOLDER}/", file=sys.stderr)


def outdated_targets():
    return [f"{OUTDATED_FOLDER}/moved.tsv"] if OUTDATED else []


def output_folders():
    """Every folder a job of this run may write into; the compile cache too (tune, compile and verify jobs)."""
    return ([f"{RESULTS}/configs", f"{RESULTS}/aggregate"] + [f"{SWEEP}/N{n}_K{k}" for n, k in PLAN.shapes] + [LOGS]
            + [TRITON_CACHE] + ([f"{RESULTS}/outdated_configs"] if OUTDATED else []))


# An unwritable output folder stops the run before Snakemake even scans it (a results *file*
# would crash its DAG code); onstart then creates and probes each folder. A SLURM profile still
# holding its placeholders stops here too, before anything is submitted.
if workflow.is_main_process:
    try:
        check_writable(["results"] if SHAPES_ONLY else output_folders(), probe=False)
        check_slurm_profile(workflow.resource_settings.default_resources,
                            workflow.resource_settings.overwrite_resources)
    except (UnwritableFolder, ConfigError) as e:
        raise WorkflowError(str(e))


# --- a JSON that is no longer what its TSVs and settings give is made again --------------------
# File times cannot tell (results copied into a fresh clone, settings changed and changed back, a
# damaged or edited JSON): the manifest can. A stale JSON's aggregate job gets a marker input
# written now, newer than the JSON, so Snakemake's mtime trigger makes it again, dry runs included.
def stale_marker_path(N, K):
    return f"{RESULTS}/aggregate/stale/N{N}_K{K}"


STALE = {}
if workflow.is_main_process and not SHAPES_ONLY:
    for _n, _k in PLAN.shapes:
        _why = stale_reason(config_jsons(_n, _k), manifest(_n, _k), SETTINGS["fingerprint"],
                            {int(m): p for m, p in shape_tsvs(_n, _k).items()})
        if _why:
            STALE[(str(_n), str(_k))] = _why
            try:
                Path(stale_marker_path(_n, _k)).parent.mkdir(parents=True, exist_ok=True)
                Path(stale_marker_path(_n, _k)).write_text(f"{_why}\n")
            except OSError as e:
                raise WorkflowError(f"cannot write {stale_marker_path(_n, _k)}: {e.strerror or e}; "
                                    f"{', '.join(config_jsons(_n, _k))} is stale ({_why}) and must be made again")
            print(f"N={_n} K={_k}: the JSON is stale ({_why}); it will be made again", file=sys.stderr)


def stale_marker(wildcards):
    path = stale_marker_path(wildcards.N, wildcards.K)
    return [path] if (wildcards.N, wildcards.K) in STALE else []


def spec_of(N, K, M):
    return specialization_key(settings_point(SETTINGS, N, K, M))


# Points grouped by Triton specialization: each group is compiled once (rule compile).
SPEC_POINTS = {}
for _n, _k, _m in PLAN.points():
    SPEC_POINTS.setdefault(spec_of(_n, _k, _m), []).append((_n, _k, _m))


# --- the order of work: every GPU busy from the start, no long point at the end --------------------
# Tune jobs take specializations one after another, the one with most points first: the first jobs on
# all GPUs then compile the same configs together (per-config locks) instead of each waiting for a
# specialization of its own. Within one, the largest points (M x N x K) first, so that the last jobs
# are short. Compile jobs (priority below every tune job) work ahead on the specializations that come
# next, in that order; the first one is compiled by the tune jobs themselves.
SPEC_ORDER = sorted(SPEC_POINTS, key=lambda spec: (-len(SPEC_POINTS[spec]), spec))
_LARGEST = max((n * k * m for n, k, m in PLAN.points()), default=1)


def tune_priority(wildcards):
    rank = SPEC_ORDER.index(spec_of(wildcards.N, wildcards.K, wildcards.M))
    size = int(wildcards.N) * int(wildcards.K) * int(wildcards.M) / (_LARGEST + 1)
    return 1000 * (len(SPEC_ORDER) - rank) + size


def compile_priority(wildcards):
    rank = SPEC_ORDER.index(wildcards.spec)
    return 0 if rank == 0 else len(SPEC_ORDER) - rank


# The architecture compile jobs build for, from device_name (w8a8_tuner.search.compile); None for a
# device the table does not know, whose tune jobs then compile for the GPU they find.
COMPILE_ARCH = target_arch(DEVICE) if PLAN.backend == "cuda" else None


def compile_targets(tp=None):
    """Compile jobs (of one TP size's points, or all): each compiles one specialization ahead of its
    tune jobs, on the cores they leave. No tune job waits for one (a tune job compiles what it lacks
    and times configs as they come out); they only make the GPU wait less."""
    if COMPILE_ARCH is None:
        return []
    shapes = set(PLAN.shapes if tp is None else PLAN.shapes_by_tp[tp])
    return sorted({f"{SWEEP}/compile/{spec}.tsv" for spec, points in SPEC_POINTS.items()
                   if any((n, k) in shapes for n, k, _ in points)})


def gpu_slots():
    """GPUs this run may use at once (--resources gpu=N), for sizing per-job CPU work."""
    gpu = workflow.global_resources.get("gpu")
    gpu = getattr(gpu, "value", gpu)  # a snakemake Resource in recent versions
    return max(1, int(gpu)) if isinstance(gpu, (int, float)) else 1


def cores():
    # Read the resource, not workflow.cores: that raises where --cores is not given, as on a
    # cluster's head node (executor slurm). A job a cluster runs sees its whole node's cores
    # here, not its allocation; cluster jobs size their work by their threads instead.
    n = workflow.global_resources.get("_cores")
    n = getattr(n, "value", n)
    return n if isinstance(n, int) else 1


def compile_threads():
    # All cores but one per GPU slot, so tune jobs keep running beside a compile job.
    return max(1, cores() - gpu_slots())


def local_compile_workers():
    """Compile processes of a tune job on this node: the setting, or auto = its share of the cores."""
    setting = config["tuning"]["compile_workers"]
    return int(setting) if setting != "auto" else max(1, cores() // gpu_slots())


def compile_workers(wildcards, threads):
    # On a cluster a job gets the CPUs it asked for: its threads (the profile's set-threads),
    # the same number on the head node and in the job. Locally, a tune job compiles what its
    # compile job missed with its share of the cores.
    setting = config["tuning"]["compile_workers"]
    if (workflow.non_local_exec or workflow.remote_exec) and setting == "auto":
        return threads
    return local_compile_workers()


# --- verification (workflow/rules/verify.smk) ------------------------------------------------
# Folder of JSON files to compare with (an installed vLLM's or SGLang's configs folder), or None
# (w8a8_tuner.plan.sweep has checked that it is a folder and that its files load).
COMPARE_DIR = config["compare_dir"]
# Tables and plots live in a folder named by what they depend on (tuned results, verify settings,
# compare folder): changing any of them verifies again into a new folder.
VERIFY = f"{RESULTS}/verify/{verify_settings(SETTINGS, config['verify_settings'], COMPARE_DIR, PLAN.engine)['fingerprint']}"
# Whose default config verify times: the engine tuned for (w8a8_tuner.search.space.engine_default_config); the
# report's captions name it and its values.
DEFAULT_ENGINE = ENGINE_LABELS[default_owner(PLAN.engine)]
DEFAULT_TITLE = f"{DEFAULT_ENGINE} default"
DEFAULT_CONFIG = ", ".join(f"{k}={v}" for k, v in engine_default_config(
    PLAN.engine, PLAN.block_shape, input_type=PLAN.input_type).as_dict().items())
_VERIFY_STARTED = time.time()

VERIFY_PLOTS = (["speedup_default"] + (["speedup_compare"] if COMPARE_DIR else [])
                + (["speedup_plain"] if PLAN.knobs else []) + ["spot_check", "roofline", "cublas", "times"])
_PLOT_LABELS = {
    "speedup_default": f"speedup over {DEFAULT_TITLE}",
    "speedup_compare": "speedup over compare_dir",
    "speedup_plain": "knob winner vs best config without a knob",
    "spot_check": "tuned vs spot check (search quality)",
    "roofline": "percent of roofline",
    "cublas": "tuned vs cuBLAS",
    "times": "times per shape",
}


def verify_tsv(N, K):
    return f"{VERIFY}/shapes/N{N}_K{K}.tsv"


def verify_targets():
    return [f"{VERIFY}/verify.tsv", f"{VERIFY}/summary.tsv"] + [f"{VERIFY}/{p}.png" for p in VERIFY_PLOTS]


# `snakemake --report` before anything it could show exists would write an empty report: say what to run.
if any(a == "--report" or a.startswith("--report=") for a in sys.argv) and not any(
    Path(p).exists() for p in verify_targets() + all_config_files()
):
    raise WorkflowError(
        "nothing to report yet for this configuration: run the sweep (and `snakemake verify_all` for the "
        "verification) with the same config first, then `snakemake --report report.html verify_all`"
    )


def verify_inputs(wildcards):
    inputs = {"tuned": config_json(wildcards.N, wildcards.K)}
    inputs.update({f"M{m}": p for m, p in shape_tsvs(wildcards.N, wildcards.K).items()})
    compare = compare_file_for(COMPARE_DIR, wildcards.N, wildcards.K, DEVICE, PLAN.block_shape,
                               input_type=PLAN.input_type)
    if compare:
        inputs["compare"] = compare
    return inputs


# One sweep per working directory at a time. Snakemake's own lock is off (profiles/default)
# because a killed snakemake leaves it behind and the same command could not resume; this
# fcntl lock dies with the process that holds it. onstart: only real runs, only the main process.
onstart:
    global _run_lock
    if SHAPES_ONLY:  # writes one file, atomically: it may run beside a sweep, and needs none of its folders
        try:
            check_writable(["results"])
        except OSError as e:
            raise WorkflowError(str(e))
        return
    # A file system without working locks (the run lock below, the compile locks in the results folder) stops
    # the run here, saying so, not with a bare OSError or as jobs that never share a compile.
    try:
        check_file_locks([".snakemake"])
    except OSError as e:
        raise WorkflowError(str(e))
    _run_lock = try_lock(Path(".snakemake/w8a8-tuner.lock"))
    if _run_lock is None:
        raise WorkflowError(
            f"another snakemake is already running this workflow in {Path.cwd()}; wait for it or stop it"
        )
    # An unwritable output or lock folder stops the run here, not after a job has tuned a point.
    try:
        check_writable(output_folders())
        check_file_locks([TRITON_CACHE])
        if not workflow.non_local_exec:  # jobs here take slot locks or talk to a worker logging there
            check_lock_dir()
    except OSError as e:
        raise WorkflowError(str(e))
    os.environ[RUN_STARTED_ENV] = f"{time.time():.3f}"
    prestart_workers()


# Tune jobs hand their points to a persistent worker per GPU: start those when the run starts, so that
# torch, CUDA and the compile pool are ready when the first job arrives (a worker exits when idle).
NOT_TUNING_TARGETS = {"shapes", "compile_all"}


def prestart_workers():
    if (PLAN.backend != "cuda" or not config["tuning"]["persistent_worker"] or workflow.non_local_exec
            or (TARGETS and TARGETS <= NOT_TUNING_TARGETS)
            or all(Path(tune_tsv(n, k, m)).exists() for n, k, m in PLAN.points())):
        return
    from w8a8_tuner.jobs import worker
    from w8a8_tuner.jobs.slots import Slot, visible_gpus

    gpus = visible_gpus()[: gpu_slots()]
    worker.prestart([Slot(i, uuid, -1) for i, uuid in enumerate(gpus)], "cuda", TRITON_CACHE,
                    config["tuning"]["worker_idle_s"], COMPILE_ARCH, local_compile_workers())
