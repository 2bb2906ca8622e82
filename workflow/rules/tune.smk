rule tune:
    """Search every config for one (N, K, M) on one GPU slot; one TSV row per config."""
    input:
        compiled=compiled_marker,
    output:
        tsv=f"{RESULTS}/tune/N{{N}}_K{{K}}/M{{M}}.tsv",
    log:
        f"{LOGS}/tune/N{{N}}_K{{K}}/M{{M}}.log",
    params:
        device_name=DEVICE,
        backend=PLAN.backend,
        block_shape=list(PLAN.block_shape),
        out_dtype=PLAN.out_dtype,
        search_space=config["search_space"],
        tuning=config.get("tuning", {}),
        triton_cache=TRITON_CACHE,
        compile_workers=compile_workers,
    threads: 1
    resources:
        gpu=1,
    script:
        "../scripts/tune.py"
