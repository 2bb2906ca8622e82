"""Snakemake adapter: merge the per-shape verify TSVs into one (kernels.verify does the work)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821

from kernels.verify import VerifyFileError, merge  # noqa: E402

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    try:
        df = merge(list(sm.input), sm.output.tsv)
    except VerifyFileError as e:
        print(f"ERROR: {e}", file=log)
        print(f"verify_merge: {e}", file=sys.stderr)
        raise SystemExit(1)
    print(f"merged {len(sm.input)} shapes, {len(df)} points into {sm.output.tsv}", file=log)
