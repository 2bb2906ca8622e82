"""Checks of the machine and the profile that stop a run before any job, with a message saying what to do."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from w8a8_tuner.plan.sweep import ConfigError

# The placeholder profiles/slurm ships in the lines a user must edit.
SLURM_PLACEHOLDER = "EDIT_ME"


class UnwritableFolder(OSError):
    pass


def check_writable(folders, probe: bool = True) -> None:
    """Stop before any job if an output folder cannot be written.

    With probe=False nothing is created (for dry runs): only a path component that is
    a file, or an existing folder without write permission, is reported. With probe=True
    each folder is created and a probe file written and removed.
    """
    for folder in folders:
        folder = Path(folder)
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        existing = next((p for p in (folder, *folder.parents) if p.is_dir()), Path("."))
        try:
            if blocker is not None:
                raise NotADirectoryError(20, "Not a directory")
            if not probe:
                if not os.access(existing, os.W_OK | os.X_OK):
                    raise PermissionError(13, "Permission denied")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            test = folder / f".write-test.{socket.gethostname()}.{os.getpid()}"
            test.write_bytes(b"")
            test.unlink()
        except OSError as e:
            where = f" ({blocker} is a file, not a folder)" if blocker else ""
            raise UnwritableFolder(f"cannot write to {folder}/: {e.strerror or e}{where}; results and logs go "
                                   "there: make it writable, or run in another folder (snakemake -d)") from e


class NoFileLocks(OSError):
    pass


def check_file_locks(folders) -> None:
    """Stop before any job where a folder is on a file system whose file locks do not work (some NFS mounts, Lustre
    without -o flock): compile and tune jobs share compiled kernels through fcntl locks in the results folder, and a
    run holds one in .snakemake/. Each folder is created and written first (check_writable), then a lock is taken
    and released on a probe file."""
    check_writable(folders)
    for folder in map(Path, folders):
        probe = folder / f".lock-test.{socket.gethostname()}.{os.getpid()}"
        fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as e:
            raise NoFileLocks(e.errno, f"{folder}/ is on a file system without working file locks (flock: "
                                       f"{e.strerror or e}): compile and tune jobs share compiled kernels through "
                                       "locks there; put the working directory on a file system with locks (a local "
                                       "disk, NFS with lock support, Lustre mounted with -o flock), or run in "
                                       "another folder (snakemake -d)") from e
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)


def _resource_items(resources):
    items = resources.items() if hasattr(resources, "items") else []
    # a Snakemake Resource keeps the text it was given as `raw` (expressions are not evaluated here)
    return [(name, str(getattr(value, "raw", value))) for name, value in items]


def check_slurm_profile(default_resources, overwrite_resources=None) -> None:
    """A profile whose resources still hold the shipped placeholder would submit jobs that fail: every placeholder
    left, in default-resources and in set-resources, is named at once."""
    found = [f"default-resources: {name}={text}" for name, text in _resource_items(default_resources or {})
             if SLURM_PLACEHOLDER in text]
    for rule, resources in (overwrite_resources or {}).items():
        found += [f"set-resources: {rule}: {name}={text}" for name, text in _resource_items(resources)
                  if SLURM_PLACEHOLDER in text]
    if found:
        raise ConfigError(f"the profile still holds {len(found)} placeholder(s) of profiles/slurm/config.yaml: "
                          f"{'; '.join(found)}; edit the lines marked EDIT there (your partitions and account) "
                          "before running")
