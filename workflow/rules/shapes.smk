# `snakemake shapes`: the weight shapes each TP size tunes, the layers each serves and how TP splits
# them, and the layers that run in another kernel (routed experts), in results/<device>/shapes.tsv and
# printed. Tunes nothing and needs no GPU (set device_name where there is none).
from w8a8_tuner.results.files import write_atomic

localrules:
    shapes,


SHAPES_TSV = f"{RESULTS}/shapes.tsv"
SHAPES_TEXT = PLAN.shape_table.tsv()


# The table follows the config, which the profile's mtime trigger does not see: a table that is no
# longer what the config gives gets a marker input newer than it, so it is made again (as a stale JSON).
def shapes_marker_path():
    return f"{RESULTS}/shapes.stale"


def shapes_marker(wildcards):
    return [shapes_marker_path()] if _SHAPES_STALE else []


_SHAPES_STALE = False
if workflow.is_main_process:
    for _note in PLAN.shape_table.notes:
        print(f"note: {_note}", file=sys.stderr)
    if Path(SHAPES_TSV).exists() and Path(SHAPES_TSV).read_text() != SHAPES_TEXT:
        _SHAPES_STALE = True
        try:
            Path(shapes_marker_path()).write_text("the configured shapes changed\n")
        except OSError as e:
            raise WorkflowError(f"cannot write {shapes_marker_path()}: {e.strerror or e}; {SHAPES_TSV} is stale")


rule shapes:
    """Write the weight shapes of every configured TP size with the layers each serves (shapes.tsv)."""
    input:
        shapes_marker,
    output:
        tsv=SHAPES_TSV,
    params:
        text=SHAPES_TEXT,
        summary=PLAN.shape_table.summary(),
    run:
        write_atomic(output.tsv, params.text)
        print(f"{output.tsv}:\n{params.summary}", end="")
