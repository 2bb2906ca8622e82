"""results/<device>/configs/ holds exactly the JSON files the current settings make.

A file there that they do not make (another engine's spelling after `engine` changed, a shape no longer
configured, another operand type or block shape) is moved into results/<device>/outdated_configs/<time>/,
with a record of why, so that copying configs/*.json into an engine never installs it. Nothing is lost:
the TSVs it was made from stay, so setting the config back makes it again without tuning.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from w8a8_tuner.results.files import sha256_of, write_atomic
from w8a8_tuner.results.naming import parse_config_file_name

# The names the aggregate step writes (results.naming): only such files are ever moved.
CONFIG_FILE_GLOB = "N=*,K=*,device_name=*.json"


def outdated_files(folder, current: Iterable) -> list[Path]:
    """The engine config files in `folder` whose names are not among `current` (paths or names)."""
    names = {Path(p).name for p in current}
    return sorted(p for p in Path(folder).glob(CONFIG_FILE_GLOB) if p.name not in names)


def why_outdated(name: str, shapes: Iterable[tuple[int, int]], settings: str) -> str:
    """Why the current settings do not make a file of this name; `settings` names the ones that spell it."""
    parsed = parse_config_file_name(name)
    if parsed and (parsed.N, parsed.K) in set(shapes):
        return f"not made by the current settings (not the name {settings} gives this shape)"
    return "not made by the current settings (a shape they do not tune)"


def set_aside(reasons: dict[Path, str], destination) -> list[str]:
    """Move each file of `reasons` ({path: why}) into `destination`, with moved.tsv saying what each was and
    why it was moved; returns one line per file moved."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    rows, lines = ["file\tsha256\twhy"], []
    for path, why in reasons.items():
        rows.append(f"{path.name}\t{sha256_of(path)}\t{why}")
        os.replace(path, destination / path.name)
        lines.append(f"moved {path} to {destination}/: {why}")
    write_atomic(destination / "moved.tsv", "\n".join(rows) + "\n")
    return lines
