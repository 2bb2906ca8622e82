import sys
from pathlib import Path

from snakemake.utils import validate

REPO_ROOT = Path(workflow.basedir)
sys.path.insert(0, str(REPO_ROOT))

from kernels.compile import Point, specialization_key  # noqa: E402
from kernels.naming import config_file_name  # noqa: E402
from kernels.plan import ConfigError, UnwritableFolder, check_writable, make_plan, schema_error_message  # noqa: E402
from kernels.slots import try_lock  # noqa: E402


try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as e:
    raise WorkflowError(f"Invalid configuration: {schema_error_message(e)}")


try:
    PLAN = make_plan(config)
except ConfigError as e:
    raise WorkflowError(f"Invalid configuration: {e}")

DEVICE = PLAN.device_name
RESULTS = f"results/{DEVICE}"
LOGS = f"logs/{DEVICE}"
# Compiled kernels, shared by every job on the node and kept across resumed runs.
TRITON_CACHE = f"{RESULTS}/triton_cache"


def output_folders():
    return [f"{RESULTS}/configs"] + [f"{RESULTS}/tune/N{n}_K{k}" for n, k in PLAN.shapes] + [LOGS]


# An unwritable output folder stops the run before Snakemake even scans it (a results
# *file* would crash its DAG code); onstart then creates and probes each folder.
if workflow.is_main_process:
    try:
        check_writable(output_folders(), probe=False)
    except UnwritableFolder as e:
        raise WorkflowError(str(e))

wildcard_constraints:
    N=r"\d+",
    K=r"\d+",
    M=r"\d+",
    spec=r"[1nx]+-\w+",


def spec_of(N, K, M):
    return specialization_key(Point(int(M), int(N), int(K), PLAN.block_shape, PLAN.out_dtype))


# Points grouped by Triton specialization: each group is compiled once (rule compile).
SPEC_POINTS = {}
for _n, _k, _m in PLAN.points():
    SPEC_POINTS.setdefault(spec_of(_n, _k, _m), []).append((_n, _k, _m))


def compiled_marker(wildcards):
    """A tune job waits for its specialization's compile job (the interpreter compiles nothing)."""
    if PLAN.backend == "interpret":
        return []
    return f"{RESULTS}/compile/{spec_of(wildcards.N, wildcards.K, wildcards.M)}.tsv"


def tune_tsv(N, K, M):
    return f"{RESULTS}/tune/N{N}_K{K}/M{M}.tsv"


def config_json(N, K):
    return f"{RESULTS}/configs/{config_file_name(N, K, DEVICE, PLAN.block_shape)}"


def shape_tsvs(wildcards):
    return {str(m): tune_tsv(wildcards.N, wildcards.K, m) for m in PLAN.batch_sizes}


def tp_config_files(tp):
    return [config_json(n, k) for n, k in PLAN.shapes_by_tp[tp]]


def all_config_files():
    return [config_json(n, k) for n, k in PLAN.shapes]


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


def tune_workers():
    # A tune job compiles only what its compile job missed, with its share of the cores.
    return max(1, cores() // gpu_slots())


def compile_workers(wildcards, threads):
    setting = config.get("tuning", {}).get("compile_workers", "auto")
    if setting != "auto":
        return int(setting)
    # On a cluster a job gets the CPUs it asked for: its threads (the profile's set-threads),
    # the same number on the head node and in the job.
    return threads if workflow.non_local_exec or workflow.remote_exec else tune_workers()


# One sweep per working directory at a time. Snakemake's own lock is off (profiles/default)
# because a killed snakemake leaves it behind and the same command could not resume; this
# fcntl lock dies with the process that holds it. onstart: only real runs, only the main process.
onstart:
    global _run_lock
    Path(".snakemake").mkdir(exist_ok=True)
    _run_lock = try_lock(Path(".snakemake/w8a8-tuner.lock"))
    if _run_lock is None:
        raise WorkflowError(
            f"another snakemake is already running this workflow in {Path.cwd()}; wait for it or stop it"
        )
    # An unwritable output folder stops the run here, not after a job has tuned a point.
    try:
        check_writable(output_folders())
    except UnwritableFolder as e:
        raise WorkflowError(str(e))
