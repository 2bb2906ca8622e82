"""Snakemake adapter: compile one specialization's configs (kernels.compile does the work)."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821

from kernels.jobs import prepare_environment  # noqa: E402

sm = snakemake  # noqa: F821
prepare_environment("cuda", sm.params.triton_cache)

from kernels.compile import Point, compile_for_points  # noqa: E402
from kernels.naming import write_atomic  # noqa: E402
from kernels.plan import check_search_space  # noqa: E402
from kernels.status import STATUSES  # noqa: E402


def main():
    with open(sm.log[0], "w", buffering=1) as log:
        t0 = time.perf_counter()
        points = [Point(m, n, k, tuple(sm.params.block_shape), sm.params.out_dtype) for n, k, m in sm.params.points]
        configs = list(check_search_space(sm.params.search_space, sm.params.block_shape))
        results = compile_for_points(points, configs, sm.threads)
        counts = {s: sum(r.status == s for r in results.values()) for s in STATUSES}
        print(f"{len(results)} configs for {len(points)} points in {time.perf_counter() - t0:.1f} s "
              f"with {sm.threads} processes: {counts}", file=log)
        rows = ["config\tstatus\tseconds\tnote"]
        rows += [f"{c.label()}\t{r.status}\t{r.seconds}\t{r.note}" for c, r in sorted(results.items())]
        write_atomic(sm.output.tsv, "\n".join(rows) + "\n")


# The compile pool spawns processes that import this file again: only the parent runs it.
if __name__ == "__main__":
    main()
