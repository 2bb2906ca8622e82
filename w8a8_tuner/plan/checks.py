"""Checks of the machine and the profile that stop a run before any job, with a message saying what to do."""

from __future__ import annotations

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


def check_slurm_profile(default_resources) -> None:
    """A profile whose default resources still hold the shipped placeholder would submit jobs that fail."""
    if not default_resources:
        return
    items = default_resources.items() if hasattr(default_resources, "items") else []
    for name, value in items:
        # a Snakemake Resource keeps the text it was given as `raw` (expressions are not evaluated here)
        text = str(getattr(value, "raw", value))
        if SLURM_PLACEHOLDER in text:
            raise ConfigError(f"default-resources: {name}={text} is the placeholder of profiles/slurm/config.yaml; "
                              f"edit the lines marked EDIT there (your partition and account) before running")
