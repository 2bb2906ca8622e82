"""From the merged verify table (w8a8_tuner.verify.table) to a summary table and PNG plots for the report.

Plain Python; matplotlib is imported only by the plotting functions.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from kernels.blocks import cdiv
from w8a8_tuner.results.files import write_atomic
from w8a8_tuner.results.naming import ENGINE_LABELS
from w8a8_tuner.search.space import default_owner
from w8a8_tuner.search.status import OK

# A spot-check config faster than the tuned one by more than this is a search miss worth reporting.
REGRET_LIMIT = 1.02

OTHERS = {"default": "vLLM default", "compare": "compare_dir", "cublas": "cuBLAS",
          "plain": "best config without a Hopper knob"}


def others(engine: str = "vllm") -> dict[str, str]:
    """The other contenders' names, the default named by whose it is (the engine tuned for)."""
    return {**OTHERS, "default": f"{ENGINE_LABELS[default_owner(engine)]} default"}
_SHORT = {"wrong_result": "wrong", "unsupported": "unsup.", "skipped": "skipped", "missing": "missing",
          "launch_error": "error", "out_of_resources": "no smem", "compile_error": "error"}
SUMMARY_COLUMNS = (
    "shape", "points", "tuned_ok",
    "vs_default_geomean", "vs_default_worst",
    "vs_compare_geomean", "vs_compare_worst",
    "vs_cublas_geomean", "vs_cublas_worst", "cublas_not_ok",
    "vs_plain_geomean", "vs_plain_worst",
    "roofline_median_pct", "roofline_worst",
    "noise_median_pct", "noise_max_pct",
    "regret_median", "regret_p98", "regret_worst", f"regret_over_{REGRET_LIMIT}",
)


def shape_label(N, K) -> str:
    return f"N={int(N)} K={int(K)}"


def _geomean(values: pd.Series) -> float:
    v = values.dropna()
    return math.exp(sum(math.log(x) for x in v) / len(v)) if len(v) else math.nan


def _where(row, with_shape: bool) -> str:
    return (f"{shape_label(row.N, row.K)} M={int(row.M)}" if with_shape else f"M={int(row.M)}")


def _worst(df: pd.DataFrame, col: str, fmt: str, with_shape: bool, largest: bool = False) -> str:
    v = df[col].dropna()
    if v.empty:
        return "n/a"
    row = df.loc[v.idxmax() if largest else v.idxmin()]
    return f"{fmt.format(row[col])} at {_where(row, with_shape)}"


def _not_ok(df: pd.DataFrame, name: str) -> str:
    counts = df[f"{name}_status"].value_counts()
    parts = [f"{s} {int(n)}" for s, n in counts.items() if s != OK]
    return ", ".join(parts) if parts else "none"


def _summary_row(df: pd.DataFrame, label: str, with_shape: bool) -> dict:
    row = {"shape": label, "points": len(df), "tuned_ok": f"{int((df['tuned_status'] == OK).sum())}/{len(df)}"}
    for name in OTHERS:
        col = f"speedup_vs_{name}"
        g = _geomean(df[col])
        row[f"vs_{name}_geomean"] = f"{g:.3f}x" if math.isfinite(g) else _why_empty(df, name)
        row[f"vs_{name}_worst"] = _worst(df, col, "{:.3f}x", with_shape)
    row["cublas_not_ok"] = _not_ok(df, "cublas")
    pct = df["pct_roofline"].dropna()
    row["roofline_median_pct"] = f"{pct.median():.1f}%" if len(pct) else _roofline_why(df)
    row["roofline_worst"] = _worst(df, "pct_roofline", "{:.1f}%", with_shape)
    noise = df["noise_pct"].dropna()
    row["noise_median_pct"] = f"{noise.median():.2f}%" if len(noise) else "n/a"
    row["noise_max_pct"] = f"{noise.max():.2f}%" if len(noise) else "n/a"
    regret = df["regret"].dropna()
    row["regret_median"] = f"{regret.median():.3f}" if len(regret) else "n/a"
    row["regret_p98"] = f"{regret.quantile(0.98):.3f}" if len(regret) else "n/a"
    row["regret_worst"] = _worst(df, "regret", "{:.3f}", with_shape, largest=True)
    row[f"regret_over_{REGRET_LIMIT}"] = f"{int((regret > REGRET_LIMIT).sum())}/{len(regret)}" if len(regret) else "n/a"
    return row


def _why_empty(df: pd.DataFrame, name: str) -> str:
    statuses = set(df[f"{name}_status"])
    if statuses == {"skipped"}:
        return "skipped"
    if statuses == {"missing"}:
        return "missing"
    return "n/a"


def _roofline_why(df: pd.DataFrame) -> str:
    notes = {n for n in df["roofline_note"] if n}
    return "skipped" if any(n.startswith("skipped") for n in notes) else "n/a"


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per shape and one for all points: geomean speedups (other / tuned) and the worst point."""
    rows = [_summary_row(g, shape_label(n, k), False) for (n, k), g in df.groupby(["N", "K"], sort=True)]
    rows.append(_summary_row(df, "all", True))
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def summary_text(df: pd.DataFrame, summary: pd.DataFrame, engine: str = "vllm") -> str:
    """The few lines printed at the end of the run (and shown on the report's first page)."""
    total = summary.iloc[-1]
    devices = sorted(set(df["device_name"]))
    backend = sorted(set(df["backend"]))
    shapes = df.groupby(["N", "K"]).ngroups
    lines = [f"verify: {len(df)} points ({shapes} shapes) on {', '.join(devices)}, backend {', '.join(backend)}"]
    if "interpret" in backend:
        lines.append("  interpreter backend: times are CPU wall times (meaningless); cuBLAS and roofline skipped")
    bad = df[df["tuned_status"] != OK]
    if len(bad):
        lines.append(f"  WARNING: tuned config not ok at {len(bad)} points: "
                     + ", ".join(f"{_where(r, True)} ({r.tuned_status})" for r in bad.itertuples()))
    else:
        lines.append("  tuned configs: all checked against the float32 reference, all right")
    for name, title in others(engine).items():
        not_ok = _not_ok(df, name)
        if name == "compare" and (df["compare_note"] == "no compare_dir given").all():
            lines.append("  tuned vs compare_dir: compare_dir not set")
        elif name == "plain" and (df["plain_status"] == "missing").all():
            continue  # no config with a Hopper knob was tuned: tuned is the plain winner
        elif total[f"vs_{name}_worst"] == "n/a":
            lines.append(f"  tuned vs {title}: no comparison ({name}: {not_ok})")
        else:
            lines.append(f"  tuned vs {title}: geomean {total[f'vs_{name}_geomean']}, worst {total[f'vs_{name}_worst']}"
                         + (f"; {name} not ok: {not_ok}" if not_ok != "none" else ""))
    if total["roofline_worst"] == "n/a":
        lines.append(f"  percent of roofline: {total['roofline_median_pct']}")
    else:
        lines.append(f"  percent of roofline (tuned): median {total['roofline_median_pct']}, "
                     f"worst {total['roofline_worst']}")
    lines.append(f"  noise (tuned config timed twice): median {total['noise_median_pct']}, "
                 f"max {total['noise_max_pct']}")
    if total["regret_median"] == "n/a":
        lines.append("  spot check: no spot-check config timed")
    else:
        lines.append(f"  spot check (runner-ups and random configs; regret = tuned / best of them): median "
                     f"{total['regret_median']}, 98th percentile {total['regret_p98']}, worst {total['regret_worst']}, "
                     f"over {REGRET_LIMIT}: {total[f'regret_over_{REGRET_LIMIT}']} points")
    return "\n".join(lines) + "\n"


def write_summary(df: pd.DataFrame, tsv_path, text_path, engine: str = "vllm") -> str:
    summary = summarize(df)
    buf = io.StringIO()
    summary.to_csv(buf, sep="\t", index=False)
    write_atomic(tsv_path, buf.getvalue())
    text = summary_text(df, summary, engine)
    write_atomic(text_path, text)
    return text


# ---------------------------------------------------------------------------------------------
# Plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(df: pd.DataFrame):
    shapes = sorted({(int(n), int(k)) for n, k in zip(df["N"], df["K"])})
    batches = sorted({int(m) for m in df["M"]})
    return shapes, batches


def _cell_reason(row, name: str | None) -> str:
    if row["tuned_status"] != OK:
        return "tuned\n" + _SHORT.get(row["tuned_status"], row["tuned_status"])
    if name is None:  # roofline
        return "skipped" if str(row["roofline_note"]).startswith("skipped") else "n/a"
    return _SHORT.get(row[f"{name}_status"], row[f"{name}_status"])


def heatmap(df: pd.DataFrame, value: str, reason_of, title: str, path, kind: str = "ratio",
            colorbar_label: str = "") -> None:
    """Shapes x batch sizes; each cell shows its value, or why there is none (grey)."""
    import numpy as np

    plt = _plt()
    shapes, batches = _grid(df)
    values = np.full((len(shapes), len(batches)), np.nan)
    texts = [["" for _ in batches] for _ in shapes]
    for _, row in df.iterrows():
        i, j = shapes.index((int(row["N"]), int(row["K"]))), batches.index(int(row["M"]))
        v = row[value]
        if isinstance(v, float) and math.isfinite(v):
            values[i, j] = v
            texts[i][j] = f"{v:.2f}" if kind == "ratio" else f"{v:.0f}%"
        else:
            texts[i][j] = reason_of(row)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 + 0.62 * len(batches)), 1.6 + 0.55 * len(shapes)),
                           layout="constrained")
    cmap = plt.get_cmap("RdYlGn" if kind == "ratio" else "viridis").copy()
    cmap.set_bad("#d9d9d9")
    if kind == "ratio":
        logs = np.log2(values)
        finite = np.abs(logs[np.isfinite(logs)])
        lim = max(math.log2(1.25), float(finite.max()) if finite.size else 0.0)
        im = ax.imshow(np.ma.masked_invalid(logs), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        bar = fig.colorbar(im, ax=ax, pad=0.01)
        bar.ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{2 ** x:.2g}x"))
    else:
        im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        bar = fig.colorbar(im, ax=ax, pad=0.01)
    bar.set_label(colorbar_label, fontsize=8)
    for i in range(len(shapes)):
        for j in range(len(batches)):
            ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(batches)), [str(m) for m in batches], fontsize=8)
    ax.set_yticks(range(len(shapes)), [shape_label(n, k) for n, k in shapes], fontsize=8)
    ax.set_xlabel("batch size M")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _interpret_note(df: pd.DataFrame) -> str:
    return "\n(interpreter backend: CPU wall times, meaningless)" if (df["backend"] == "interpret").any() else ""


def plot_speedup(df: pd.DataFrame, other: str, path, engine: str = "vllm") -> None:
    title = others(engine)[other]
    heatmap(df, f"speedup_vs_{other}", lambda r: _cell_reason(r, other),
            f"Speedup of the tuned config over {title}\n(time {title} / time tuned; > 1: tuned faster)"
            + _interpret_note(df), path, colorbar_label=f"{title} / tuned")


def plot_spot_check(df: pd.DataFrame, path) -> None:
    df = df.assign(spot_over_tuned=1 / df["regret"])
    heatmap(df, "spot_over_tuned", lambda r: "tuned\n" + _SHORT.get(r["tuned_status"], r["tuned_status"])
            if r["tuned_status"] != OK else "none\ntimed",
            "Tuned config against the spot check (its runner-ups and random configs that ran right)\n"
            "(time of the best spot-check config / time tuned; < 1: the search missed a faster config)"
            + _interpret_note(df), path, colorbar_label="best spot check / tuned")


def plot_roofline(df: pd.DataFrame, path) -> None:
    heatmap(df, "pct_roofline", lambda r: _cell_reason(r, None),
            "Tuned config, percent of roofline\n(max(bytes / bandwidth, flops / FP8 peak) / time)",
            path, kind="percent", colorbar_label="% of roofline")


def plot_times(df: pd.DataFrame, path, engine: str = "vllm") -> None:
    """Per shape: time vs batch size for every contender that was right, and the roofline."""
    plt = _plt()
    shapes, _ = _grid(df)
    cols = min(3, len(shapes))
    rows = cdiv(len(shapes), cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    styles = {"tuned": ("tuned", "o-"), "default": (others(engine)["default"], "s--"),
              "compare": ("compare_dir", "^-."), "cublas": ("cuBLAS blockwise", "d:"),
              "plain": ("best without a knob", "v-")}
    for ax, (n, k) in zip(axes.flat, shapes):
        g = df[(df["N"] == n) & (df["K"] == k)].sort_values("M")
        for name, (label, style) in styles.items():
            ok = g[g[f"{name}_status"] == OK]
            if len(ok):
                ax.plot(ok["M"], ok[f"{name}_us"], style, label=label, markersize=4)
        roof = g.dropna(subset=["roofline_us"])
        if len(roof):
            ax.plot(roof["M"], roof["roofline_us"], "k-", linewidth=1, alpha=0.6, label="roofline")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(g["M"]), [str(int(m)) for m in g["M"]], rotation=90, fontsize=7)
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_yscale("log")
        ax.set_title(shape_label(n, k), fontsize=9)
        ax.set_xlabel("batch size M")
        ax.set_ylabel("time per call (us)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shapes):]:
        ax.set_visible(False)
    fig.suptitle("Time per call (median, weights cold in L2)" + _interpret_note(df), fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(df: pd.DataFrame, paths: dict[str, str], engine: str = "vllm") -> None:
    """paths: plot name -> PNG path; names: speedup_default, speedup_compare, speedup_plain, spot_check, roofline,
    cublas, times; `engine`: the one tuned for, whose default config was timed."""
    for name, path in paths.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
        if name == "speedup_default":
            plot_speedup(df, "default", tmp, engine)
        elif name == "speedup_compare":
            plot_speedup(df, "compare", tmp)
        elif name == "cublas":
            plot_speedup(df, "cublas", tmp)
        elif name == "speedup_plain":
            plot_speedup(df, "plain", tmp)
        elif name == "roofline":
            plot_roofline(df, tmp)
        elif name == "spot_check":
            plot_spot_check(df, tmp)
        elif name == "times":
            plot_times(df, tmp, engine)
        else:
            raise ValueError(f"unknown plot {name!r}")
        tmp.replace(path)
