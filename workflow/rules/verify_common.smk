# Settings and helpers of the verification rules (workflow/rules/verify.smk).
import time as _time

VERIFY = f"{RESULTS}/verify"
VERIFY_SETTINGS = config.get("verify_settings") or {}
_VERIFY_STARTED = _time.time()

# Folder of JSON files to compare with (an installed vLLM's or SGLang's configs folder), or None.
COMPARE_DIR = config.get("compare_dir") or None
if COMPARE_DIR is not None and not Path(COMPARE_DIR).is_dir():
    raise WorkflowError(f"Invalid configuration: compare_dir: {COMPARE_DIR!r} is not a folder (from {Path.cwd()})")

VERIFY_PLOTS = ["speedup_default"] + (["speedup_compare"] if COMPARE_DIR else []) + ["roofline", "cublas", "times"]
_PLOT_LABELS = {
    "speedup_default": "speedup over vLLM default",
    "speedup_compare": "speedup over compare_dir",
    "roofline": "percent of roofline",
    "cublas": "tuned vs cuBLAS",
    "times": "times per shape",
}


def verify_tsv(N, K):
    return f"{VERIFY}/N{N}_K{K}.tsv"


def verify_targets():
    return [f"{RESULTS}/verify.tsv", f"{VERIFY}/summary.tsv"] + [f"{VERIFY}/{p}.png" for p in VERIFY_PLOTS]


def verify_inputs(wildcards):
    inputs = {"tuned": config_json(wildcards.N, wildcards.K)}
    if COMPARE_DIR:
        path = Path(COMPARE_DIR) / config_file_name(wildcards.N, wildcards.K, DEVICE, PLAN.block_shape)
        if path.is_file():
            inputs["compare"] = str(path)
    return inputs
