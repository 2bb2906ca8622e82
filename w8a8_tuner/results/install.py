"""Installing the tuned JSON files where each engine reads them (`snakemake install`).

vLLM and SGLang read a W8A8 block config only from the `configs/` folder beside the module whose
get_w8a8_block_{fp8,int8}_configs loads it (`os.path.dirname(os.path.realpath(__file__))/configs/<name>`); neither
has a setting for another folder. That module is found without importing the engine (no torch, no GPU): the
package's folder from importlib.util.find_spec (in this Python or in the engine's, `install.python`), then the
module of its kernel (`loaders`), newest layout first. Each engine gets the files named as it names them
(w8a8_tuner.results.naming), copied as they are: the engines' files may differ in content.

A file already in the engine's folder that this step did not put there (the engine ships it, or it was copied by
hand) is never overwritten silently: `install.existing` says what to do (refuse, the default; backup: keep it as
<name>.orig and replace it; merge: keep it as <name>.orig and install it merged with the tuned file, the tuned
batch sizes winning, as SGLang's tuning script merges). What this step wrote is recorded in the folder
(RECORD_NAME), so installing a re-tuned result replaces it without asking.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kernels.engines import places
from w8a8_tuner.results.files import sha256_of, write_atomic
from w8a8_tuner.results.naming import DTYPE_TAGS, ENGINE_LABELS, INPUT_LABELS, config_file_name, engines_of

EXISTING = ("refuse", "backup", "merge")
RECORD_NAME = ".w8a8_tuner_installed.json"
BACKUP_SUFFIX = ".orig"
LOADER_FUNCTIONS = {"fp8": "get_w8a8_block_fp8_configs", "int8": "get_w8a8_block_int8_configs"}


def loaders(engine: str, input_type: str) -> list[str]:
    """The modules that load the files, relative to the engine's package, newest layout first: the modules of
    the engine's kernel (kernels.engines; each engine loads its configs in the module of its kernel)."""
    modules = dict.fromkeys(place.split(":")[0] for place in places(engine, input_type))
    return ["/".join(module.split(".")[1:]) + ".py" for module in modules]


# Run by `install.python` (the engine's own Python): where its package is, without importing it.
FIND_SPEC = ("import importlib.util, json, sys; s = importlib.util.find_spec(sys.argv[1]); "
             "print(json.dumps(list(s.submodule_search_locations or []) if s else []))")


class InstallError(ValueError):
    """Nothing can be installed as asked; the message names the engine, the folder or the files."""


@dataclass(frozen=True)
class Copy:
    """One tuned file into one engine folder, and what that does to the file there."""

    engine: str
    shape: tuple[int, int]
    source: Path
    dest: Path
    action: str  # new | current | update | backup | merge (see `describe`)
    backup: Path | None = None  # the engine's own file, saved before it is replaced or merged
    merged_from: Path | None = None  # merge: the file whose batch sizes the tuned ones join


def package_folder(package: str, python: str | None = None) -> Path | None:
    """The folder of an installed package, found with importlib.util.find_spec (the package is not imported), in
    this Python or in `python`."""
    if python is None:
        import importlib.util

        spec = importlib.util.find_spec(package)
        places = list(spec.submodule_search_locations or []) if spec else []
    else:
        try:
            done = subprocess.run([python, "-c", FIND_SPEC, package], capture_output=True, text=True, timeout=120)
        except OSError as e:
            raise InstallError(f"install.python: {python}: cannot run it: {e.strerror or e}") from e
        if done.returncode != 0:
            raise InstallError(f"install.python: {python} failed to look for {package}: "
                               f"{(done.stderr.strip().splitlines() or ['no message'])[-1]}")
        places = json.loads(done.stdout.strip().splitlines()[-1])
    return Path(places[0]) if places else None


def config_folders(engine: str, input_type: str, python: str | None = None) -> list[Path]:
    """The configs folders `engine` reads the files of `input_type` from: beside each loader module that defines the
    loader function (text read, nothing imported), or, where no module does (a version that moved it), beside those
    whose configs folder already holds files of this kind (the engine's own)."""
    label, where = ENGINE_LABELS[engine], python or "this Python"
    root = package_folder(engine, python)
    if root is None:
        raise InstallError(f"engine: {engine}: {label} is not installed for {where} (importlib.util.find_spec"
                           f"({engine!r}) found nothing); install it there, or set install.python to the Python "
                           f"that runs {label}")
    modules = [root / rel for rel in loaders(engine, input_type)]
    function = LOADER_FUNCTIONS[input_type]
    defines = [p for p in modules if p.is_file() and re.search(rf"^\s*def {function}\b", p.read_text(errors="replace"),
                                                                 re.M)]
    folders = [p.parent / "configs" for p in defines]
    if not folders:
        folders = [p.parent / "configs" for p in modules
                   if (p.parent / "configs").is_dir() and any(f",dtype={DTYPE_TAGS[input_type]}," in f.name
                                                               for f in (p.parent / "configs").iterdir())]
    if not folders:
        tried = ", ".join(str(p) for p in modules)
        raise InstallError(f"engine: {engine}: cannot tell where {label} at {root} reads W8A8 block "
                           f"{INPUT_LABELS[input_type]} configs: none of {tried} defines {function}, and no configs "
                           f"folder beside them holds such files; copy the files to the folder its log names "
                           f"(\"Config file not found at ...\")")
    return folders


def tuned_files(shapes, device_name: str, block_shape, *, input_type: str, engine: str, configs_dir
                ) -> list[tuple[str, tuple[int, int], Path]]:
    """(engine, (N, K), tuned file) for every engine the `engine` setting names: each engine's own file."""
    return [(e, (n, k), Path(configs_dir) / config_file_name(n, k, device_name, block_shape, input_type=input_type,
                                                              engine=e))
            for e in engines_of(engine) for n, k in shapes]


def read_record(folder: Path) -> dict:
    try:
        record = json.loads((folder / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _free_backup(dest: Path) -> Path:
    backup = dest.with_name(dest.name + BACKUP_SUFFIX)
    n = 1
    while backup.exists():  # an older backup is the engine's earlier file: never overwritten
        backup, n = dest.with_name(f"{dest.name}{BACKUP_SUFFIX}.{n}"), n + 1
    return backup


def plan_install(files, folders: dict[str, list[Path]], existing: str) -> list[Copy]:
    """What installing `files` (tuned_files) into each engine's `folders` would do; a file there that this step did
    not write is refused unless `existing` says backup or merge. Every refusal is listed in one error, and nothing
    is written."""
    if existing not in EXISTING:
        raise InstallError(f"install.existing: {existing!r} is not one of {list(EXISTING)}")
    unwritable = sorted({str(f) for fs in folders.values() for f in fs if not _writable(f)})
    if unwritable:
        raise InstallError(f"install: cannot write to {', '.join(unwritable)} (the engine's configs folder): run the "
                           "install as the user who owns the engine's installation, or install it where you can write")
    copies, refused = [], []
    for engine, shape, source in files:
        for folder in folders[engine]:
            dest = folder / source.name
            record = read_record(folder).get(dest.name) or {}
            if not dest.exists():
                copies.append(Copy(engine, shape, source, dest, "new"))
                continue
            now = sha256_of(dest)
            if source.is_file() and now == sha256_of(source):
                copies.append(Copy(engine, shape, source, dest, "current"))
            elif record.get("sha256") == now:  # what this step wrote (and nobody changed since)
                original = folder / record["original"] if record.get("original") else None
                merged = record.get("merged") and original is not None and original.is_file()
                copies.append(Copy(engine, shape, source, dest, "merge" if merged else "update", original,
                                   original if merged else None))
            elif existing == "refuse":
                refused.append(dest)
            else:
                copies.append(Copy(engine, shape, source, dest, existing, _free_backup(dest),
                                   dest if existing == "merge" else None))
    for copy in copies:  # a file that cannot be merged stops the install before anything is written
        if copy.merged_from is not None and copy.source.is_file():
            merged_text(copy.merged_from, copy.source)
    if refused:
        raise InstallError(
            f"install: {len(refused)} file(s) in the engine's folder were not put there by this workflow (the engine "
            f"ships them, or they were copied by hand) and would be overwritten: {', '.join(map(str, refused))}; "
            "set install.existing: backup (keep each as <name>.orig, install the tuned file) or merge (keep it as "
            "<name>.orig, install it with the tuned batch sizes added), or move them away")
    return copies


def _writable(folder: Path) -> bool:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def merged_text(original: Path, tuned: Path) -> str:
    """The original file's batch sizes plus the tuned file's, the tuned ones winning where both have one, sorted
    by batch size (SGLang's tuning script merges so); entries are copied as they are."""
    entries = {}
    for path in (original, tuned):
        try:
            data = json.loads(path.read_text())
            entries.update({int(m): entry for m, entry in data.items()})
        except (OSError, ValueError, AttributeError) as e:
            raise InstallError(f"install.existing: merge: {path} is not a JSON object of batch sizes ({e}); "
                               "nothing was installed for it") from e
    return json.dumps({str(m): entries[m] for m in sorted(entries)}, indent=4) + "\n"


def install(copies: list[Copy]) -> None:
    """Do what plan_install planned: every file written atomically, each engine's own file saved first, and the
    record of what this step wrote updated per folder."""
    for copy in copies:
        if copy.action == "current":
            _record(copy, sha256_of(copy.dest))
            continue
        if not copy.source.is_file():
            raise InstallError(f"install: {copy.source} is missing: run the sweep first (same config)")
        text = (merged_text(copy.merged_from, copy.source) if copy.merged_from is not None
                else copy.source.read_text())
        copy.dest.parent.mkdir(parents=True, exist_ok=True)
        if copy.action in ("backup", "merge") and copy.backup is not None and not copy.backup.exists():
            shutil.copy2(copy.dest, copy.backup)
        write_atomic(copy.dest, text)
        _record(copy, sha256_of(copy.dest))


def _record(copy: Copy, sha256: str) -> None:
    folder = copy.dest.parent
    record = read_record(folder)
    earlier = record.get(copy.dest.name) or {}
    original = copy.backup.name if copy.backup is not None else earlier.get("original")
    record[copy.dest.name] = {"sha256": sha256, "source": str(copy.source.resolve()),
                              "original": original, "merged": copy.merged_from is not None or
                              (copy.action == "current" and bool(earlier.get("merged")))}
    write_atomic(folder / RECORD_NAME, json.dumps(record, indent=1, sort_keys=True) + "\n")


def describe(copy: Copy) -> str:
    """One line per shape and engine: the file the engine reads at run time, and what installing did to it."""
    label = ENGINE_LABELS[copy.engine]
    what = {
        "new": "installed",
        "current": "already installed",
        "update": "replaced the file installed before",
        "backup": f"replaced {label}'s own file, kept as {copy.backup.name if copy.backup else ''}",
        "merge": f"merged with {label}'s own file (kept as {copy.backup.name if copy.backup else ''}): its batch "
                 "sizes stay where the tuned file has none",
    }[copy.action]
    return f"N={copy.shape[0]} K={copy.shape[1]}: {label} reads {copy.dest} ({what})"


def summary(copies: list[Copy], device_name: str, input_type: str) -> str:
    """What to tell the user after an install: each file the engines read, and how to see that they do."""
    lines = [describe(c) for c in copies]
    kind = INPUT_LABELS[input_type]
    lines.append(f"on a GPU named {device_name} (torch.cuda.get_device_name(), spaces as '_'); restart the engine, "
                 f"whose log then says \"Using configuration from <file> for W8A8 Block {kind} kernel.\" for each "
                 f"(\"Using default W8A8 Block {kind} kernel config ... Config file not found at <file>\" where it "
                 "finds none)")
    return "\n".join(lines) + "\n"
