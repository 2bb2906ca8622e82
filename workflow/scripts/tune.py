"""Snakemake adapter: tune one (N, K, M) point into one TSV (kernels.jobs does the work)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821

from kernels.jobs import tune_job  # noqa: E402  (light: no torch in this process)
from kernels.settings import Settings  # noqa: E402

sm = snakemake  # noqa: F821


def main():
    tuning = dict(sm.params.tuning)
    try:
        tune_job(
            sm.output.tsv, sm.log[0], int(sm.wildcards.N), int(sm.wildcards.K), int(sm.wildcards.M),
            sm.params.search_space, sm.params.block_shape, sm.params.out_dtype, sm.params.device_name,
            sm.params.backend, Settings.from_config(tuning, sm.params.backend, int(sm.params.compile_workers)),
            sm.params.triton_cache, persistent_worker=bool(tuning.get("persistent_worker", True)),
            worker_idle_s=float(tuning.get("worker_idle_s", 60)),
        )
    except Exception as e:
        message = f"tune N={sm.wildcards.N} K={sm.wildcards.K} M={sm.wildcards.M}: {type(e).__name__}: {e}"
        with open(sm.log[0], "a") as log:
            print(f"ERROR: {message}", file=log)
        print(message, file=sys.stderr)
        raise SystemExit(1)


# In-process tuning may start a compile pool whose processes import this file again.
if __name__ == "__main__":
    main()
