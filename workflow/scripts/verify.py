"""Snakemake adapter: verify one shape's tuned configs into one TSV (kernels.verify does the work)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821

from kernels.jobs import prepare_environment  # noqa: E402

sm = snakemake  # noqa: F821
prepare_environment(sm.params.backend, sm.params.triton_cache)

from kernels.verify import VerifySettings, verify_job  # noqa: E402

with open(sm.log[0], "w", buffering=1) as log_file:

    def log(message):
        print(message, file=log_file)

    settings = VerifySettings(backend=sm.params.backend, **dict(sm.params.settings))
    try:
        verify_job(
            sm.output.tsv, int(sm.wildcards.N), int(sm.wildcards.K), sm.input.tuned,
            sm.params.compare_dir or None, sm.params.device_name, sm.params.block_shape, sm.params.out_dtype,
            settings, log=log,
        )
    except Exception as e:
        log(f"ERROR: {type(e).__name__}: {e}")
        print(f"verify N={sm.wildcards.N} K={sm.wildcards.K}: {type(e).__name__}: {e}", file=sys.stderr)
        raise SystemExit(1)
