localrules:
    aggregate,


rule aggregate:
    """Merge one shape's per-batch TSVs into the JSON file vLLM and SGLang load."""
    input:
        unpack(shape_tsvs),
    output:
        json=f"{RESULTS}/configs/{config_file_name('{N}', '{K}', DEVICE, PLAN.block_shape)}",
    log:
        f"{LOGS}/aggregate/N{{N}}_K{{K}}.log",
    params:
        device_name=DEVICE,
        block_shape=list(PLAN.block_shape),
        out_dtype=PLAN.out_dtype,
        backend=PLAN.backend,
        search_space=config["search_space"],
    script:
        "../scripts/aggregate.py"


# One target per TP size, e.g. `snakemake tp8`: the files that TP size needs.
for _tp in PLAN.shapes_by_tp:

    rule:
        name:
            f"tp{_tp}"
        input:
            tp_config_files(_tp),
        localrule: True
