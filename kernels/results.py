"""Per-point TSV files (one row per candidate) and their merge into one vLLM JSON per shape."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from kernels.naming import configs_to_json, write_atomic
from kernels.search_space import PARAMS, Config
from kernels.status import OK, STATUSES

COLUMNS = (*PARAMS, "status", "time_us", "screen_us", "rel_error", "stage", "note")
FORMAT = "w8a8-block-fp8-tuner tsv v1"
END_MARK = "# end rows="


class ResultFileError(ValueError):
    pass


def render_tsv(meta: dict[str, object], results: list, best: Config | None) -> str:
    """Header comments (metadata, winner), the rows, and an end mark that proves the file whole."""
    buf = io.StringIO()
    buf.write(f"# {FORMAT}\n")
    for key, value in meta.items():
        buf.write(f"# {key}: {value}\n")
    if best is not None:
        buf.write(f"# best: {best.label()}\n")
    buf.write("\t".join(COLUMNS) + "\n")
    for r in sorted(results, key=lambda r: (r.status != OK, r.time_us if r.status == OK else math.inf, r.config)):
        values = [getattr(r.config, p) for p in PARAMS]
        values += [r.status, _num(r.time_us), _num(r.screen_us), _num(r.rel_error, "{:.3g}"), r.stage,
                   r.note.replace("\t", " ").replace("\n", " ")]
        buf.write("\t".join(str(v) for v in values) + "\n")
    buf.write(f"{END_MARK}{len(results)}\n")
    return buf.getvalue()


def _num(x: float, fmt: str = "{:.3f}") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def write_tsv(path, meta, results, best) -> None:
    write_atomic(path, render_tsv(meta, results, best))


def read_tsv(path, expected: dict[str, object] | None = None, expected_configs: set[Config] | None = None):
    """Parse and check one TSV; any sign of truncation or hand edits is an error naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ResultFileError(f"{path}: cannot read: {e}") from e
    lines = text.splitlines()
    if not lines or lines[0] != f"# {FORMAT}":
        raise ResultFileError(f"{path}: not a tuner TSV (first line should be '# {FORMAT}')")
    if not lines[-1].startswith(END_MARK):
        raise ResultFileError(f"{path}: truncated (no '{END_MARK}N' line at the end)")
    meta = {}
    for line in lines:
        if line.startswith("# ") and ": " in line:
            key, value = line[2:].split(": ", 1)
            meta[key] = value
    for key, value in (expected or {}).items():
        if meta.get(key) != str(value):
            raise ResultFileError(f"{path}: header says {key}={meta.get(key)!r}, expected {value!r}")
    try:
        df = pd.read_csv(io.StringIO(text), sep="\t", comment="#", dtype={"note": str, "stage": str},
                         keep_default_na=False, na_values={"time_us": [""], "screen_us": [""], "rel_error": [""]})
    except Exception as e:  # noqa: BLE001
        raise ResultFileError(f"{path}: unreadable table: {e}") from e
    if tuple(df.columns) != COLUMNS:
        raise ResultFileError(f"{path}: columns {list(df.columns)}, expected {list(COLUMNS)}")
    rows = int(lines[-1][len(END_MARK):] or -1)
    if len(df) != rows:
        raise ResultFileError(f"{path}: {len(df)} rows but the end mark says {rows}")
    bad = sorted(set(df["status"]) - set(STATUSES))
    if bad:
        raise ResultFileError(f"{path}: unknown status {bad}")
    try:
        configs = [Config(*(int(v) for v in row)) for row in df[list(PARAMS)].itertuples(index=False)]
    except (TypeError, ValueError) as e:
        raise ResultFileError(f"{path}: a launch parameter is not an integer: {e}") from e
    if len(set(configs)) != len(configs):
        raise ResultFileError(f"{path}: a config appears twice")
    if expected_configs is not None and set(configs) != expected_configs:
        missing, extra = len(expected_configs - set(configs)), len(set(configs) - expected_configs)
        raise ResultFileError(f"{path}: configs differ from the search space ({missing} missing, {extra} extra)")
    df["config"] = configs
    return meta, df


def best_config(path, df) -> Config:
    """The fastest correct config among those re-measured."""
    final = df[(df["status"] == OK) & (df["stage"] == "remeasure")]
    if final.empty or final["time_us"].isna().any():
        raise ResultFileError(f"{path}: no re-measured ok config with a time")
    return final.loc[final["time_us"].idxmin(), "config"]


def aggregate(tsv_by_batch: dict[int, str], json_path, expected: dict[str, object],
              expected_configs: set[Config] | None = None) -> dict[int, Config]:
    """Check every point's TSV, then write the shape's JSON atomically (or nothing)."""
    best = {}
    for M, path in sorted(tsv_by_batch.items()):
        _, df = read_tsv(path, {**expected, "M": M}, expected_configs)
        best[M] = best_config(path, df)
    write_atomic(json_path, configs_to_json(best))
    return best
