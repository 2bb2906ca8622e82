"""Snakemake adapter: summary table and text of the merged verify TSV (kernels.verify_report does the work)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821

from kernels.verify import read_rows  # noqa: E402
from kernels.verify_report import write_summary  # noqa: E402

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    print(write_summary(read_rows(sm.input.tsv), sm.output.summary, sm.output.text), file=log, end="")
