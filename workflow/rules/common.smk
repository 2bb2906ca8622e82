import sys
from pathlib import Path

from snakemake.utils import validate

REPO_ROOT = Path(workflow.basedir)
sys.path.insert(0, str(REPO_ROOT))

from kernels.naming import config_file_name  # noqa: E402
from kernels.plan import ConfigError, make_plan  # noqa: E402
from kernels.slots import try_lock  # noqa: E402


validate(config, schema="../schemas/config.schema.yaml")
try:
    PLAN = make_plan(config)
except ConfigError as e:
    raise WorkflowError(f"Invalid configuration: {e}")

# One sweep per working directory at a time. Snakemake's own lock is off (profiles/default)
# because a killed snakemake leaves it behind and the same command could not resume; this
# fcntl lock dies with the process that holds it.
if workflow.is_main_process and not workflow.dryrun:
    Path(".snakemake").mkdir(exist_ok=True)
    _run_lock = try_lock(Path(".snakemake/w8a8-tuner.lock"))
    if _run_lock is None:
        raise WorkflowError(
            f"another snakemake is already running this workflow in {Path.cwd()}; wait for it or stop it"
        )

DEVICE = PLAN.device_name
RESULTS = f"results/{DEVICE}"
LOGS = f"logs/{DEVICE}"
# Compiled kernels, shared by every job on the node and kept across resumed runs.
TRITON_CACHE = f"{RESULTS}/triton_cache"


wildcard_constraints:
    N=r"\d+",
    K=r"\d+",
    M=r"\d+",


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


def tune_threads():
    # Each concurrent tune job compiles with its share of the cores.
    return max(1, workflow.cores // gpu_slots()) if isinstance(workflow.cores, int) else 1


def compile_workers(wildcards, threads):
    setting = config.get("tuning", {}).get("compile_workers", "auto")
    return threads if setting == "auto" else int(setting)
