"""Tune one point in this process and write its TSV (what a worker does per request, or a job in-process).

A request is a plain dict (it crosses a socket as JSON):
  tsv, log          output TSV and log file (absolute paths)
  N, K, M           the point
  settings          the sweep's result settings (w8a8_tuner.plan.settings: device, backend, block
                    shape, out dtype, search space, search settings) and their fingerprint
  triton_cache      compiled-kernel cache folder; compile_workers: processes compiling configs
  slot              the GPU slot's UUID ("none" without slots)
  corrupt           test hook (w8a8_tuner.hooks): config labels whose output is damaged, or ""
"""

from __future__ import annotations

import socket
import time

from w8a8_tuner import hooks


class DeviceMismatch(RuntimeError):
    pass


def check_device(expected: str, index: int, out_path: str) -> None:
    """Stop a job whose GPU is not the device its results are named for."""
    import torch

    from w8a8_tuner.results.naming import normalize_device_name

    found = normalize_device_name(torch.cuda.get_device_name(index))
    if found != expected:
        raise DeviceMismatch(
            f"this job writes results for device {expected!r} ({out_path}) but the GPU it got is {found!r}; "
            f"run the sweep for that device (device_name: auto or {found}) on this node")


def run_point(request: dict, device_index: int | None, log) -> str:
    """Tune the request's point and write its TSV; returns the one-line result for the job's output."""
    from w8a8_tuner.search.backend import prepare

    backend = prepare(request["settings"]["backend"], request["triton_cache"])  # before triton is imported
    return backend.run_point(request, device_index, log, tune_request)


def tune_request(backend, request: dict, device_index: int | None, log) -> str:
    """The tuner: search the request's point on `backend` (w8a8_tuner.search.backend) and write its TSV."""
    started = time.time()
    s = request["settings"]
    from w8a8_tuner.plan.settings import settings_point, variant
    from w8a8_tuner.results.tsv import point_meta, write_tsv
    from w8a8_tuner.search.settings import SearchSettings
    from w8a8_tuner.search.space import pruned_at, settings_configs
    from w8a8_tuner.search.stages import tune_point
    from w8a8_tuner.search.workload import Workload

    if backend.on_gpu:
        import torch

        torch.cuda.set_device(device_index)
        check_device(s["device_name"], device_index, request["tsv"])
    N, K, M = request["N"], request["K"], request["M"]
    block_shape = tuple(s["block_shape"])
    search = SearchSettings(**s["search"])
    configs = list(settings_configs(s, M))
    workload = Workload.create(M, N, K, block_shape, s["out_dtype"], backend.device, backend.cache_bytes(),
                               seed=search.seed, **variant(s))
    point = settings_point(s, N, K, M)
    corrupt = hooks.corrupt_predicate(request.get("corrupt", ""))
    report = tune_point(workload, configs, search, backend.bench(),
                        backend.compiler(point, int(request["compile_workers"]), backend.arch(s["device_name"])),
                        prune=lambda cs, m, k: pruned_at(cs, m, k, search.prune_accumulators),
                        corrupt=(lambda c: corrupt(c.label())) if corrupt else None, log=log)
    timings = "meaningless (Triton interpreter on CPU)" if not backend.on_gpu else "GPU, median"
    meta = point_meta(s, N, K, M, timings, request["slot"], socket.gethostname(), started, time.time())
    write_tsv(request["tsv"], meta, report.results, report.best, report.best_plain)
    best = next(r for r in report.results if r.config == report.best)
    return f"{report.best.label()} {best.time_us:.2f} us"
