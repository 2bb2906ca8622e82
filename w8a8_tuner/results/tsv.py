"""Per-point TSV files: one row per candidate config, with a header that says what was tuned how.

Reading one checks everything a truncated, hand-edited or otherwise damaged file could break,
and names the file and what is wrong: a damaged TSV is refused, never merged.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import pandas as pd

from w8a8_tuner.results.files import write_atomic
from w8a8_tuner.search.space import ALL_PARAMS, KNOB_PARAMS, PARAMS, Config
from w8a8_tuner.search.status import MAX_RELATIVE_ERROR, OK, STATUSES

COLUMNS = (*ALL_PARAMS, "status", "time_us", "screen_us", "rel_error", "stage", "note")
NUMBER_COLUMNS = ("time_us", "screen_us", "rel_error")
FORMAT = "w8a8-block-fp8-tuner tsv v3"
# v2: the same without the knob columns (every config ran the plain kernel); still read.
FORMAT_V2 = "w8a8-block-fp8-tuner tsv v2"
COLUMNS_V2 = (*PARAMS, "status", "time_us", "screen_us", "rel_error", "stage", "note")
END_MARK = "# end rows="
# In the end mark after the row count: the sha256 of every line before it (header, best line, rows), so that
# an edit of rows together with the best line (which agree again) is refused too. TSVs written before it
# existed end in `# end rows=N` alone and get every other check.
CHECKSUM = " sha256="
STAGES = ("", "estimate", "screen", "remeasure")


class ResultFileError(ValueError):
    pass


def expected_meta(settings: dict, N: int, K: int, M: int) -> dict[str, object]:
    """The header fields a point's TSV holds under a sweep's settings: what read_tsv checks before a TSV is
    merged or kept."""
    return {
        "N": N, "K": K, "M": M, "fingerprint": settings["fingerprint"], "device_name": settings["device_name"],
        "backend": settings["backend"], "block_shape": list(settings["block_shape"]),
        "out_dtype": settings["out_dtype"],
    }


def point_meta(settings: dict, N: int, K: int, M: int, timings: str, slot: str, host: str, started: float,
               finished: float) -> dict[str, object]:
    """The header of a tuned point's TSV: the point, the settings it was tuned with (expected_meta), and
    where and when it ran."""
    return {
        **expected_meta(settings, N, K, M), "timings": timings, "slot": slot, "host": host,
        "started": f"{started:.3f}", "finished": f"{finished:.3f}",
    }


def render_tsv(meta: dict[str, object], results: list, best: Config, best_plain: Config | None = None) -> str:
    """Header comments (metadata, winner, and the winner without a Hopper knob where knob configs were
    tuned), the rows, and an end mark that proves the file whole and unedited."""
    buf = io.StringIO()
    buf.write(f"# {FORMAT}\n")
    for key, value in meta.items():
        buf.write(f"# {key}: {value}\n")
    buf.write(f"# best: {best.label()}\n")
    if best_plain is not None:
        buf.write(f"# best_plain: {best_plain.label()}\n")
    buf.write("\t".join(COLUMNS) + "\n")
    for r in sorted(results, key=lambda r: (r.status != OK, r.time_us if r.status == OK else math.inf, r.config)):
        values = [getattr(r.config, p) for p in PARAMS] + [str(bool(r.config.SWAP_AB)).lower(), r.config.SPLIT_K]
        values += [r.status, _num(r.time_us), _num(r.screen_us), _num(r.rel_error, "{:.3g}"), r.stage,
                   r.note.replace("\t", " ").replace("\n", " ")]
        buf.write("\t".join(str(v) for v in values) + "\n")
    body = buf.getvalue()
    return f"{body}{END_MARK}{len(results)}{CHECKSUM}{_sha256(body)}\n"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _num(x: float, fmt: str = "{:.3f}") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def write_tsv(path, meta, results, best, best_plain: Config | None = None) -> None:
    write_atomic(path, render_tsv(meta, results, best, best_plain))


def read_tsv(path, expected: dict[str, object] | None = None, expected_configs: set[Config] | None = None):
    """Parse and check one TSV; any sign of truncation or hand edits is an error naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultFileError(f"{path}: cannot read: {e}") from e
    lines = text.splitlines()
    if not lines or lines[0] not in (f"# {FORMAT}", f"# {FORMAT_V2}"):
        raise ResultFileError(f"{path}: not a tuner TSV of this version (first line should be '# {FORMAT}')")
    columns = COLUMNS if lines[0] == f"# {FORMAT}" else COLUMNS_V2
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
        df = pd.read_csv(io.StringIO(text), sep="\t", comment="#", dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001
        raise ResultFileError(f"{path}: unreadable table: {e}") from e
    if tuple(df.columns) != columns:
        raise ResultFileError(f"{path}: columns {list(df.columns)}, expected {list(columns)}")
    count, _, checksum = lines[-1][len(END_MARK):].partition(CHECKSUM)
    if not count.isdigit():
        raise ResultFileError(f"{path}: damaged end mark {lines[-1]!r}")
    if len(df) != int(count):
        raise ResultFileError(f"{path}: {len(df)} rows but the end mark says {count}")
    if columns == COLUMNS_V2:  # every config of a v2 file ran the plain kernel
        df.insert(len(PARAMS), "SWAP_AB", "false")
        df.insert(len(PARAMS) + 1, "SPLIT_K", "1")
    _check_values(path, df)
    configs = [Config(*(int(v) for v in row[:len(PARAMS)]), row[len(PARAMS)] == "true", int(row[len(PARAMS) + 1]))
               for row in df[list(ALL_PARAMS)].itertuples(index=False)]
    if len(set(configs)) != len(configs):
        raise ResultFileError(f"{path}: a config appears twice")
    if expected_configs is not None and set(configs) != expected_configs:
        missing, extra = len(expected_configs - set(configs)), len(set(configs) - expected_configs)
        raise ResultFileError(f"{path}: configs differ from the search space ({missing} missing, {extra} extra)")
    df["config"] = configs
    best = best_config(path, df)
    if meta.get("best") != best.label():
        raise ResultFileError(f"{path}: header says best {meta.get('best')!r} but the fastest re-measured ok row "
                              f"is {best.label()}")
    if any(c.knobs for c in configs):
        plain = best_config(path, df, plain=True)
        if meta.get("best_plain") != plain.label():
            raise ResultFileError(f"{path}: header says best_plain {meta.get('best_plain')!r} but the fastest "
                                  f"re-measured ok row without a knob is {plain.label()}")
    elif "best_plain" in meta:
        raise ResultFileError(f"{path}: header has best_plain but no row carries a knob")
    body = text[:len(text) - len(lines[-1]) - 1]  # every line before the end mark
    if checksum and checksum != _sha256(body):
        raise ResultFileError(f"{path}: changed since the tuner wrote it (rows, header or best line no longer match "
                              "the checksum in its end mark)")
    return meta, df


def _check_values(path: Path, df: pd.DataFrame) -> None:
    """Every cell parses as what its column holds; an ok row has a positive finite time and a right result.
    Converts the number columns in place."""
    def refuse(bad: pd.Series, what) -> None:
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            row = df.iloc[i]
            knobs = [f"{k}={row[k]}" for k in KNOB_PARAMS if row[k] not in ("false", "1")]
            where = f"{path}: row {i + 1} ({'_'.join([str(row[p]) for p in PARAMS] + knobs)})"
            raise ResultFileError(f"{where}: {what(row)}")

    for p in PARAMS:
        refuse(~df[p].str.fullmatch(r"[1-9][0-9]*"), lambda row, p=p: f"{p}={row[p]!r} is not a positive integer")
    refuse(~df["SWAP_AB"].isin(["true", "false"]), lambda row: f"SWAP_AB={row['SWAP_AB']!r} is not true or false")
    refuse(~df["SPLIT_K"].str.fullmatch(r"[1-9][0-9]*"), lambda row: f"SPLIT_K={row['SPLIT_K']!r} is not a "
           "positive integer")
    refuse(~df["status"].isin(STATUSES), lambda row: f"unknown status {row['status']!r}")
    refuse(~df["stage"].isin(STAGES), lambda row: f"unknown stage {row['stage']!r}")
    numbers = {}
    for col in NUMBER_COLUMNS:
        numbers[col] = pd.to_numeric(df[col].replace("", "nan"), errors="coerce")
        refuse(numbers[col].isna() & (df[col] != ""), lambda row, col=col: f"{col}={row[col]!r} is not a number")
        given = df[col] != ""
        if col == "rel_error":
            refuse(given & ~(numbers[col] >= 0), lambda row: f"rel_error={row['rel_error']!r} is negative")
        else:
            refuse(given & ~(numbers[col].abs() < math.inf) | given & ~(numbers[col] > 0),
                   lambda row, col=col: f"{col}={row[col]!r} is not a positive finite time")
    ok = df["status"] == OK
    refuse(ok & ((df["time_us"] == "") | (df["stage"] == "")), lambda row: "an ok row without a time")
    refuse(ok & ~(numbers["rel_error"] <= MAX_RELATIVE_ERROR),
           lambda row: f"ok with rel_error={row['rel_error']!r}, over the limit {MAX_RELATIVE_ERROR}")
    for col in NUMBER_COLUMNS:
        df[col] = numbers[col]


def best_config(path, df, plain: bool = False) -> Config:
    """The fastest correct config among those re-measured (`plain`: among those without a Hopper knob, what
    vLLM can run). Ties go to the row listed first, as the tuner breaks them (the smaller config)."""
    final = df[(df["status"] == OK) & (df["stage"] == "remeasure")]
    if plain:
        final = final[[not c.knobs for c in final["config"]]]
    if final.empty:
        raise ResultFileError(f"{path}: no re-measured ok config{' without a knob' if plain else ''} with a time")
    return final.loc[final["time_us"].idxmin(), "config"]
