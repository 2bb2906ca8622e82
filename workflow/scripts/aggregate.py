"""Snakemake adapter: merge one shape's TSVs into its vLLM JSON (kernels.results does the work)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821

from kernels.plan import check_search_space  # noqa: E402
from kernels.results import ResultFileError, aggregate  # noqa: E402

sm = snakemake  # noqa: F821
with open(sm.log[0], "w") as log:
    expected = {"N": sm.wildcards.N, "K": sm.wildcards.K, "device_name": sm.params.device_name,
                "block_shape": list(sm.params.block_shape), "out_dtype": sm.params.out_dtype,
                "backend": sm.params.backend}
    configs = set(check_search_space(sm.params.search_space, sm.params.block_shape))
    try:
        best = aggregate({int(m): path for m, path in sm.input.items()}, sm.output.json, expected, configs)
    except ResultFileError as e:
        print(f"ERROR: {e}", file=log)
        print(f"aggregate N={sm.wildcards.N} K={sm.wildcards.K}: {e} (delete that TSV and run the same "
              "command again to re-tune its point)", file=sys.stderr)
        raise SystemExit(1)
    for m, c in best.items():
        print(f"M={m}: {c.label()}", file=log)
