"""Snakemake adapter: compile one specialization's configs (w8a8_tuner.search.compile does the work)."""

import json
import time
from pathlib import Path

from w8a8_tuner.search.backend import prepare

sm = snakemake  # noqa: F821
backend = prepare("cuda", sm.params.triton_cache)  # sets the cache folder before triton is imported

from w8a8_tuner.plan.settings import settings_point  # noqa: E402
from w8a8_tuner.results.files import write_atomic  # noqa: E402
from w8a8_tuner.search.compile import compile_for_points  # noqa: E402
from w8a8_tuner.search.settings import SearchSettings  # noqa: E402
from w8a8_tuner.search.space import settings_configs  # noqa: E402
from w8a8_tuner.search.status import STATUSES  # noqa: E402

PREFETCH_NICE = 10


def main():
    settings = json.loads(Path(sm.input.settings).read_text())
    with open(sm.log[0], "w", buffering=1) as log:
        t0 = time.perf_counter()
        points = [settings_point(settings, n, k, m) for n, k, m in sm.params.points]
        prune = SearchSettings(**settings["search"]).prune_accumulators
        # nice: ahead-of-time work; a tune job compiling what its point lacks keeps the GPU waiting
        results = compile_for_points(points, lambda m: settings_configs(settings, m), sm.threads, sm.params.arch,
                                     backend.compile_fn, nice=PREFETCH_NICE, max_accumulators=prune)
        counts = {s: sum(r.status == s for r in results.values()) for s in STATUSES}
        print(f"{len(results)} configs for {len(points)} points for sm{sm.params.arch} in "
              f"{time.perf_counter() - t0:.1f} s with {sm.threads} processes: {counts}", file=log)
        rows = ["config\tstatus\tseconds\tnote"]
        rows += [f"{c.label()}\t{r.status}\t{r.seconds}\t{r.note}" for c, r in sorted(results.items())]
        write_atomic(sm.output.tsv, "\n".join(rows) + "\n")


# The compile pool spawns processes that import this file again: only the parent runs it.
if __name__ == "__main__":
    main()
