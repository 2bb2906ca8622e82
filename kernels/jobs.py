"""One leaf job: take a GPU slot, have the point tuned on that GPU, write the TSV.

The job itself stays light (no torch import): by default it hands the point to a
persistent worker process that owns the slot's GPU between jobs (kernels.worker),
so the interpreter start, torch import, CUDA context and loaded kernels are paid
once per GPU instead of once per point. With `persistent_worker: false` the job
tunes in its own process.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

from kernels.settings import Settings

# Test hook: make chosen configs' outputs wrong ("all" or comma-separated Config labels),
# to show through the real workflow that wrong numbers are caught. Never set in production.
INJECT_WRONG_ENV = "W8A8_TUNER_INJECT_WRONG_RESULT"


class DeviceMismatch(RuntimeError):
    pass


def prepare_environment(backend: str, triton_cache_dir: str | None) -> None:
    """Set what Triton reads at import time. Call before importing kernels.kernel."""
    if backend == "interpret":
        os.environ["TRITON_INTERPRET"] = "1"
    if triton_cache_dir:
        os.environ["TRITON_CACHE_DIR"] = str(Path(triton_cache_dir).resolve())


def _inject_predicate(value: str | None):
    if not value:
        return None
    labels = set(value.split(","))
    return lambda config: value == "all" or config.label() in labels


def check_device(expected: str, index: int, out_tsv: str) -> None:
    import torch

    from kernels.naming import normalize_device_name

    found = normalize_device_name(torch.cuda.get_device_name(index))
    if found != expected:
        raise DeviceMismatch(
            f"this job writes results for device {expected!r} ({out_tsv}) but the GPU it got is {found!r}; "
            f"run the sweep for that device (device_name: auto or {found}) on this node")


def run_point(request: dict, device_index: int | None, log) -> None:
    """Tune one point in this process and write its TSV (used by workers and in-process jobs)."""
    from kernels.plan import check_search_space
    from kernels.results import write_tsv
    from kernels.tuner import tune_point

    started = time.time()
    backend = request["backend"]
    if backend == "cuda":
        import torch

        torch.cuda.set_device(device_index)
        check_device(request["device_name"], device_index, request["tsv"])
    configs = list(check_search_space(request["search_space"], request["block_shape"]))
    settings = Settings(**request["settings"])
    report = tune_point(request["N"], request["K"], request["M"], configs, request["block_shape"],
                        request["out_dtype"], settings, inject_wrong=_inject_predicate(request.get("inject_wrong")),
                        log=log)
    meta = {
        "N": request["N"], "K": request["K"], "M": request["M"], "block_shape": list(request["block_shape"]),
        "out_dtype": request["out_dtype"], "device_name": request["device_name"], "backend": backend,
        "timings": "meaningless (Triton interpreter on CPU)" if backend == "interpret" else "GPU, median",
        "slot": request["slot"], "host": socket.gethostname(),
        "started": f"{started:.3f}", "finished": f"{time.time():.3f}",
    }
    write_tsv(request["tsv"], meta, report.results, report.best)


def tune_job(out_tsv: str, log_path: str, N: int, K: int, M: int, search_space: dict, block_shape, out_dtype: str,
             device_name: str, backend: str, settings: Settings, triton_cache: str,
             persistent_worker: bool = True, worker_idle_s: float = 60.0) -> None:
    from kernels import slots

    started = time.time()
    open(log_path, "w").close()  # a re-run starts a fresh log
    log_file = open(log_path, "a", buffering=1)  # O_APPEND: the worker appends to it too

    def log(message: str) -> None:
        print(message, file=log_file)

    try:
        slot = None
        if backend == "cuda" or os.environ.get(slots.FAKE_GPUS_ENV):
            slot = slots.acquire()
            log(f"slot {slot.uuid} (index {slot.index}) on {socket.gethostname()} pid {os.getpid()} "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')} "
                f"acquired_at {time.time():.3f} waited {time.time() - started:.2f}s")
        request = {
            "tsv": str(Path(out_tsv).resolve()), "log": str(Path(log_path).resolve()),
            "N": N, "K": K, "M": M, "search_space": search_space, "block_shape": list(block_shape),
            "out_dtype": out_dtype, "device_name": device_name, "backend": backend,
            "settings": asdict(settings), "slot": slot.uuid if slot else "none",
            "inject_wrong": os.environ.get(INJECT_WRONG_ENV),
        }
        try:
            # Under SLURM each job has its own allocation: a worker could not be reused by the
            # next job and might outlive this one on a GPU given to someone else.
            if persistent_worker and "SLURM_JOB_ID" not in os.environ:
                from kernels import worker

                log_file.flush()
                worker.submit(request, slot, backend, triton_cache, worker_idle_s, log)
            else:
                prepare_environment(backend, triton_cache)
                run_point(request, slots.pin_to(slot) if backend == "cuda" else None, log)
        finally:
            if slot is not None:
                log(f"slot {slot.uuid} released_at {time.time():.3f}")
                slot.release()
    finally:
        log_file.close()
