# Settings and helpers of the verification rules (workflow/rules/verify.smk).
import time as _time

from kernels.naming import compare_file_for  # noqa: E402

VERIFY = f"{RESULTS}/verify"
VERIFY_SETTINGS = config.get("verify_settings") or {}
_VERIFY_STARTED = _time.time()

# Folder of JSON files to compare with (an installed vLLM's or SGLang's configs folder), or None.
# (kernels.plan has checked that it is a folder.)
COMPARE_DIR = config.get("compare_dir") or None

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
    compare = compare_file_for(COMPARE_DIR, wildcards.N, wildcards.K, DEVICE, PLAN.block_shape)
    if compare:
        inputs["compare"] = compare
    return inputs
