"""One leaf job: take a GPU slot, have the point tuned on that GPU, write the TSV, print one line.

The rule runs this module as a small command (no Snakemake or torch import in the job's own
process). By default it hands the point to a persistent worker process that owns the slot's
GPU between jobs (w8a8_tuner.jobs.worker), so the interpreter start, torch import, CUDA context
and loaded kernels are paid once per GPU instead of once per point. With
`--in-process` the job tunes in its own process (SLURM: an allocation cannot be reused).

    python -m w8a8_tuner.jobs.client --tsv T --log L --N 576 --K 7168 --M 1 --settings S.json \\
        --triton-cache C --compile-workers 8 --worker-idle-s 60 [--in-process] [--points-total 252]

(the rule passes the config's values: the defaults live in the schema)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from w8a8_tuner import hooks
from w8a8_tuner.jobs import slots

# Set by the workflow when a run starts: the time this run's progress and time left are counted from.
RUN_STARTED_ENV = "W8A8_TUNER_RUN_STARTED"


def tune_job(out_tsv: str, log_path: str, N: int, K: int, M: int, settings: dict, triton_cache: str,
             compile_workers: int, persistent_worker: bool, worker_idle_s: float) -> str:
    """Tune one point on a GPU slot (persistent worker or in-process); returns the winner's summary.

    The point's lock is held throughout: a job of an earlier run that still tunes this point (orphaned by a
    killed snakemake) is waited for, and the TSV it leaves is kept if it is whole and of these settings."""
    def say(message: str) -> None:
        print(f"tune N={N} K={K} M={M}: {message}", file=sys.stderr, flush=True)

    with point_held(out_tsv, say) as holder:
        if (kept := finished_point(out_tsv, N, K, M, settings)) is not None:
            by = f"by {holder} while this job waited" if holder else "by another job"
            with open(log_path, "a") as log_file:
                print(f"kept {out_tsv}, tuned {by}: {kept}", file=log_file)
            return f"{kept} (kept: tuned {by})"
        return _tune(out_tsv, log_path, N, K, M, settings, triton_cache, compile_workers, persistent_worker,
                     worker_idle_s)


def _tune(out_tsv: str, log_path: str, N: int, K: int, M: int, settings: dict, triton_cache: str,
          compile_workers: int, persistent_worker: bool, worker_idle_s: float) -> str:
    open(log_path, "w").close()  # a re-run starts a fresh log
    # O_APPEND: the worker appends to it too. Read back if a new run's snakemake deletes it meanwhile (it removes a
    # job's log before starting the job): the job that waits for this one then appends to this log, not a blank one.
    with open(log_path, "a+", buffering=1) as log_file, _log_kept(log_path, log_file):
        def log(message: str) -> None:
            print(message, file=log_file)

        backend = settings["backend"]
        with slots.held(backend == "cuda", log) as slot:
            request = {
                "tsv": str(Path(out_tsv).resolve()), "log": str(Path(log_path).resolve()), "N": N, "K": K,
                "M": M, "settings": settings, "triton_cache": str(Path(triton_cache).resolve()),
                "compile_workers": compile_workers, "slot": slot.uuid if slot else "none",
                # the job's test hook, not the worker's: a worker outlives the job that started it
                "corrupt": os.environ.get(hooks.CORRUPT_ENV, ""),
            }
            if persistent_worker:
                from w8a8_tuner.jobs import worker

                log_file.flush()
                return worker.submit(request, slot, backend, triton_cache, worker_idle_s, log)
            from w8a8_tuner.jobs.point import run_point

            return run_point(request, slots.pin_to(slot) if backend == "cuda" else None, log)


def point_lock_path(out_tsv: str) -> Path:
    out = Path(out_tsv)
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def point_held(out_tsv: str, say: Callable[[str], None]) -> Iterator[str]:
    """Hold the point's lock (an fcntl lock beside its TSV, on the results folder every node shares) for the
    block; wait while another process holds it. Yields who held it before ('' if nobody did)."""
    fd = os.open(point_lock_path(out_tsv), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        holder = ""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            say(f"{holder} is tuning this point (a job of an earlier run whose snakemake was killed?); "
                "waiting for it, not tuning it twice")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield holder
    finally:
        os.close(fd)  # releases the lock


def finished_point(out_tsv: str, N: int, K: int, M: int, settings: dict) -> str | None:
    """The summary of the point's TSV if one is there, whole and of these settings (read_tsv's checks), else None.
    Snakemake removes a job's output before it starts: a TSV found here was written by another job since."""
    if not Path(out_tsv).exists():
        return None
    from w8a8_tuner.results.tsv import ResultFileError, expected_meta, read_tsv
    from w8a8_tuner.search.space import Config, settings_configs

    try:
        meta, df = read_tsv(out_tsv, expected_meta(settings, N, K, M), set(settings_configs(settings, M)))
    except ResultFileError:
        return None  # tuned again, and replaced
    time_us = float(df.loc[df["config"] == Config.from_label(meta["best"]), "time_us"].iloc[0])
    return f"{meta['best']} {time_us:.2f} us"


@contextlib.contextmanager
def _log_kept(log_path: str, log_file) -> Iterator[None]:
    try:
        yield
    finally:
        if not os.path.exists(log_path):
            log_file.flush()
            log_file.seek(0)
            Path(log_path).write_text(log_file.read())


def progress(out_tsv: str, total: int) -> str:
    """'37/252 points, ~4 min left': points with a TSV in this sweep's folder, and the time left at
    the rate this run has finished them."""
    folder = Path(out_tsv).parent.parent
    done = [p.stat().st_mtime for p in folder.glob("N*_K*/M*.tsv")][:total]  # other batch sizes may be there
    text = f"{len(done)}/{total} points"
    started = float(os.environ.get(RUN_STARTED_ENV, "nan"))
    this_run = sum(t >= started for t in done)
    left = total - len(done)
    if this_run and left > 0 and time.time() > started:
        seconds = left * (time.time() - started) / this_run
        text += f", ~{seconds / 60:.0f} min left" if seconds >= 90 else f", ~{seconds:.0f} s left"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Tune one (N, K, M) point into one TSV.")
    ap.add_argument("--tsv", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--N", type=int, required=True)
    ap.add_argument("--K", type=int, required=True)
    ap.add_argument("--M", type=int, required=True)
    ap.add_argument("--settings", required=True, help="the sweep's settings.json (w8a8_tuner.plan.settings)")
    ap.add_argument("--triton-cache", required=True)
    ap.add_argument("--compile-workers", type=int, required=True)
    ap.add_argument("--in-process", action="store_true", help="no persistent worker")
    ap.add_argument("--worker-idle-s", type=float, required=True, help="the persistent worker's idle time")
    ap.add_argument("--points-total", type=int, default=0, help="points in the sweep (for the progress line)")
    a = ap.parse_args(argv)
    where = f"tune N={a.N} K={a.K} M={a.M}"
    try:
        settings = json.loads(Path(a.settings).read_text())
        summary = tune_job(a.tsv, a.log, a.N, a.K, a.M, settings, a.triton_cache, a.compile_workers,
                           persistent_worker=not a.in_process and "SLURM_JOB_ID" not in os.environ,
                           worker_idle_s=a.worker_idle_s)
    except Exception as e:  # noqa: BLE001 - one line naming the point, for snakemake's output and the log
        message = f"{where}: {type(e).__name__}: {e}"
        with open(a.log, "a") as log:
            print(f"ERROR: {message}", file=log)
        print(message, file=sys.stderr)
        return 1
    line = f"tuned N={a.N} K={a.K} M={a.M}: {summary}"
    if a.points_total:
        line += f" | {progress(a.tsv, a.points_total)}"
    print(line, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
