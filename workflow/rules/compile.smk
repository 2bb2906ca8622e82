rule compile:
    """Compile every config a group of points needs, once per Triton specialization, for the
    architecture device_name names, into the Triton cache every tune job shares. Needs no GPU:
    on a cluster it can run on CPU nodes. Tune jobs do not wait for it (compile_targets)."""
    input:
        settings=ancient(settings_json()),
    output:
        tsv=f"{SWEEP}/compile/{{spec}}.tsv",
    log:
        f"{LOGS}/compile/{{spec}}.log",
    params:
        points=lambda wildcards: SPEC_POINTS[wildcards.spec],
        triton_cache=TRITON_CACHE,
        arch=COMPILE_ARCH,
    threads: compile_threads()
    priority: compile_priority
    script:
        "../scripts/compile.py"


rule compile_all:
    """Only compile (no GPU needed), e.g. on a CPU node before the GPUs are free: `snakemake compile_all`."""
    input:
        compile_targets(),
    localrule: True
