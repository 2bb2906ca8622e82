"""Snakemake adapter: summary table and text of the merged verify TSV (w8a8_tuner.verify.report does the work)."""

from w8a8_tuner.verify.report import write_summary
from w8a8_tuner.verify.table import read_rows

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    print(write_summary(read_rows(sm.input.tsv), sm.output.summary, sm.output.text, sm.params.engine), file=log, end="")
