# Tunes the W8A8 block-FP8 Triton GEMM (vLLM's _w8a8_triton_block_scaled_mm) and
# writes vLLM/SGLang config JSONs. Run: snakemake --cores all --resources gpu=8
from snakemake.utils import min_version

min_version("9.0")


# config/config.yaml (and any --configfile, --config) is read in common.smk, strictly.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/compile.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/verify.smk"
include: "workflow/rules/shapes.smk"
include: "workflow/rules/install.smk"


rule all:
    input:
        all_config_files(),
        compile_targets(),
        outdated_targets(),
        verify_targets() if config["verify"] else [],
    default_target: True


# A successful run ends with what it made and what to do next, after Snakemake's own lines.
onsuccess:
    print_verify_summary()
    print_next_steps()
