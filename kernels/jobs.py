"""One leaf job: take a GPU slot, check the GPU is the one the output path names, tune, write the TSV.

Callable from Snakemake's script adapter or from a plain Python process. The
environment (TRITON_INTERPRET, TRITON_CACHE_DIR) must be set before this module
imports triton; `prepare_environment` does that.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from kernels.search_space import Config


# Test hook: make chosen configs' outputs wrong ("all" or comma-separated Config labels),
# to show through the real workflow that wrong numbers are caught. Never set in production.
INJECT_WRONG_ENV = "W8A8_TUNER_INJECT_WRONG_RESULT"


class DeviceMismatch(RuntimeError):
    pass


def injected_wrong():
    value = os.environ.get(INJECT_WRONG_ENV)
    if not value:
        return None
    labels = set(value.split(","))
    return lambda config: value == "all" or config.label() in labels


def prepare_environment(backend: str, triton_cache_dir: str | None) -> None:
    """Set what Triton reads at import time. Call before importing kernels.kernel."""
    if backend == "interpret":
        os.environ["TRITON_INTERPRET"] = "1"
    if triton_cache_dir:
        os.environ["TRITON_CACHE_DIR"] = str(Path(triton_cache_dir).resolve())


def tune_job(out_tsv: str, N: int, K: int, M: int, configs: list[Config], block_shape, out_dtype: str,
             device_name: str, backend: str, settings, log=print) -> None:
    from kernels import slots
    from kernels.naming import normalize_device_name
    from kernels.results import write_tsv
    from kernels.tuner import tune_point

    started = time.time()
    slot = None
    use_slots = backend == "cuda" or os.environ.get(slots.FAKE_GPUS_ENV)
    if use_slots:
        slot = slots.acquire()
        log(f"slot {slot.uuid} (index {slot.index}) on {socket.gethostname()} pid {os.getpid()} "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')} "
            f"acquired_at {time.time():.3f} waited {time.time() - started:.2f}s")
    try:
        if backend == "cuda":
            import torch

            torch.cuda.set_device(slot.index)
            found = normalize_device_name(torch.cuda.get_device_name(slot.index))
            if found != device_name:
                raise DeviceMismatch(
                    f"this job writes results for device {device_name!r} ({out_tsv}) but the GPU it got is "
                    f"{found!r}; run the sweep for that device (device_name: auto or {found}) on this node")
            # Compile workers are separate processes: point them at the same GPU.
            if slot.uuid.startswith("GPU-"):
                os.environ["CUDA_VISIBLE_DEVICES"] = slot.uuid
        report = tune_point(N, K, M, configs, block_shape, out_dtype, settings, inject_wrong=injected_wrong(),
                            log=log)
        meta = {
            "N": N, "K": K, "M": M, "block_shape": list(block_shape), "out_dtype": out_dtype,
            "device_name": device_name, "backend": backend,
            "timings": "meaningless (Triton interpreter on CPU)" if backend == "interpret" else "GPU, median",
            "slot": slot.uuid if slot else "none", "host": socket.gethostname(),
            "started": f"{started:.3f}", "finished": f"{time.time():.3f}",
        }
        write_tsv(out_tsv, meta, report.results, report.best)
        log(f"slot {slot.uuid if slot else 'none'} released_at {time.time():.3f}")
    finally:
        if slot is not None:
            slot.release()
