"""Writing result files so that a reader never sees half a file, and errors that name the file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class WriteError(OSError):
    """A result file could not be written; the message names it and why."""


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary name in the same folder, then rename: never a half file under `path`.

    A failure (full disk, no permission) leaves nothing behind and raises WriteError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()


def sha256_of(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
