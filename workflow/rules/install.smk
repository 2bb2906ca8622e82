# `snakemake install`: copy each engine's tuned files into the configs folder it reads them from (vLLM's or
# SGLang's, found without importing the engine), refusing to overwrite a file the engine ships unless
# install.existing says backup or merge, and print which file the engine reads for every shape.
# w8a8_tuner.results.install does the work.
from w8a8_tuner.results.install import (
    InstallError,
    config_folders,
    install,
    plan_install,
    summary,
    tuned_files,
)
from w8a8_tuner.results.naming import ENGINE_LABELS, engines_of

localrules:
    install,


def install_files():
    return tuned_files(PLAN.shapes, DEVICE, PLAN.block_shape, input_type=PLAN.input_type, engine=PLAN.engine,
                       configs_dir=f"{RESULTS}/configs")


def install_plan():
    """What installing would do; an engine not found, a folder that cannot be written or a file the engine ships
    (with install.existing: refuse) is an InstallError naming all of them."""
    settings = config["install"]
    folders = {engine: config_folders(engine, PLAN.input_type, settings["python"])
               for engine in dict.fromkeys(e for e, _, _ in install_files())}
    return plan_install(install_files(), folders, settings["existing"])


# Asked for: checked before any job (and before a sweep that would tune first), so a refusal costs nothing.
if workflow.is_main_process and TARGETS and "install" in TARGETS:
    try:
        install_plan()
    except InstallError as e:
        raise WorkflowError(str(e))


# No output: it runs whenever it is asked for (files the engines own are not Snakemake's to track).
rule install:
    """Copy the tuned JSON files into each engine's configs folder and say which file the engine reads."""
    input:
        all_config_files(),
    run:
        try:
            copies = install_plan()
            install(copies)
        except (InstallError, OSError) as e:
            raise WorkflowError(str(e))
        print(summary(copies, DEVICE, PLAN.input_type), end="")


def print_next_steps():
    """At the end of a successful run (the Snakefile's onsuccess): where the tuned files are and what to do next."""
    if SHAPES_ONLY or (TARGETS and "install" in TARGETS):
        return  # nothing tuned to point at, or install has just said where everything is
    made = [path for path in all_config_files() if Path(path).is_file()]
    if not made:
        return
    names = " and ".join(ENGINE_LABELS[e] for e in engines_of(PLAN.engine))
    print(f"Tuned files: {len(made)} of this config's {len(all_config_files())} JSON files, named for {names}, are in "
          f"{RESULTS}/configs/.\nNext: snakemake install (same config) copies them where the engine reads them and "
          "says which file it reads for each shape; after a restart, the engine logs \"Using configuration from "
          "<file> for W8A8 Block ... kernel.\" for each (README: Install).")
