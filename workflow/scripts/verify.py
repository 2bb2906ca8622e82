"""Snakemake adapter: verify one shape's tuned configs into one TSV (w8a8_tuner.verify does the work)."""

import sys

from w8a8_tuner.verify.point import VerifySettings, verify_job

sm = snakemake  # noqa: F821
with open(sm.log[0], "w", buffering=1) as log_file:

    def log(message):
        print(message, file=log_file)

    try:
        verify_job(
            sm.output.tsv, int(sm.wildcards.N), int(sm.wildcards.K), sm.input.tuned,
            {int(m[1:]): path for m, path in sm.input.items() if m.startswith("M")},
            sm.params.compare_dir or None, sm.params.device_name, sm.params.block_shape, sm.params.out_dtype,
            sm.params.backend, sm.params.triton_cache, VerifySettings.from_config(sm.params.settings), log=log,
            input_type=sm.params.input_type, kernel=sm.params.kernel, compile_workers=sm.params.compile_workers,
            engine=sm.params.engine,
        )
    except Exception as e:
        log(f"ERROR: {type(e).__name__}: {e}")
        print(f"verify N={sm.wildcards.N} K={sm.wildcards.K}: {type(e).__name__}: {e}", file=sys.stderr)
        raise SystemExit(1)
