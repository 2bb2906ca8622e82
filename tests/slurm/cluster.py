"""A real single-node SLURM cluster for tests: munged, slurmctld and slurmd on this machine.

Needs root and the Debian packages `slurm-wlm` and `munge` (.ci/run installs them). The
node declares two GPUs as generic resources backed by two character devices, so SLURM
allocates them and sets CUDA_VISIBLE_DEVICES in each job exactly as on a GPU cluster;
no CUDA is involved.

Everything the daemons write (state, spool, logs, pid files, munge key and socket) lives
in a temporary folder. Only /etc/slurm/slurm.conf and /etc/slurm/gres.conf are written
outside it: `srun`, which the SLURM executor plugin calls inside every job with SLURM_*
variables (SLURM_CONF included) stripped, finds its configuration nowhere else. Those two
files carry a marker line; a slurm.conf without it (a real cluster's) is never touched.
The daemons are children of this process, run in the foreground and are stopped by pid.

By hand (as root):  python tests/slurm/cluster.py    # starts the cluster; Ctrl-C or kill stops it
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MARKER = "# written by w8a8-block-fp8-tuner tests/slurm/cluster.py; removed when the test ends"
ETC = Path("/etc/slurm")
PARTITION = "gpu"
GPUS = 2
# One test cluster per machine at a time (it owns /etc/slurm and the SLURM ports). The
# lock file lists the daemons' pids, so that a run killed before its teardown (kill -9)
# has them stopped by the next one.
MACHINE_LOCK = Path("/tmp/w8a8-tuner-slurm-test.lock")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo")


class ClusterError(RuntimeError):
    pass


def missing_requirements() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root (the SLURM daemons run as root)"
    absent = [d for d in DAEMONS if shutil.which(d) is None]
    if absent:
        return f"SLURM/munge not installed (missing {', '.join(absent)}); apt-get install -y slurm-wlm munge"
    return None


def _run(*cmd: str, env=None, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


class SlurmCluster:
    def __init__(self, root: Path, lock_timeout_s: float = 900):
        self.root = Path(root)
        self.hostname = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock_timeout_s = lock_timeout_s
        self._lock_fd = None
        self._etc_written: list[Path] = []

    # --- configuration -------------------------------------------------------------------
    def node_line(self) -> str:
        """This machine as slurmd sees it (CPUs, sockets, memory), so the node is not drained."""
        out = _run("slurmd", "-C").stdout
        line = next((s for s in out.splitlines() if s.startswith("NodeName=")), None)
        if line is None:
            raise ClusterError(f"slurmd -C printed no NodeName line: {out!r}")
        fields = dict(kv.split("=", 1) for kv in line.split())
        fields["NodeName"] = self.hostname
        fields["NodeAddr"] = "127.0.0.1"
        # A little below what slurmd measures: a node reporting less memory than declared is drained.
        fields["RealMemory"] = str(int(int(fields.get("RealMemory", "4096")) * 0.9))
        fields["Gres"] = f"gpu:{GPUS}"
        fields["State"] = "UNKNOWN"
        return " ".join(f"{k}={v}" for k, v in fields.items())

    def write_config(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log", "dev", "munge"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o755)
        # Two fake GPUs: character devices (same numbers as /dev/null), as gres.conf wants device files.
        for i in range(GPUS):
            dev = r / "dev" / f"gpu{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))
        key = r / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        self.slurm_conf = "\n".join([
            MARKER,
            "ClusterName=w8a8test",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r}/munge/munge.sock",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            # Cores are consumed by jobs, memory is only checked against the node's size.
            "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "GresTypes=gpu",
            # Finished jobs stay visible to squeue, which is the executor's status command here.
            "MinJobAge=3600",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            self.node_line(),
            f"PartitionName={PARTITION} Nodes={self.hostname} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])
        self.gres_conf = f"{MARKER}\nName=gpu File={r}/dev/gpu[0-{GPUS - 1}]\n"

    def _install_etc(self) -> None:
        ETC.mkdir(parents=True, exist_ok=True)
        for name, text in (("slurm.conf", self.slurm_conf), ("gres.conf", self.gres_conf)):
            path = ETC / name
            if path.exists() and MARKER not in path.read_text(errors="replace"):
                raise ClusterError(f"{path} exists and is not a test file: refusing to replace a real SLURM setup")
            path.write_text(text)
            self._etc_written.append(path)

    # --- life cycle ----------------------------------------------------------------------
    def _take_machine_lock(self) -> None:
        fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
                self._stop_leftovers()
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise ClusterError(f"another test SLURM cluster holds {MACHINE_LOCK} for over "
                                       f"{self.lock_timeout_s:.0f} s") from None
                time.sleep(1)

    def _record_pids(self) -> None:
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, "".join(f"{n} {p.pid}\n" for n, p in self.procs.items()).encode(), 0)

    def _stop_leftovers(self) -> None:
        """Daemons an earlier test run started and could not stop (it was killed): by pid and name."""
        for line in os.pread(self._lock_fd, 4096, 0).decode(errors="replace").splitlines():
            name, _, pid = line.partition(" ")
            try:
                argv0 = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")[0].decode()
            except (ValueError, OSError):
                continue
            if Path(argv0).name != name or name not in ("munged", "slurmctld", "slurmd"):
                continue  # that pid is something else now
            os.kill(int(pid), signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
            else:
                os.kill(int(pid), signal.SIGKILL)

    def _spawn(self, name: str, *cmd: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        log.close()
        self._record_pids()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.returncode}:\n{self.daemon_logs()}")

    def start(self, timeout_s: float = 90) -> "SlurmCluster":
        why = missing_requirements()
        if why:
            raise ClusterError(why)
        self._take_machine_lock()
        try:
            self.write_config()
            self._install_etc()
            m = self.root / "munge"
            self._spawn("munged", "munged", "--foreground", "--force", f"--key-file={m}/munge.key",
                        f"--socket={m}/munge.sock", f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
                        f"--seed-file={m}/munged.seed")
            self._wait(lambda: (m / "munge.sock").exists(), timeout_s, "munged socket")
            # -D: foreground; -c: start from a clean state (no jobs from an earlier run)
            self._spawn("slurmctld", "slurmctld", "-D", "-c")
            self._wait(lambda: _run("sinfo", "-h").returncode == 0, timeout_s, "slurmctld to answer")
            self._spawn("slurmd", "slurmd", "-D")
            self._wait(self._node_idle, timeout_s, f"node {self.hostname} to become idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        out = _run("sinfo", "-h", "-N", "-o", "%N %t").stdout.split()
        return len(out) == 2 and out[1] == "idle"

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what}:\n{self.daemon_logs()}")
            time.sleep(0.5)

    def daemon_logs(self, tail: int = 40) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.is_file():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the daemons this object started, by pid (slurmd first), and remove the /etc files."""
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for path in self._etc_written:
            try:
                if MARKER in path.read_text(errors="replace"):
                    path.unlink()
            except FileNotFoundError:
                pass
        self._etc_written.clear()
        if self._lock_fd is not None:
            self._record_pids()
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def job_ids_in(text: str) -> list[str]:
    """SLURM job ids the executor reported ('... submitted with SLURM jobid 12 (log: ...)')."""
    return re.findall(r"submitted with SLURM jobid (\d+)", text)


def _stop_on_signal(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Ctrl-C or kill <pid> stops the daemons (SIGINT may be ignored in a background job).
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    with tempfile.TemporaryDirectory(prefix="w8a8-slurm-") as d, SlurmCluster(Path(d)) as cluster:
        print(f"SLURM is up: partition {PARTITION!r}, node {cluster.hostname} with gpu:{GPUS}; "
              f"Ctrl-C or kill {os.getpid()} stops it.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
