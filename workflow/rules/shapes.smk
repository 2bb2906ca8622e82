# `snakemake shapes`: the weight shapes each TP size tunes, the layers each serves and how TP splits
# them, and the layers that run in another kernel (routed experts), in results/shapes.tsv and printed.
# Tunes nothing and needs no GPU and no device_name: shapes do not depend on the device, so the table
# is not under a device's folder.
from w8a8_tuner.results.files import write_atomic

localrules:
    shapes,


SHAPES_TSV = "results/shapes.tsv"
# Where earlier versions kept the table (and a marker that made it again): a table there may be another
# config's, so the rule removes it.
_OLD_SHAPES_FILES = ("shapes.tsv", "shapes.stale")

if workflow.is_main_process:
    for _note in PLAN.shape_table.notes:
        print(f"note: {_note}", file=sys.stderr)


# No output: the rule runs whenever it is asked for, so the table and the file always follow the current
# config and the table is printed even when the file already holds it (a file output would be "up to date"
# for Snakemake while the config changed, which its triggers do not see).
rule shapes:
    """Write and print the weight shapes of every configured TP size with the layers each serves (shapes.tsv)."""
    params:
        text=PLAN.shape_table.tsv(),
        summary=PLAN.shape_table.summary(),
    run:
        Path(SHAPES_TSV).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(SHAPES_TSV, params.text)
        for old in [p for name in _OLD_SHAPES_FILES for p in Path("results").glob(f"*/{name}")]:
            old.unlink(missing_ok=True)
        print(f"{SHAPES_TSV}:\n{params.summary}", end="")
