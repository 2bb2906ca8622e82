"""Snakemake adapter: merge one shape's TSVs into its engine JSON and manifest (w8a8_tuner.results does the work)."""

import sys
from pathlib import Path

from w8a8_tuner.results.aggregate import aggregate
from w8a8_tuner.results.tsv import ResultFileError, expected_meta
from w8a8_tuner.search.space import settings_configs

sm = snakemake  # noqa: F821
s = sm.params.settings
with open(sm.log[0], "w") as log:
    expected = expected_meta(s, int(sm.wildcards.N), int(sm.wildcards.K), M=None)  # aggregate sets each M
    tsvs = {int(m): path for m, path in sm.input.items() if m.isdigit()}
    try:
        best = aggregate(tsvs, dict(zip(sm.output.jsons, sm.params.runs_knobs)), sm.output.manifest, expected,
                         lambda m: set(settings_configs(s, m)))
    except ResultFileError as e:
        print(f"ERROR: {e}", file=log)
        print(f"aggregate N={sm.wildcards.N} K={sm.wildcards.K}: {e} (delete that TSV and run the same "
              "command again to re-tune its point)", file=sys.stderr)
        raise SystemExit(1)
    for marker in sm.input.stale:
        Path(marker).unlink(missing_ok=True)  # the stale JSON is replaced
    for m, c in best.items():
        print(f"M={m}: {c.label()}", file=log)
