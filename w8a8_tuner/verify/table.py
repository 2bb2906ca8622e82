"""The verify table: one row per (N, K, M) with every contender's config, status, time and error,
the control, the spot check and the ratios; reading, writing and merging it."""

from __future__ import annotations

import io
import math

import pandas as pd

from w8a8_tuner.results.files import write_atomic
from w8a8_tuner.search.status import OK

# Statuses a verify row uses besides w8a8_tuner.search.status's.
UNSUPPORTED = "unsupported"  # the library refused the call (cuBLAS: shape, batch size, torch version)
SKIPPED = "skipped"          # not run: interpreter backend, or switched off in verify_settings
MISSING = "missing"          # compare_dir not given, or it has no file for this shape

# plain: where configs with SGLang's Hopper knobs were tuned, the point's best config without one (the
# six-parameter winner, what vLLM's file holds), timed beside the tuned (knob) winner.
CONTENDERS = ("tuned", "default", "compare", "cublas", "plain")
OTHERS = CONTENDERS[1:]
_PER_CONTENDER = ("config", "status", "us", "rel_error", "note")
COLUMNS = (
    "N", "K", "M", "device_name", "backend",
    *(f"{c}_{f}" for c in CONTENDERS[:3] for f in _PER_CONTENDER),
    "compare_key", "compare_file",  # the batch-size key and the file the compare config came from
    *(f"cublas_{f}" for f in _PER_CONTENDER),
    *(f"plain_{f}" for f in _PER_CONTENDER),
    "control_us", "noise_pct",      # the tuned config timed again, as a contender of its own
    "spot_n", "spot_best_config", "spot_best_us", "regret",  # spot check: runner-ups and random configs
    "roofline_us", "roofline_note", "bandwidth_gbs", "fp8_peak_tflops", "bytes", "flops",
    *(f"speedup_vs_{c}" for c in OTHERS), "pct_roofline",
)
TEXT_COLUMNS = tuple(c for c in COLUMNS if c.endswith(("_config", "_status", "_note", "_file"))) + (
    "device_name", "backend")


class VerifyFileError(ValueError):
    pass


def ratio(num: float, den: float) -> float:
    return num / den if math.isfinite(num) and math.isfinite(den) and den > 0 else math.nan


def add_ratios(row: dict) -> None:
    """Speedups of the tuned config (other / tuned: > 1 means tuned is faster), percent of roofline,
    the control's noise and the spot check's regret (tuned / best spot-check config: > 1 means a
    spot-check config was faster). A ratio is empty unless both sides were checked right and timed."""
    tuned = row["tuned_us"] if row["tuned_status"] == OK else math.nan
    for other in OTHERS:
        t = row[f"{other}_us"] if row[f"{other}_status"] == OK else math.nan
        row[f"speedup_vs_{other}"] = ratio(t, tuned)
    row["pct_roofline"] = 100 * ratio(row["roofline_us"], tuned)
    row["noise_pct"] = 100 * abs(ratio(row["control_us"], tuned) - 1)
    row["regret"] = ratio(tuned, row["spot_best_us"])


def render_rows(rows: list[dict]) -> str:
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    buf = io.StringIO()
    df.to_csv(buf, sep="\t", index=False, na_rep="", float_format="%.6g")
    return buf.getvalue()


def write_rows(path, rows: list[dict]) -> None:
    write_atomic(path, render_rows(rows))


def read_rows(path) -> pd.DataFrame:
    """One verify TSV (per shape or merged), columns checked; text columns as '' when empty."""
    try:
        df = pd.read_csv(path, sep="\t", dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                         na_values={c: [""] for c in COLUMNS if c not in TEXT_COLUMNS})
    except Exception as e:  # noqa: BLE001
        raise VerifyFileError(f"{path}: unreadable: {e}") from e
    if tuple(df.columns) != COLUMNS:
        raise VerifyFileError(f"{path}: columns {list(df.columns)}, expected {list(COLUMNS)}")
    return df


def merge(paths, out_path) -> pd.DataFrame:
    frames = [read_rows(p) for p in paths]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    df = df.sort_values(["N", "K", "M"]).reset_index(drop=True)
    write_rows(out_path, df.to_dict("records"))
    return df
