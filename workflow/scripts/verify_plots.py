"""Snakemake adapter: the report's PNG plots of the merged verify TSV (w8a8_tuner.verify.report does the work)."""

from w8a8_tuner.verify.report import write_plots
from w8a8_tuner.verify.table import read_rows

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    write_plots(read_rows(sm.input.tsv), dict(sm.output.items()), sm.params.engine)
    print("plots: " + ", ".join(sm.output), file=log)
