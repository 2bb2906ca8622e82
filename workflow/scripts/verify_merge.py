"""Snakemake adapter: merge the per-shape verify TSVs into one (w8a8_tuner.verify.table does the work)."""

import sys

from w8a8_tuner.verify.table import VerifyFileError, merge

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    try:
        df = merge(list(sm.input), sm.output.tsv)
    except VerifyFileError as e:
        print(f"ERROR: {e}", file=log)
        print(f"verify_merge: {e}", file=sys.stderr)
        raise SystemExit(1)
    print(f"merged {len(sm.input)} shapes, {len(df)} points into {sm.output.tsv}", file=log)
