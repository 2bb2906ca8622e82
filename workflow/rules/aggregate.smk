localrules:
    aggregate,


rule aggregate:
    """Merge one shape's per-batch TSVs into the JSON file(s) vLLM and SGLang load (one per engine
    spelling of the name; each with the best config its engine can run), and its manifest."""
    input:
        unpack(lambda wildcards: shape_tsvs(wildcards.N, wildcards.K)),
        stale=stale_marker,
    output:
        jsons=[
            report(
                f"{RESULTS}/configs/{name}",
                caption="../report/tuned_json.rst",
                category="Tuned configs",
                labels={"N": "{N}", "K": "{K}", "engine": json_engines(name, "{N}", "{K}")},
            )
            for name in config_names("{N}", "{K}")
        ],
        manifest=f"{RESULTS}/aggregate/N{{N}}_K{{K}}.tsv",
    log:
        f"{LOGS}/aggregate/N{{N}}_K{{K}}.log",
    params:
        settings=SETTINGS,
        runs_knobs=lambda wildcards: json_runs_knobs(wildcards.N, wildcards.K),
    script:
        "../scripts/aggregate.py"


# One target per TP size, e.g. `snakemake tp8`: the files that TP size needs.
for _tp in PLAN.shapes_by_tp:

    rule:
        name:
            f"tp{_tp}"
        input:
            tp_config_files(_tp),
            compile_targets(_tp),
        localrule: True
