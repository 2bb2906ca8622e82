"""Tune one (N, K, M) point: prune, compile, check every config's numbers, then a staged timing search.

Like Triton's autotuner, the search takes what differs between backends as arguments: the bench
(how a time is taken, w8a8_tuner.search.bench), the compiler and the pruning rule.

Stages, each on fewer configs and with more care; every number comes from `bench.measure`:
  1. prune     configs whose program order equals another's at this M (exact: same schedule)
  2. compile   the rest (outcomes cached per Triton specialization); configs come out in batches
               as they are compiled, and steps 3 and the first round of 4 run on each batch at once
  3. check     every compiled config runs once on NaN-poisoned output and is compared with the
               float32 reference; a wrong one is `wrong_result` and never timed again (these runs,
               interleaved behind the held stream, are also the first round of step 4)
  4. estimate  every right config: single launches, `estimate_rounds` interleaved rounds, median; a
               config over `estimate_drop` x the best after the first round gets no more rounds
               (the first round is interleaved within each compiled batch, the others over all)
  5. screen    configs within `screen_cutoff` x the best estimate plus `screen_slack_us` (at least
               `screen_min`): median of `screen_repeats` rounds of ~`screen_budget_us` batches
  6. remeasure configs within `remeasure_cutoff` of the best screen time (at least `top_k`):
               median of `remeasure_repeats` rounds of ~`remeasure_budget_us` batches; the winner
               is the fastest here. If the screen found another finalist faster than the winner by
               more than `remeasure_cutoff` (the screen's measured error), one of the two stages was
               disturbed: those configs are measured again and each keeps its better median.
Where the space holds configs with SGLang's Hopper knobs (which vLLM cannot run), steps 5 and 6 keep
their cutoffs within each family (plain, knob) so that each family's winner is re-measured: vLLM's file
gets the plain winner, SGLang's the overall one.
The cutoffs are set from the measured error of each stage against the careful time
(BENCHMARKS.md), so that no stage can drop the config that would win.
Statuses are in w8a8_tuner.search.status; `stage` in the TSV says how far each config got.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from w8a8_tuner.search.bench import Bench, launches_for
from w8a8_tuner.search.compile import CompileResult
from w8a8_tuner.search.settings import SearchSettings
from w8a8_tuner.search.space import Config, pruned_at
from w8a8_tuner.search.status import MAX_RELATIVE_ERROR, OK, PRUNED, STATUSES, WRONG_RESULT
from w8a8_tuner.search.workload import Workload

# Configs re-measured at most, however many fall within remeasure_cutoff (bounds the time per point).
MAX_FINALISTS = 32


@dataclass
class Result:
    config: Config
    status: str
    time_us: float = math.nan     # decisive median of the furthest stage reached
    screen_us: float = math.nan
    rel_error: float = math.nan
    stage: str = ""               # "estimate", "screen" or "remeasure"
    note: str = ""


@dataclass
class PointReport:
    results: list[Result]
    best: Config
    best_plain: Config | None = None  # the fastest config without a Hopper knob, where knob configs were tuned


class NoValidConfig(RuntimeError):
    pass


# compile(configs) yields {config: outcome} batches as configs are compiled (every config exactly once).
Compiler = Callable[[list[Config]], Iterable[dict[Config, CompileResult]]]


# prune(configs, M, K) -> {config: why it is not timed} (w8a8_tuner.search.space.pruned_at).
Pruner = Callable[[list[Config], int, int], dict[Config, str]]


def tune_point(workload: Workload, configs: list[Config], settings: SearchSettings, bench: Bench,
               compile: Compiler, prune: Pruner = pruned_at,
               corrupt: Callable[[Config], bool] | None = None, log: Callable[[str], None] = print) -> PointReport:
    """Run the whole search for one point. `corrupt` (tests only) damages chosen configs' outputs."""
    clock = _PhaseClock(log)
    N, K, M = workload.N, workload.K, workload.M

    # 1-2. Prune what cannot win or repeats another config's program order; compile the rest. 3. Check the
    # numbers and 4. time one round of each config as compiled configs come in, so the GPU starts at once.
    reasons = prune(configs, M, K)
    results = {c: Result(c, PRUNED, note=reasons[c]) for c in configs if c in reasons}
    todo = [c for c in configs if c not in reasons]
    launchers, samples, checked = {}, {}, 0
    for batch in compile(todo):
        results.update({c: Result(c, r.status, note=r.note) for c, r in batch.items()})
        compiled_ok = [c for c in todo if c in batch and batch[c].status == OK]
        # the check's runs are the first timing round too (one launch each, interleaved)
        checks = workload.check(compiled_ok, corrupt, bench=bench)
        for c, outcome in checks.items():
            r = results[c]
            r.rel_error, r.note = outcome.rel_error, outcome.note
            if outcome.status:
                r.status = outcome.status
            elif not outcome.right:
                r.status, r.note = WRONG_RESULT, f"relative error {outcome.rel_error:.3g} > {MAX_RELATIVE_ERROR}"
        checked += len(compiled_ok)
        right = [c for c in compiled_ok if results[c].status == OK]
        launchers.update({c: workload.launcher(c) for c in right})
        samples.update({c: [checks[c].first_us] for c in right if not math.isnan(checks[c].first_us)})
        untimed = [c for c in right if c not in samples]
        if untimed:
            samples.update(zip(untimed, bench.measure([launchers[c] for c in untimed], 1, 1)))
    ok = [c for c in todo if results[c].status == OK]
    clock.done(f"compile {len(todo)} configs ({len(configs) - len(todo)} pruned), check {checked}, "
               f"time {len(ok)} once: {_count(results)}")
    if not ok:
        first = next((f"; first failure: {r.config.label()}: {r.note}" for r in results.values()
                      if r.status not in (OK, PRUNED) and r.note), "")
        raise NoValidConfig(f"no config ran correctly for N={N} K={K} M={M}: {_count(results)}{first}")

    # 4. The other rounds of the first timing, interleaved, for the configs not far behind after one.
    best_first = min(s[0] for s in samples.values())
    behind = {c for c in ok if samples[c][0] > best_first * settings.estimate_drop + settings.screen_slack_us}
    more = [c for c in ok if c not in behind]
    if settings.estimate_rounds > 1:
        for c, s in zip(more, bench.measure([launchers[c] for c in more], 1, settings.estimate_rounds - 1)):
            samples[c] += s
    for c in ok:
        results[c].time_us, results[c].stage = statistics.median(samples[c]), "estimate"
    clock.done(f"estimate {len(ok)} configs ({len(behind)} after one round)")

    # 5. Screen the promising ones.
    screened = _keep_each_family(ok, results, settings.screen_cutoff, settings.screen_min, len(ok),
                                 settings.screen_slack_us)
    for c in ok:
        if c not in screened:
            rounds = " (one round)" if c in behind else ""
            results[c].note = (f"not screened: first timing{rounds} over {settings.screen_cutoff}x the best "
                               f"+ {settings.screen_slack_us:g} us")
    _time_stage(bench, launchers, screened, results, settings.screen_budget_us, settings.screen_repeats, "screen")
    for c in screened:
        results[c].screen_us = results[c].time_us
    clock.done(f"screen {len(screened)} configs")

    # 6. Re-measure the best few of each family carefully; the winners come from here.
    finalists = _keep_each_family(screened, results, settings.remeasure_cutoff, settings.top_k, MAX_FINALISTS)
    _time_stage(bench, launchers, finalists, results, settings.remeasure_budget_us, settings.remeasure_repeats,
                "remeasure")
    for family in _families(finalists):
        best = _fastest(family, results)
        for _ in range(2):
            # The screen says another finalist is faster beyond its measured error: measure both again.
            doubted = [c for c in family if results[best].screen_us > results[c].screen_us * settings.remeasure_cutoff]
            if not doubted:
                break
            again = [best, *doubted]
            first = {c: results[c].time_us for c in again}
            _time_stage(bench, launchers, again, results, settings.remeasure_budget_us, settings.remeasure_repeats,
                        "remeasure")
            for c in again:
                results[c].time_us = min(first[c], results[c].time_us)
                results[c].note = "re-measured again: screen and re-measure disagreed"
            log(f"screen and re-measure disagreed on {best.label()} vs {', '.join(c.label() for c in doubted)}: "
                "measured again")
            best = _fastest(family, results)
    best = _fastest(finalists, results)
    plain = [c for c in finalists if not c.knobs]
    if not plain:  # the configs with a knob ran, none without: vLLM's file (and the TSV's best_plain) has none
        raise NoValidConfig(f"no config without a Hopper knob ran correctly for N={N} K={K} M={M}: {_count(results)}")
    best_plain = _fastest(plain, results) if any(c.knobs for c in configs) else None
    clock.done(f"re-measure {len(finalists)} configs")
    log(f"best {best.label()}: {results[best].time_us:.2f} us"
        + (f"; best without a knob {best_plain.label()}: {results[best_plain].time_us:.2f} us" if best_plain else ""))
    return PointReport([results[c] for c in configs], best, best_plain)


def _fastest(configs: list[Config], results: dict[Config, Result]) -> Config:
    # Ties (equal medians are common: event times are quantized) go to the smaller config, as in the TSV.
    return min(configs, key=lambda c: (results[c].time_us, c))


def _families(configs: list[Config]) -> list[list[Config]]:
    """The configs without a Hopper knob, and those with one (SGLang's Hopper kernel), each non-empty."""
    return [f for f in ([c for c in configs if not c.knobs], [c for c in configs if c.knobs]) if f]


def _keep_each_family(configs: list[Config], results: dict[Config, Result], cutoff: float, at_least: int,
                      at_most: int, slack_us: float = 0.0) -> list[Config]:
    """_keep within each family, so that each family's best is timed with the care of the next stage."""
    return [c for family in _families(configs) for c in _keep(family, results, cutoff, at_least, at_most, slack_us)]


def _keep(configs: list[Config], results: dict[Config, Result], cutoff: float, at_least: int, at_most: int,
          slack_us: float = 0.0) -> list[Config]:
    """The configs within `cutoff` x the best current time (+ `slack_us`), fastest first, at least `at_least`."""
    ranked = sorted(configs, key=lambda c: results[c].time_us)
    limit = results[ranked[0]].time_us * cutoff + slack_us
    return [c for i, c in enumerate(ranked) if i < at_least or results[c].time_us <= limit][:max(at_most, 1)]


def _time_stage(bench: Bench, launchers, configs: list[Config], results: dict[Config, Result], budget_us: float,
                rounds: int, stage: str) -> None:
    launches = [launches_for(results[c].time_us, budget_us) for c in configs]
    for c, t in zip(configs, bench.median_us([launchers[c] for c in configs], launches, rounds)):
        results[c].time_us, results[c].stage = t, stage


def _count(results: dict[Config, Result]) -> str:
    return ", ".join(f"{s}={n}" for s in STATUSES if (n := sum(r.status == s for r in results.values())))


class _PhaseClock:
    """Logs the wall time of each phase of a point's search."""

    def __init__(self, log):
        self.log, self.t = log, time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        self.log(f"[{now - self.t:7.2f} s] {what}")
        self.t = now
