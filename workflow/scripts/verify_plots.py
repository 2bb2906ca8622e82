"""Snakemake adapter: the report's PNG plots of the merged verify TSV (kernels.verify_report does the work)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821

from kernels.verify import read_rows  # noqa: E402
from kernels.verify_report import write_plots  # noqa: E402

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    write_plots(read_rows(sm.input.tsv), dict(sm.output.items()))
    print("plots: " + ", ".join(sm.output), file=log)
