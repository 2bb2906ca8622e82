"""Persistent tuning worker: one process per GPU slot that tunes the points its jobs hand it.

A leaf job holds its GPU slot's lock (kernels.slots), so at most one job talks to a
slot's worker at a time. The job connects to the worker over a Unix socket in the
abstract namespace (nothing on disk to clean up; the address is derived from the
slot, backend, Triton cache and lock folder), starting the worker if none answers.
The worker keeps torch, the CUDA context and every loaded kernel between jobs and
exits after `idle_s` without a request.

Protocol, one JSON line each way: request -> {"accepted": pid} -> {"ok": true} or
{"ok": false, "error": "..."}. A job killed mid-request is noticed at the next
phase boundary and its request abandoned; a worker killed mid-request makes the
job fail with a message, and the next job starts a new worker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class WorkerError(RuntimeError):
    pass


class ClientGone(Exception):
    pass


def address(slot: str, backend: str, triton_cache: str) -> str:
    from kernels.slots import lock_dir

    ident = f"{os.getuid()}|{lock_dir().resolve()}|{slot}|{backend}|{Path(triton_cache).resolve()}"
    return "w8a8-tuner-" + hashlib.sha1(ident.encode()).hexdigest()[:20]


def _send(conn: socket.socket, obj: dict) -> None:
    conn.sendall((json.dumps(obj) + "\n").encode())


def _recv_line(conn: socket.socket) -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


# --- job side ---------------------------------------------------------------------------

def _start(addr: str, slot, backend: str, triton_cache: str, idle_s: float) -> subprocess.Popen:
    from kernels.slots import lock_dir

    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(folder / f"{addr}.log", "a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kernels.worker", "--address", addr, "--slot", slot.uuid, "--slot-index", str(slot.index),
             "--backend", backend,
             "--triton-cache", str(Path(triton_cache).resolve()), "--idle", str(idle_s)],  # its cwd differs
            cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # outlives the job that started it


def _connect(addr: str, proc: subprocess.Popen | None, timeout_s: float) -> socket.socket | None:
    deadline = time.monotonic() + timeout_s
    while True:  # at least one attempt, even with timeout_s=0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect("\0" + addr)
            return sock
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            if proc is None or proc.poll() is not None or time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def submit(request: dict, slot, backend: str, triton_cache: str, idle_s: float, log) -> None:
    """Have the worker of `slot` (a kernels.slots.Slot, or None for the CPU) tune `request`;
    raise WorkerError with the reason if it fails."""
    from kernels.slots import Slot, lock_dir

    slot = slot or Slot(index=0, uuid="cpu", fd=-1)
    addr = address(slot.uuid, backend, triton_cache)
    worker_log = lock_dir() / f"{addr}.log"
    for attempt in range(3):
        sock = _connect(addr, None, 0)
        if sock is None:
            proc = _start(addr, slot, backend, triton_cache, idle_s)
            log(f"started worker pid {proc.pid} for slot {slot.uuid} (log {worker_log})")
            sock = _connect(addr, proc, 300)
            if sock is None:
                # another worker may have won the address; try once more before giving up
                sock = _connect(addr, None, 0)
            if sock is None:
                tail = worker_log.read_text()[-2000:] if worker_log.exists() else ""
                raise WorkerError(f"tuning worker for slot {slot.uuid} did not start; its log ends:\n{tail}")
        with sock:
            _send(sock, request)
            accepted = _recv_line(sock)
            if accepted is None:
                continue  # the worker was exiting (idle) as we connected: start another
            log(f"worker pid {accepted['accepted']} took the point")
            reply = _recv_line(sock)
        if reply is None:
            raise WorkerError(f"tuning worker pid {accepted['accepted']} for slot {slot.uuid} exited during the "
                              f"request (killed or crashed; see {worker_log}); run the same command again")
        if not reply["ok"]:
            raise WorkerError(reply["error"])
        return
    raise WorkerError(f"no tuning worker for slot {slot.uuid} accepted the point after 3 attempts")


# --- worker side ------------------------------------------------------------------------

def _client_alive(conn: socket.socket) -> bool:
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return True
    try:
        return conn.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def serve(addr: str, slot, backend: str, triton_cache: str, idle_s: float) -> None:
    from kernels.jobs import DeviceMismatch, prepare_environment, run_point
    from kernels.slots import pin_to

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind("\0" + addr)
    except OSError:
        return  # another worker already serves this slot
    listener.listen(16)
    listener.settimeout(idle_s)
    device_index = pin_to(slot) if backend == "cuda" else None  # before CUDA starts
    prepare_environment(backend, triton_cache)
    from kernels.tuner import NoValidConfig  # imports torch and triton once, for every request

    print(f"worker pid {os.getpid()} serving slot {slot.uuid} ({backend}) at @{addr}", flush=True)
    while True:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            print(f"idle for {idle_s:.0f} s, exiting", flush=True)
            return
        with conn:
            request = _recv_line(conn)
            if request is None:
                continue
            _send(conn, {"accepted": os.getpid()})
            fatal = False
            with open(request["log"], "a", buffering=1) as log_file:
                def log(message: str) -> None:
                    print(message, file=log_file)
                    if not _client_alive(conn):
                        raise ClientGone

                try:
                    run_point(request, device_index, log)
                    reply = {"ok": True}
                except ClientGone:
                    print(f"job for {request['tsv']} went away; request abandoned", flush=True)
                    continue
                except (NoValidConfig, DeviceMismatch) as e:
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                except Exception as e:  # noqa: BLE001 - reported, then a fresh process serves the next job
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                    fatal = True
                    import traceback

                    traceback.print_exc()
            if backend == "cuda":
                import torch

                torch.cuda.empty_cache()  # leave the GPU's memory to others between jobs
            try:
                _send(conn, reply)
            except OSError:
                pass
            if fatal:
                return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", required=True)
    ap.add_argument("--slot", required=True, help="the slot's GPU UUID")
    ap.add_argument("--slot-index", type=int, default=0, help="torch's index of that GPU in the job")
    ap.add_argument("--backend", required=True, choices=["cuda", "interpret"])
    ap.add_argument("--triton-cache", required=True)
    ap.add_argument("--idle", type=float, default=60.0)
    args = ap.parse_args()
    from kernels.slots import Slot

    serve(args.address, Slot(index=args.slot_index, uuid=args.slot, fd=-1), args.backend, args.triton_cache,
          args.idle)


if __name__ == "__main__":
    main()
