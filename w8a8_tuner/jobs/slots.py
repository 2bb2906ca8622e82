"""Which GPU a job uses: one exclusive slot per physical GPU, held with fcntl locks.

`--resources gpu=8` only caps how many jobs run; it does not say which GPU each
one gets. A job takes the first free lock among the GPUs visible to it and keeps
the file descriptor open for its whole life; the kernel frees the lock when the
process dies, even by kill -9, so a crashed job never strands a GPU.

Locks are keyed by the GPU's UUID, not its index: under SLURM with device
cgroups every job may see its own GPU as index 0. They live on node-local
storage (the folder named by W8A8_TUNER_LOCK_DIR, default /tmp/w8a8-tuner-gpu-locks),
never in the results folder, which a cluster shares between nodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_DIR_ENV = "W8A8_TUNER_LOCK_DIR"
# Fake GPUs for tests on CPU: "N" gives slots fake0..fake{N-1}.
FAKE_GPUS_ENV = "W8A8_TUNER_FAKE_GPUS"
DEFAULT_LOCK_DIR = "/tmp/w8a8-tuner-gpu-locks"


@dataclass
class Slot:
    index: int   # torch device index within the visible devices
    uuid: str    # stable physical identity (lock key)
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV, DEFAULT_LOCK_DIR))


def visible_gpus() -> list[str]:
    """UUIDs of the GPUs this process may use, in CUDA's order, honouring CUDA_VISIBLE_DEVICES.

    Read with nvidia-smi so that a job that only hands its point to a worker never
    pays for importing torch; torch is the fallback where nvidia-smi is missing.
    """
    fake = os.environ.get(FAKE_GPUS_ENV)
    if fake:
        # Fake GPUs honour CUDA_VISIBLE_DEVICES (by index) as a scheduler would narrow real ones.
        return select_visible([f"fake{i}" for i in range(int(fake))], os.environ.get("CUDA_VISIBLE_DEVICES"))
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=60, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return _visible_gpus_torch()
    return select_visible(listed, os.environ.get("CUDA_VISIBLE_DEVICES"))


def visible_gpu_names() -> list[str] | None:
    """Names of the GPUs this process may use, in CUDA's order (as torch.cuda.get_device_name gives them), read
    with nvidia-smi; None where nvidia-smi cannot tell (then ask torch)."""
    try:
        rows = subprocess.run(["nvidia-smi", "--query-gpu=uuid,name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    names = dict(row.split(", ", 1) for row in rows if ", " in row)
    return [names[u] for u in select_visible(list(names), os.environ.get("CUDA_VISIBLE_DEVICES"))]


def select_visible(all_uuids: list[str], cuda_visible: str | None) -> list[str]:
    """Apply CUDA_VISIBLE_DEVICES (indices or UUID prefixes; parsing stops at the first bad entry)."""
    if cuda_visible is None:
        return list(all_uuids)
    chosen: list[str] = []
    for entry in (e.strip() for e in cuda_visible.split(",")):
        if entry.isdigit() and int(entry) < len(all_uuids):
            match = all_uuids[int(entry)]
        else:
            prefix = entry if entry.startswith("GPU-") else f"GPU-{entry}"
            found = [u for u in all_uuids if entry and u.startswith(prefix)]
            if len(found) != 1:
                break
            match = found[0]
        if match in chosen:
            break
        chosen.append(match)
    return chosen


def _visible_gpus_torch() -> list[str]:
    import torch

    uuids = []
    for i in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        uuids.append(f"GPU-{uuid}" if uuid is not None else f"index{i}")
    return uuids


def check_lock_dir() -> None:
    """Stop before any job if the slot lock folder cannot be used; the message names the variable."""
    folder = lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(e.errno, f"GPU slot locks cannot be written in {folder} ({LOCK_DIR_ENV}"
                               f"={os.environ.get(LOCK_DIR_ENV, '<unset>, the default')}): {e.strerror or e}; "
                               f"set {LOCK_DIR_ENV} to a writable node-local folder") from e


def try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def acquire(timeout_s: float = 3600.0, poll_s: float = 0.2, gpus: list[str] | None = None) -> Slot:
    """Take the first free GPU slot, waiting up to timeout_s for one."""
    gpus = visible_gpus() if gpus is None else gpus
    if not gpus:
        raise RuntimeError("no GPU is visible to this job (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        folder.chmod(0o1777)  # shared by all users' jobs on the node, like /tmp
    except PermissionError:
        pass
    deadline = time.monotonic() + timeout_s
    while True:
        for index, uuid in enumerate(gpus):
            fd = try_lock(folder / f"{uuid}.lock")
            if fd is not None:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return Slot(index=index, uuid=uuid, fd=fd)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot among {len(gpus)} in {folder} after {timeout_s:.0f} s")
        time.sleep(poll_s)


@contextlib.contextmanager
def held(on_gpu: bool, log):
    """A job's GPU slot for the duration of the block (None where none is needed: the interpreter without
    fake GPUs), with the lines a job's log records about it (tests and benchmarks read them)."""
    if not (on_gpu or os.environ.get(FAKE_GPUS_ENV)):
        yield None
        return
    started = time.time()
    slot = acquire()
    log(f"slot {slot.uuid} (index {slot.index}) on {socket.gethostname()} pid {os.getpid()} "
        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')} "
        f"acquired_at {time.time():.3f} waited {time.time() - started:.2f}s")
    try:
        yield slot
    finally:
        log(f"slot {slot.uuid} released_at {time.time():.3f}")
        slot.release()


def pin_to(slot: Slot) -> int:
    """Make this process, and the processes it starts (compile pools), see only the slot's GPU.

    Call before CUDA is initialised. Returns torch's index of the slot's GPU in this process.
    """
    torch = sys.modules.get("torch")
    if slot.uuid.startswith("GPU-") and not (torch is not None and torch.cuda.is_initialized()):
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.uuid
        return 0
    return slot.index
