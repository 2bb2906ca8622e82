from w8a8_tuner.results.outdated import set_aside

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


rule set_aside_outdated_configs:
    """Move the files in configs/ that the current settings do not make (common.smk, OUTDATED) into a folder of
    their own, with a record of why: configs/ then holds exactly what these settings make."""
    output:
        record=f"{RESULTS}/outdated_configs/{{moved_at}}/moved.tsv",
    localrule: True
    priority: 1000000  # before any tune job: nothing outdated stays in configs/ while the sweep runs
    run:
        for line in set_aside(outdated_configs(), Path(output.record).parent):
            print(line, file=sys.stderr)


# One target per TP size, e.g. `snakemake tp8`: the files that TP size needs.
for _tp in PLAN.shapes_by_tp:

    rule:
        name:
            f"tp{_tp}"
        input:
            tp_config_files(_tp),
            compile_targets(_tp),
            outdated_targets(),
        localrule: True
