"""Who a tuned config is timed against at one point, besides itself.

- `default`: vLLM's fallback config;
- `compare`: the config a folder of engine JSON files gives (file by name, batch size by nearest key);
- spot check: the point's runner-ups from its TSV plus random configs that ran right there, so a
  report shows the search's quality without any reference folder;
- `cublas`: cuBLAS blockwise FP8 through torch._scaled_mm (1x128 activation and 128x128 weight
  scales), where the installed torch accepts it.
"""

from __future__ import annotations

from kernels.blocks import cdiv
from w8a8_tuner.results.tsv import read_tsv
from w8a8_tuner.search.space import Config, sample
from w8a8_tuner.search.status import OK, error_note

_STAGE_RANK = {"remeasure": 0, "screen": 1, "estimate": 2}


def read_points(tsvs: dict[int, str]) -> tuple[dict[int, object], dict[int, Config]]:
    """The point TSVs of a shape, each read (and checked) once: per batch size its rows, and its best config
    without a Hopper knob (best_plain) where the point tuned configs with knobs."""
    rows, plain = {}, {}
    for M, path in tsvs.items():
        meta, rows[M] = read_tsv(path)
        if "best_plain" in meta:
            plain[M] = Config.from_label(meta["best_plain"])
    return rows, plain


def spot_check_configs(df, timed: set, runner_ups: int, random_k: int, seed: int) -> list[Config]:
    """The `runner_ups` next-best configs of a point's TSV rows (read_tsv; furthest stage first, then time) and
    `random_k` other configs drawn at random among those that ran right at the point; none of `timed` (the
    configs timed as contenders of their own)."""
    ok = df[(df["status"] == OK) & ~df["config"].isin(timed)].copy()
    ok["rank"] = ok["stage"].map(_STAGE_RANK)
    ranked = list(ok.sort_values(["rank", "time_us"])["config"])
    chosen = ranked[:runner_ups]
    return chosen + sample(ranked[runner_ups:], random_k, seed)


def cublas_scale_layouts(As, Bs):
    """Scales in the layouts torch._scaled_mm(A, B.t(), scale_a, scale_b) takes for blockwise
    1x128 (A) x 128x128 (B), most recent torch first.

    scale_a: (M, ceil(K/128)), outer-dim-major (stride (1, M)) in every version.
    scale_b: (ceil(K/128), ceil(N/128)) with stride (1, L4), L4 = ceil(K/128) rounded up to 4,
    what cuBLASLt requires and torch checks after pytorch#166752; before that torch took the
    unpadded stride (1, ceil(K/128)), which cuBLAS reads wrong unless ceil(K/128) % 4 == 0.
    """
    import torch

    M, groups = As.shape
    scale_a = torch.empty_strided((M, groups), (1, M), dtype=As.dtype, device=As.device)
    scale_a.copy_(As)
    padded_groups = cdiv(groups, 4) * 4
    layouts = []
    if padded_groups != groups:
        padded = torch.zeros((Bs.shape[0], padded_groups), dtype=Bs.dtype, device=Bs.device)
        padded[:, :groups] = Bs
        layouts.append(("scale_b K-padded to 4", scale_a, padded[:, :groups].t()))
    layouts.append(("scale_b unpadded" if padded_groups != groups else "scale_b", scale_a, Bs.t()))
    return layouts


def cublas_launcher(workload, out_dtype):
    """(description, launch) for the first scale layout the installed torch accepts, or raise
    NotImplementedError with the errors of every layout tried. Acceptance is decided by torch's
    checks and cuBLAS's heuristics only; whether the numbers are right is checked afterwards,
    like any contender's."""
    import torch

    from kernels.reference import FP8

    ops, weights = workload.ops, workload.weights
    if ops.A.dtype != FP8:
        raise NotImplementedError(f"cuBLAS blockwise scaling takes FP8 operands, not {ops.A.dtype}")
    if tuple(ops.block_shape) != (128, 128):
        raise NotImplementedError(f"cuBLAS blockwise FP8 needs 128x128 blocks, not {list(ops.block_shape)}")
    if not hasattr(torch, "_scaled_mm"):
        raise NotImplementedError(f"torch {torch.__version__} has no torch._scaled_mm")
    errors = []
    for i, (name, _, _) in enumerate(cublas_scale_layouts(ops.As, weights[0][1])):
        per_copy = [(B.t(), cublas_scale_layouts(ops.As, Bs)[i]) for B, Bs in weights]

        def launch(copy: int, per_copy=per_copy):
            Bt, (_, sa, sb) = per_copy[copy % len(per_copy)]
            return torch._scaled_mm(ops.A, Bt, sa, sb, out_dtype=out_dtype)

        try:
            launch(0)
            if ops.A.is_cuda:
                torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001 - torch's checks and cuBLAS NOT_SUPPORTED
            errors.append(f"{name}: {error_note(e)}")
            continue
        return name, launch
    raise NotImplementedError("; ".join(errors))
