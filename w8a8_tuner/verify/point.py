"""Verify tuned configs: per (N, K, M), check every contender's numbers, then time them side by side.

Contenders at each point (w8a8_tuner.verify.contenders): the tuned config, the tuned config
again as a control (its two times state the run's own noise), the default config of the engine
tuned for (vLLM's or SGLang's, search.space.engine_default_config), compare_dir's config (an entry
with SGLang's Hopper knobs runs the kernel they select), the spot check (runner-ups from the point's
TSV and random configs that ran right there), cuBLAS blockwise FP8 and, where knob configs were
tuned, the best config without a knob (`plain`); plus the roofline, with bandwidth and FP8 peak
measured on the same GPU. Each contender runs once on poisoned output and is compared with the
float32 reference; only right ones are timed, all together, interleaved over `rounds` rounds by the
tuner's bench (w8a8_tuner.search.bench). With the interpreter backend everything is checked
and wall-timed (meaningless), and cuBLAS and the roofline are skipped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from kernels.knobs import HOPPER_ARCH, runs_hopper_kernel
from w8a8_tuner import hooks
from w8a8_tuner.results.naming import (
    ENGINES,
    compare_file_for,
    config_file_name,
    engines_reading,
    load_config_file,
    nearest_key,
    pick_config,
)
from w8a8_tuner.search.space import Config, engine_default_config
from w8a8_tuner.search.status import MAX_RELATIVE_ERROR, OK, WRONG_RESULT, error_note, launch_failure
from w8a8_tuner.verify.contenders import read_points
from w8a8_tuner.verify.table import CONTENDERS, MISSING, SKIPPED, UNSUPPORTED, add_ratios, write_rows


@dataclass(frozen=True)
class VerifySettings:
    """The `verify_settings` section (defaults: the schema)."""

    budget_us: float
    rounds: int
    runner_ups: int
    spot_random: int
    seed: int
    cublas: bool
    roofline: bool

    @classmethod
    def from_config(cls, section: dict) -> "VerifySettings":
        return cls(**{f.name: section[f.name] for f in fields(cls)})


@dataclass
class Outcome:
    status: str
    time_us: float = math.nan
    rel_error: float = math.nan
    config: str = ""
    note: str = ""


@dataclass
class ShapeInputs:
    N: int
    K: int
    tuned: dict[int, Config]
    rows: dict = field(default_factory=dict)  # per batch size, the rows of the TSV its tuned config came from
    plain: dict[int, Config] = field(default_factory=dict)  # per point, the best config without a knob (TSVs)
    compare: dict[int, Config] | None = None
    compare_file: str = ""
    compare_engines: str = ""  # whose spelling of the file name compare_file has (vllm, sglang)
    block_shape: tuple[int, int] = (128, 128)
    out_dtype: str = "bfloat16"
    input_type: str = field(kw_only=True)  # operand type (fp8, int8)
    kernel: str = field(kw_only=True)      # the Triton function launched (kernels.engines)
    engine: str = field(default="vllm", kw_only=True)  # the `engine` tuned for: whose default config is timed
    extra: dict = field(default_factory=dict)  # columns copied into every row (device, backend)


def verify_point(shape: ShapeInputs, M: int, settings: VerifySettings, backend, bench, limits,
                 corrupt: Callable[[str], bool] | None = None, log: Callable[[str], None] = print,
                 compile_workers: int = 1) -> dict:
    from kernels.block_fp8 import OUT_DTYPES
    from kernels.reference import relative_error
    from w8a8_tuner.search.bench import launches_for
    from w8a8_tuner.search.compile import Point
    from w8a8_tuner.search.workload import Workload
    from w8a8_tuner.verify.contenders import cublas_launcher, spot_check_configs
    from w8a8_tuner.verify.roofline import point_bytes, point_flops, roofline_us

    N, K, block_shape = shape.N, shape.K, tuple(shape.block_shape)
    workload = Workload.create(M, N, K, block_shape, shape.out_dtype, backend.device, backend.cache_bytes(),
                               seed=settings.seed, input_type=shape.input_type, kernel=shape.kernel)
    tuned = shape.tuned[M] if M in shape.tuned else pick_config(shape.tuned, M)
    configs: dict[str, Config | None] = {
        "tuned": tuned, "control": tuned,
        "default": engine_default_config(shape.engine, block_shape, input_type=shape.input_type),
        "compare": pick_config(shape.compare, M) if shape.compare else None,
        "plain": shape.plain.get(M),
    }
    spots = (spot_check_configs(shape.rows[M], {tuned, shape.plain.get(M)}, settings.runner_ups,
                                settings.spot_random, settings.seed + M) if M in shape.rows else [])
    configs.update({f"spot{i + 1}": c for i, c in enumerate(spots)})

    # The kernel each config entry selects as SGLang selects it (the interpreter runs either kernel anywhere).
    arch = backend.arch(shape.extra.get("device_name", ""))
    run_arch = arch if backend.on_gpu else HOPPER_ARCH
    runnable = sorted({c for c in configs.values()
                       if c is not None and (not c.knobs or runs_hopper_kernel(c.as_dict(), run_arch))})

    # Compile the contenders in parallel (a cold cache would otherwise compile them one by one at launch).
    point = Point(M, N, K, block_shape, shape.out_dtype, shape.input_type, shape.kernel)
    for _ in backend.compiler(point, compile_workers, arch)(runnable):
        pass

    # Check every Triton contender's numbers at once (contenders sharing a config share its check).
    def corrupt_config(c: Config) -> bool:
        return corrupt is not None and any(corrupt(_kind(name)) for name, cfg in configs.items() if cfg == c)

    checks = workload.check(runnable, corrupt_config)
    outcomes: dict[str, Outcome] = {}
    launchers = {}
    for name, c in configs.items():
        if c is None:
            outcomes[name] = Outcome(MISSING, note="no config with a Hopper knob tuned here" if name == "plain"
                                     else "no compare_dir given" if not shape.compare_file
                                     else f"no file {shape.compare_file}")
            continue
        if c not in checks:
            outcomes[name] = Outcome(UNSUPPORTED, config=c.label(),
                                     note=f"SWAP_AB/SPLIT_K select SGLang's Hopper kernel, which runs on sm90 only "
                                          f"(this GPU: sm{run_arch})")
            continue
        check = checks[c]
        if check.status:
            outcomes[name] = Outcome(check.status, config=c.label(), note=check.note)
        elif not check.right:
            outcomes[name] = Outcome(WRONG_RESULT, rel_error=check.rel_error, config=c.label(),
                                     note=f"relative error {check.rel_error:.3g} > {MAX_RELATIVE_ERROR}; not timed")
        else:
            note = f"{shape.compare_engines}'s file name" if name == "compare" else ""
            outcomes[name] = Outcome(OK, rel_error=check.rel_error, config=c.label(), note=note)
            launchers[name] = workload.launcher(c)

    if not backend.on_gpu or not settings.cublas:
        outcomes["cublas"] = Outcome(SKIPPED, note="interpreter backend: no GPU" if not backend.on_gpu
                                     else "verify_settings.cublas is false")
    else:
        try:
            layout, launch = cublas_launcher(workload, OUT_DTYPES[shape.out_dtype])
        except Exception as e:  # noqa: BLE001
            note = str(e)[:400] if isinstance(e, NotImplementedError) else error_note(e)
            outcomes["cublas"] = Outcome(UNSUPPORTED, note=note)
        else:
            config = f"torch._scaled_mm 1x128 x 128x128, {layout}"
            try:
                result = launch(0).clone()
                if corrupt is not None and corrupt("cublas"):
                    result.view(-1)[:: max(1, result.numel() // 7)] += 1.0
                err = relative_error(result, workload.ref)
            except Exception as e:  # noqa: BLE001
                outcomes["cublas"] = Outcome(launch_failure(e), config=config, note=error_note(e))
            else:
                if err <= MAX_RELATIVE_ERROR:
                    outcomes["cublas"] = Outcome(OK, rel_error=err, config=config)
                    launchers["cublas"] = launch
                else:
                    outcomes["cublas"] = Outcome(WRONG_RESULT, rel_error=err, config=config,
                                                 note=f"relative error {err:.3g} > {MAX_RELATIVE_ERROR}; not timed")

    # Time every right contender side by side: a short first pass sizes the batches.
    names = list(launchers)
    first = bench.median_us([launchers[n] for n in names], 1, 3)
    launches = [launches_for(t, settings.budget_us) for t in first]
    for name, t in zip(names, bench.median_us([launchers[n] for n in names], launches, settings.rounds)):
        outcomes[name].time_us = t

    row: dict[str, object] = {"N": N, "K": K, "M": M, **shape.extra}
    for name in CONTENDERS:
        o = outcomes[name]
        row.update({f"{name}_config": o.config, f"{name}_status": o.status, f"{name}_us": o.time_us,
                    f"{name}_rel_error": o.rel_error, f"{name}_note": o.note})
    row["compare_key"] = nearest_key(shape.compare, M) if shape.compare else ""
    row["compare_file"] = os.path.basename(shape.compare_file) if shape.compare else ""
    row["control_us"] = outcomes["control"].time_us if outcomes["control"].status == OK else math.nan
    timed_spots = [n for n in configs if n.startswith("spot") and outcomes[n].status == OK]
    row["spot_n"] = len(timed_spots)
    best_spot = min(timed_spots, key=lambda n: outcomes[n].time_us, default=None)
    row["spot_best_config"] = outcomes[best_spot].config if best_spot else ""
    row["spot_best_us"] = outcomes[best_spot].time_us if best_spot else math.nan

    out_bytes = workload.out.element_size()
    row["bytes"] = point_bytes(M, N, K, block_shape, out_bytes)
    row["flops"] = point_flops(M, N, K)
    if limits is None or not limits.usable:
        row["roofline_us"] = math.nan
        row["roofline_note"] = ("skipped: interpreter backend, no GPU" if not backend.on_gpu
                                else "skipped: verify_settings.roofline is false" if not settings.roofline
                                else f"not measured: {limits.note if limits else ''}")
        row["bandwidth_gbs"] = row["fp8_peak_tflops"] = math.nan
    else:
        row["roofline_us"] = roofline_us(M, N, K, block_shape, out_bytes, limits)
        row["roofline_note"] = limits.note
        row["bandwidth_gbs"] = limits.bandwidth_gbs
        row["fp8_peak_tflops"] = limits.fp8_peak_tflops
    add_ratios(row)
    log(f"M={M}: " + ", ".join(
        f"{n} {outcomes[n].status}" + (f" {outcomes[n].time_us:.2f} us" if outcomes[n].status == OK else "")
        for n in CONTENDERS) + f", control {row['control_us']:.2f} us, spot check {row['spot_n']} configs, "
        f"regret {row['regret']:.3f}"
        + (f", roofline {row['roofline_us']:.2f} us" if math.isfinite(row["roofline_us"]) else ""))
    return row


def missing_compare_files(compare_dir: str, N: int, K: int, device_name: str, block_shape, input_type: str) -> str:
    """Every name compare_dir was searched for, in order (vLLM's spelling, then SGLang's)."""
    names = dict.fromkeys(config_file_name(N, K, device_name, block_shape, input_type=input_type, engine=e)
                          for e in ENGINES)
    return " or ".join(os.path.join(compare_dir, name) for name in names)


def _kind(name: str) -> str:
    """The contender group a name belongs to, as the test hook names it."""
    return "spot" if name.startswith("spot") else "tuned" if name == "control" else name


def verify_job(out_tsv: str, N: int, K: int, tuned_json: str, tsvs: dict[int, str], compare_dir: str | None,
               device_name: str, block_shape, out_dtype: str, backend_name: str, triton_cache: str,
               settings: VerifySettings, log: Callable[[str], None] = print, *, input_type: str,
               kernel: str, compile_workers: int = 1, engine: str = "vllm") -> None:
    """Take a GPU slot (as a tune job does), check the GPU, verify every batch size of the shape's JSON."""
    from w8a8_tuner.jobs import slots
    from w8a8_tuner.jobs.point import check_device
    from w8a8_tuner.search.backend import prepare

    started = time.time()
    backend = prepare(backend_name, triton_cache)
    with slots.held(backend.on_gpu, log) as slot:
        limits = None
        bench = backend.bench()
        if backend.on_gpu:
            index = slots.pin_to(slot)
            import torch

            torch.cuda.set_device(index)
            check_device(device_name, index, out_tsv)
            log(f"torch {torch.__version__}, GPU {torch.cuda.get_device_name(index)}")
            if settings.roofline:
                from w8a8_tuner.verify.roofline import measure_limits

                limits = measure_limits(bench, log)
        compare_file = compare_file_for(compare_dir, N, K, device_name, block_shape, input_type=input_type)
        spelling = " and ".join(engines_reading(os.path.basename(compare_file), N, K, device_name, block_shape,
                                                input_type=input_type)) if compare_file else ""
        rows, plain = read_points(tsvs)
        shape = ShapeInputs(
            N=N, K=K, tuned=load_config_file(tuned_json), rows=rows, plain=plain,
            compare=load_config_file(compare_file) if compare_file else None,
            compare_file=compare_file or (missing_compare_files(compare_dir, N, K, device_name, block_shape, input_type)
                                          if compare_dir else ""),
            compare_engines=spelling,
            block_shape=tuple(block_shape), out_dtype=out_dtype, input_type=input_type, kernel=kernel, engine=engine,
            extra={"device_name": device_name, "backend": backend.name})
        log(f"tuned: {tuned_json} (kernel {kernel}, input_type {input_type}); compare: "
            + (f"{compare_file} ({spelling}'s file name)" if compare_file else "none"))
        corrupt = hooks.corrupt_predicate()
        if corrupt:
            log(f"TEST HOOK {hooks.CORRUPT_ENV}: corrupting the output of {os.environ[hooks.CORRUPT_ENV]}")
        rows = [verify_point(shape, M, settings, backend, bench, limits, corrupt, log, compile_workers)
                for M in sorted(shape.tuned)]
        write_rows(out_tsv, rows)
        log(f"wrote {out_tsv} in {time.time() - started:.1f} s")
