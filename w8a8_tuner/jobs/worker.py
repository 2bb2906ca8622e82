"""Persistent tuning worker: one process per GPU slot that tunes the points its jobs hand it.

A leaf job holds its GPU slot's lock (w8a8_tuner.jobs.slots), so at most one job talks to a
slot's worker at a time. The job connects to the worker over a Unix socket in the abstract
namespace (nothing on disk to clean up), starting the worker if none answers. The address is
derived from the slot, the backend, the Triton cache, the lock folder and the code version:
after an edit or a `git pull`, jobs start a fresh worker instead of being served by old code
(the old one exits when idle). The worker keeps torch, the CUDA context and every loaded
kernel between jobs and exits after `idle_s` without a request.

Protocol, one JSON line each way: request -> {"accepted": pid} -> {"ok": true, "summary": ...} or
{"ok": false, "error": "..."}. A job killed mid-request is noticed at the next phase boundary
and its request abandoned. A worker that dies before accepting a request (killed, or exiting
after a fatal error while the job waited in its queue) is replaced and the request sent again;
one that dies during a request fails that job alone, with a message.
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

from w8a8_tuner.jobs.slots import Slot, lock_dir

PACKAGE_ROOTS = [Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2] / "kernels"]


class WorkerError(RuntimeError):
    pass


class ClientGone(Exception):
    pass


def code_version() -> str:
    """Hash of the tuner's and the kernel's source: a worker serves only jobs of the code it runs."""
    h = hashlib.sha1()
    for root in PACKAGE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def address(slot: str, backend: str, triton_cache: str) -> str:
    ident = f"{os.getuid()}|{lock_dir().resolve()}|{slot}|{backend}|{Path(triton_cache).resolve()}|{code_version()}"
    return "w8a8-tuner-" + hashlib.sha1(ident.encode()).hexdigest()[:20]


def _send(conn: socket.socket, obj: dict) -> None:
    conn.sendall((json.dumps(obj) + "\n").encode())


def _recv_line(conn: socket.socket) -> dict | None:
    """One JSON line, or None if the other side went away first."""
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
    except OSError:  # reset by a peer that died
        return None
    return json.loads(data)


# --- job side ---------------------------------------------------------------------------

def _start(addr: str, slot: Slot, backend: str, triton_cache: str, idle_s: float, arch: int | None = None,
           compile_workers: int = 0) -> subprocess.Popen:
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    prewarm = ["--arch", str(arch), "--compile-workers", str(compile_workers)] if arch and compile_workers else []
    with open(folder / f"{addr}.log", "a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "w8a8_tuner.jobs.worker", "--address", addr, "--slot", slot.uuid,
             "--slot-index", str(slot.index), "--backend", backend,
             "--triton-cache", str(Path(triton_cache).resolve()), "--idle", str(idle_s), *prewarm],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # outlives the job that started it


def prestart(slots: list[Slot], backend: str, triton_cache: str, idle_s: float, arch: int | None,
             compile_workers: int) -> list[int]:
    """Start the worker of each slot that has none, without waiting for it: when a run starts, so that torch,
    CUDA and the compile pool are ready by the time the first job hands over its point. Returns their pids."""
    started = []
    for slot in slots:
        addr = address(slot.uuid, backend, triton_cache)
        sock = _connect(addr, None, 0)
        if sock is not None:
            sock.close()  # one is serving (a closed connection without a request is ignored)
            continue
        started.append(_start(addr, slot, backend, triton_cache, idle_s, arch, compile_workers).pid)
    return started


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


def prewarm_of(request: dict) -> tuple[int | None, int]:
    """(arch, compile workers) of the compile pool a new worker starts before its first request arrives."""
    from w8a8_tuner.search.compile import target_arch

    s = request["settings"]
    arch = target_arch(s["device_name"]) if s["backend"] == "cuda" else None
    return arch, int(request["compile_workers"])


def submit(request: dict, slot: Slot | None, backend: str, triton_cache: str, idle_s: float, log) -> str:
    """Have the worker of `slot` (None: the CPU) tune `request`; its one-line summary, or WorkerError."""
    slot = slot or Slot(index=0, uuid="cpu", fd=-1)
    addr = address(slot.uuid, backend, triton_cache)
    worker_log = lock_dir() / f"{addr}.log"
    for _ in range(3):
        sock = _connect(addr, None, 0)
        if sock is None:
            proc = _start(addr, slot, backend, triton_cache, idle_s, *prewarm_of(request))
            log(f"started worker pid {proc.pid} for slot {slot.uuid} (log {worker_log})")
            sock = _connect(addr, proc, 300) or _connect(addr, None, 0)  # another may have won the address
            if sock is None:
                tail = worker_log.read_text()[-2000:] if worker_log.exists() else ""
                raise WorkerError(f"tuning worker for slot {slot.uuid} did not start; its log ends:\n{tail}")
        with sock:
            try:
                _send(sock, request)
            except OSError:
                continue  # it went away before reading: start another
            accepted = _recv_line(sock)
            if accepted is None:
                continue  # it exited (idle, killed, or after a fatal error) before taking the point
            log(f"worker pid {accepted['accepted']} took the point")
            reply = _recv_line(sock)
        if reply is None:
            raise WorkerError(f"tuning worker pid {accepted['accepted']} for slot {slot.uuid} exited during the "
                              f"request (killed or crashed; see {worker_log}); run the same command again")
        if not reply["ok"]:
            raise WorkerError(reply["error"])
        return reply.get("summary", "")
    raise WorkerError(f"no tuning worker for slot {slot.uuid} accepted the point after 3 attempts (see {worker_log})")


# --- worker side ------------------------------------------------------------------------

def _client_alive(conn: socket.socket) -> bool:
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return True
    try:
        return conn.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def serve(addr: str, slot: Slot, backend: str, triton_cache: str, idle_s: float, arch: int | None = None,
          compile_workers: int = 0) -> None:
    from w8a8_tuner.jobs.point import DeviceMismatch, run_point
    from w8a8_tuner.jobs.slots import pin_to
    from w8a8_tuner.search.backend import prepare

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind("\0" + addr)
    except OSError:
        return  # another worker already serves this slot
    listener.listen(16)
    listener.settimeout(idle_s)
    device_index = pin_to(slot) if backend == "cuda" else None  # before CUDA starts
    runner = prepare(backend, triton_cache)  # before triton is imported
    # torch, triton, CUDA and the compile pool once, for every request; errors that fail one point only
    point_errors = runner.start(device_index, arch, compile_workers)

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
                def log(message: str, log_file=log_file, conn=conn) -> None:
                    print(message, file=log_file)
                    if not _client_alive(conn):
                        raise ClientGone

                try:
                    reply = {"ok": True, "summary": run_point(request, device_index, log)}
                except ClientGone:
                    print(f"job for {request['tsv']} went away; request abandoned", flush=True)
                    continue
                except (DeviceMismatch, *point_errors) as e:
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                except Exception as e:  # noqa: BLE001 - reported, then a fresh process serves the next job
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                    fatal = True
                    import traceback

                    traceback.print_exc()
            runner.after_point()  # leave the GPU's memory to others between jobs
            try:
                _send(conn, reply)
            except OSError:
                pass
            if fatal:
                listener.close()  # jobs queued behind this one reconnect to a fresh worker
                return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", required=True)
    ap.add_argument("--slot", required=True, help="the slot's GPU UUID")
    ap.add_argument("--slot-index", type=int, default=0, help="torch's index of that GPU in the job")
    ap.add_argument("--backend", required=True, choices=["cuda", "interpret"])
    ap.add_argument("--triton-cache", required=True)
    ap.add_argument("--idle", type=float, required=True, help="seconds without a request before it exits")
    ap.add_argument("--arch", type=int, default=None, help="with --compile-workers: start the compile pool for it")
    ap.add_argument("--compile-workers", type=int, default=0, help="processes of the compile pool to start")
    args = ap.parse_args()
    serve(args.address, Slot(index=args.slot_index, uuid=args.slot, fd=-1), args.backend, args.triton_cache, args.idle,
          args.arch, args.compile_workers)


if __name__ == "__main__":
    main()
