"""From a shape's per-batch TSVs to the JSON file(s) the engines load, with a record of what they were made from.

A shape gets one JSON per engine spelling of its name (`engine: both`: vLLM's and SGLang's). Each
holds the best config its engine can run: where configs with SGLang's Hopper knobs were tuned, a file
vLLM reads gets each point's best config without a knob (the TSV's `best_plain`), SGLang's the best.
Beside them the aggregate step writes a manifest (results/<device>/aggregate/N<N>_K<K>.tsv): the
settings fingerprint, each JSON's path and checksum and, per batch size, the winner, its time
and the checksum of the TSV it came from. When the workflow starts, `stale_reason` compares the manifest
with the files on disk and the current settings, so a JSON that is no longer what its TSVs and
settings give (settings changed, a TSV re-tuned or replaced, the JSON edited or damaged) is made
again even where file times say it is up to date (copied results, `--rerun-triggers mtime`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from w8a8_tuner.results.files import sha256_of, write_atomic
from w8a8_tuner.results.naming import configs_to_json
from w8a8_tuner.results.tsv import ResultFileError, read_tsv
from w8a8_tuner.search.space import Config

MANIFEST_FORMAT = "w8a8-block-fp8-tuner manifest v1"


def aggregate(tsv_by_batch: dict[int, str], json_paths: dict, manifest_path, expected: dict[str, object],
              configs_at: Callable[[int], set[Config]] | None = None) -> dict[int, Config]:
    """Check every point's TSV (against `configs_at(M)`, the search space at its batch size), then write the
    shape's JSON files and its manifest (or nothing). `json_paths`: {path: whether its engine runs configs
    with knobs} (only SGLang does: a file vLLM reads gets the best config without one). Returns the best."""
    best, plain, rows = {}, {}, []
    for M, path in sorted(tsv_by_batch.items()):
        meta, df = read_tsv(path, {**expected, "M": M}, configs_at(M) if configs_at else None)
        c = best[M] = Config.from_label(meta["best"])  # read_tsv checked it is the fastest re-measured row
        plain[M] = Config.from_label(meta["best_plain"]) if "best_plain" in meta else c  # (and this)
        time_us = float(df.loc[df["config"] == c, "time_us"].iloc[0])
        rows.append(f"{M}\t{c.label()}\t{time_us:.3f}\t{path}\t{sha256_of(path)}")
    header = [f"# {MANIFEST_FORMAT}", f"# fingerprint: {expected['fingerprint']}"]
    for path, runs_knobs in json_paths.items():
        write_atomic(path, configs_to_json(best if runs_knobs else plain))
        header += [f"# json: {path}", f"# json_sha256: {sha256_of(path)}"]
    header.append("M\tconfig\ttime_us\ttsv\ttsv_sha256")
    write_atomic(manifest_path, "\n".join(header + rows) + "\n")
    return best


def read_manifest(path) -> tuple[dict[str, str], dict[str, str], dict[int, tuple[str, str]]]:
    """(header, {json path: its sha256}, {M: (tsv path, tsv sha256)}); ResultFileError if it is not a
    whole manifest."""
    text = Path(path).read_text()
    lines = text.splitlines()
    if not lines or lines[0] != f"# {MANIFEST_FORMAT}":
        raise ResultFileError(f"{path}: not a manifest")
    pairs = [line[2:].split(": ", 1) for line in lines if line.startswith("# ") and ": " in line]
    meta = dict(pairs)
    json_paths = [v for k, v in pairs if k == "json"]
    json_sums = [v for k, v in pairs if k == "json_sha256"]
    if len(json_paths) != len(json_sums):
        raise ResultFileError(f"{path}: damaged manifest: {len(json_paths)} JSON paths, {len(json_sums)} checksums")
    table = [line.split("\t") for line in lines if not line.startswith("#")][1:]
    try:
        return meta, dict(zip(json_paths, json_sums)), {int(r[0]): (r[3], r[4]) for r in table}
    except (IndexError, ValueError) as e:
        raise ResultFileError(f"{path}: damaged manifest: {e}") from e


def stale_reason(json_paths: list, manifest_path, fingerprint: str, tsv_by_batch: dict[int, str]) -> str | None:
    """Why the JSON files on disk are not what their TSVs and the current settings give, or None if they
    are (or if one is missing: then they are made anyway). File times cannot tell this: with Snakemake's
    mtime trigger a JSON newer than everything it was made from looks up to date even when the
    settings now name other TSVs."""
    manifest_path = Path(manifest_path)
    if not all(Path(p).exists() for p in json_paths):
        return None
    if not manifest_path.exists():
        return "no record of what it was made from"
    try:
        meta, written, made_from = read_manifest(manifest_path)
    except (OSError, ResultFileError):
        return "its record is damaged"
    if meta.get("fingerprint") != fingerprint:
        return f"made with other settings ({meta.get('fingerprint')}, now {fingerprint})"
    for path in json_paths:
        if str(path) not in written:
            return f"no record of writing {Path(path).name}"
        if written[str(path)] != sha256_of(path):
            return f"{Path(path).name} changed on disk since it was written"
    if set(made_from) != set(tsv_by_batch):
        return f"made for batch sizes {sorted(made_from)}, now {sorted(tsv_by_batch)}"
    for M, path in sorted(tsv_by_batch.items()):
        if not Path(path).exists():
            return f"the point M={M} is no longer tuned"
        if made_from[M] != (str(path), sha256_of(path)):
            return f"the TSV of M={M} changed since"
    return None
