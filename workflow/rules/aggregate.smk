localrules:
    aggregate,
    mark_stale,


rule mark_stale:
    """A JSON on disk is not what its TSVs and settings give (common.smk says why): have it made again."""
    output:
        f"{RESULTS}/aggregate/stale/N{{N}}_K{{K}}.{{key}}",
    params:
        why=lambda wildcards: STALE.get((wildcards.N, wildcards.K), ""),
    run:
        print(f"N={wildcards.N} K={wildcards.K}: the JSON is stale ({params.why}); making it again")
        Path(output[0]).write_text(params.why + "\n")


rule aggregate:
    """Merge one shape's per-batch TSVs into the JSON file vLLM and SGLang load, and its manifest."""
    input:
        unpack(lambda wildcards: shape_tsvs(wildcards.N, wildcards.K)),
        stale=stale_marker,
    output:
        json=f"{RESULTS}/configs/{config_file_name('{N}', '{K}', DEVICE, PLAN.block_shape)}",
        manifest=f"{RESULTS}/aggregate/N{{N}}_K{{K}}.tsv",
    log:
        f"{LOGS}/aggregate/N{{N}}_K{{K}}.log",
    params:
        settings=SETTINGS,
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
