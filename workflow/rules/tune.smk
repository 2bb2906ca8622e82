from w8a8_tuner.results.files import write_atomic

localrules:
    tune_settings,


rule tune_settings:
    """The settings every point of this sweep is tuned with, in the folder their fingerprint names."""
    output:
        json=settings_json(),
    log:
        f"{LOGS}/tune_settings.log",
    params:
        text=settings_text(SETTINGS),
    run:
        write_atomic(output.json, params.text)  # whole or absent: the profile ignores Snakemake's incomplete marks
        Path(log[0]).write_text(f"settings of {SWEEP} written\n")


rule tune:
    """Search every config for one (N, K, M) on one GPU slot; one TSV row per config. The job is a
    small client of a persistent per-GPU worker (w8a8_tuner.jobs.client), so it starts fast; its
    command line holds no setting, so editing code or a setting that cannot change a result
    (compile workers, the worker's idle time) re-tunes nothing."""
    input:
        settings=ancient(settings_json()),
    output:
        tsv=f"{SWEEP}/N{{N}}_K{{K}}/M{{M}}.tsv",
    log:
        f"{LOGS}/tune/N{{N}}_K{{K}}/M{{M}}.log",
    params:
        python=PYTHON,
        triton_cache=TRITON_CACHE,
        compile_workers=compile_workers,
        worker="--in-process" if not config["tuning"]["persistent_worker"] else "",
        idle=config["tuning"]["worker_idle_s"],
        points=len(PLAN.points()),
    threads: 1
    # Before compile jobs (the GPU is the scarce resource; compile jobs take the cores left), in the
    # order of work of common.smk (tune_priority).
    priority: tune_priority
    resources:
        gpu=1,
    shell:
        "{params.python} -m w8a8_tuner.jobs.client --tsv {output.tsv} --log {log} "
        "--N {wildcards.N} --K {wildcards.K} --M {wildcards.M} --settings {input.settings} "
        "--triton-cache {params.triton_cache} --compile-workers {params.compile_workers} {params.worker} "
        "--worker-idle-s {params.idle} --points-total {params.points}"
