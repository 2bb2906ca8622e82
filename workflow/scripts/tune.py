"""Snakemake adapter: tune one (N, K, M) point into one TSV (kernels.jobs does the work)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821

from kernels.jobs import prepare_environment  # noqa: E402

sm = snakemake  # noqa: F821
prepare_environment(sm.params.backend, sm.params.triton_cache)

from kernels.plan import check_search_space  # noqa: E402
from kernels.tuner import Settings  # noqa: E402
from kernels.jobs import tune_job  # noqa: E402

with open(sm.log[0], "w", buffering=1) as log_file:

    def log(message):
        print(message, file=log_file)

    tuning = dict(sm.params.tuning)
    tuning.pop("compile_workers", None)
    settings = Settings(backend=sm.params.backend, compile_workers=int(sm.params.compile_workers), **tuning)
    try:
        tune_job(
            sm.output.tsv,
            int(sm.wildcards.N), int(sm.wildcards.K), int(sm.wildcards.M),
            list(check_search_space(sm.params.search_space, sm.params.block_shape)),
            sm.params.block_shape, sm.params.out_dtype, sm.params.device_name, sm.params.backend,
            settings, log=log,
        )
    except Exception as e:
        log(f"ERROR: {type(e).__name__}: {e}")
        print(f"tune N={sm.wildcards.N} K={sm.wildcards.K} M={sm.wildcards.M}: {type(e).__name__}: {e}",
              file=sys.stderr)
        raise SystemExit(1)
