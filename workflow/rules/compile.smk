rule compile:
    """Compile every config a group of points needs, once per Triton specialization, on all
    CPU cores, into the Triton cache that every tune job shares. Holds no GPU slot."""
    output:
        tsv=f"{RESULTS}/compile/{{spec}}.tsv",
    log:
        f"{LOGS}/compile/{{spec}}.log",
    params:
        points=lambda wildcards: SPEC_POINTS[wildcards.spec],
        search_space=config["search_space"],
        block_shape=list(PLAN.block_shape),
        out_dtype=PLAN.out_dtype,
        triton_cache=TRITON_CACHE,
    threads: compile_threads()
    script:
        "../scripts/compile.py"
