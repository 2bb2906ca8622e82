rule compile:
    """Compile every config a group of points needs, once per Triton specialization, on all
    CPU cores, into the Triton cache that every tune job shares. Holds no GPU slot."""
    input:
        settings=ancient(settings_json()),
    output:
        tsv=f"{SWEEP}/compile/{{spec}}.tsv",
    log:
        f"{LOGS}/compile/{{spec}}.log",
    params:
        points=lambda wildcards: SPEC_POINTS[wildcards.spec],
        triton_cache=TRITON_CACHE,
    threads: compile_threads()
    script:
        "../scripts/compile.py"
