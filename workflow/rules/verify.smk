# Verification of the tuned configs and the HTML report (`snakemake verify_all`, or `verify: true`;
# then `snakemake --report report.html verify_all`). w8a8_tuner/verify/ does the work; the paths
# and input functions are in common.smk.


rule verify:
    """Check, then time side by side, the tuned config of every batch size of one shape against itself
    (the control), the default config of the engine tuned for, compare_dir's config, the spot check, cuBLAS
    blockwise FP8 and the roofline, on one GPU slot."""
    input:
        unpack(verify_inputs),
    output:
        tsv=f"{VERIFY}/shapes/N{{N}}_K{{K}}.tsv",
    log:
        f"{LOGS}/verify/N{{N}}_K{{K}}.log",
    params:
        device_name=DEVICE,
        backend=PLAN.backend,
        block_shape=list(PLAN.block_shape),
        out_dtype=PLAN.out_dtype,
        input_type=PLAN.input_type,
        kernel=PLAN.kernel,
        engine=PLAN.engine,
        compare_dir=COMPARE_DIR or "",
        settings=config["verify_settings"],
        triton_cache=TRITON_CACHE,
        compile_workers=compile_workers,
    threads: 1
    resources:
        gpu=1,
    script:
        "../scripts/verify.py"


rule verify_merge:
    """All shapes' verify rows in one table."""
    input:
        [verify_tsv(n, k) for n, k in PLAN.shapes],
    output:
        tsv=report(
            f"{VERIFY}/verify.tsv",
            caption="../report/verify_tsv.rst",
            category="Verification",
            subcategory="Data",
            labels={"item": "all times and ratios (verify.tsv)"},
        ),
    log:
        f"{LOGS}/verify/merge.log",
    localrule: True
    script:
        "../scripts/verify_merge.py"


rule verify_summary:
    """Geomean speedups, worst points, noise and spot-check regret per shape and overall; the text is
    printed at the end of the run."""
    input:
        tsv=f"{VERIFY}/verify.tsv",
    output:
        summary=report(
            f"{VERIFY}/summary.tsv",
            caption="../report/summary.rst",
            category="Verification",
            subcategory="Summary",
            labels={"item": "summary table"},
        ),
        text=f"{VERIFY}/summary.txt",
    log:
        f"{LOGS}/verify/summary.log",
    params:
        engine=PLAN.engine,
        default_engine=DEFAULT_ENGINE,
        default_config=DEFAULT_CONFIG,
    localrule: True
    script:
        "../scripts/verify_summary.py"


rule verify_plots:
    """Heatmaps (shapes x batch sizes) of the speedups, the spot check and the percent of roofline;
    times per shape."""
    input:
        tsv=f"{VERIFY}/verify.tsv",
    output:
        **{
            p: report(
                f"{VERIFY}/{p}.png",
                caption=f"../report/{p}.rst",
                category="Verification",
                subcategory="Plots",
                labels={"item": _PLOT_LABELS[p]},
            )
            for p in VERIFY_PLOTS
        },
    log:
        f"{LOGS}/verify/plots.log",
    params:
        engine=PLAN.engine,
        default_engine=DEFAULT_ENGINE,
        default_config=DEFAULT_CONFIG,
    localrule: True
    script:
        "../scripts/verify_plots.py"


rule verify_all:
    """Verify every configured shape, then merge, summarize and plot (no report: see --report)."""
    input:
        verify_targets(),
        outdated_targets(),
    localrule: True


def print_verify_summary():
    """At the end of a successful run (the Snakefile's onsuccess): the verify summary, when this run (re)wrote it."""
    summary = Path(f"{VERIFY}/summary.txt")
    if summary.is_file() and summary.stat().st_mtime >= _VERIFY_STARTED:
        print(summary.read_text(), end="")
        print(f"details: {VERIFY}/verify.tsv; report: snakemake --report report.html verify_all (same config)")
