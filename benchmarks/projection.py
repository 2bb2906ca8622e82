"""Project a sweep onto a node with more GPUs: replay measured costs through the real Snakemake scheduler.

Every part of a sweep runs for real (Snakemake, GPU slot locks on fake GPUs, the job client, the
persistent workers, compile jobs and the tune workers' compile pools, per-config locks and outcome
files, streaming, aggregate) except two, which sleep their measured time instead (w8a8_tuner.standin):
compiling one config (on one of the node's simulated compile cores: cores - GPUs, shared through a
semaphore, so an oversubscribed node compiles no faster than it would) and a point's GPU work.

    # 1. costs from a finished GPU sweep (its working folder: results/<device>/, logs/<device>/)
    python3 -m benchmarks.projection costs /tmp/wf-sweep --out costs.json
    #    or costs made up in the shape of a sweep (default: the workflow's default config), e.g. the
    #    252-point DeepSeek-V3 TP=8 sweep of BENCHMARKS.md in vLLM's 1280-config space
    python3 -m benchmarks.projection synthetic --device NVIDIA_H200 --out costs.json \
        --configfile benchmarks/configs/deepseek_v3_tp8_14_shapes.yaml --config search_space=vllm
    # 2. replay them on 1 GPU / 16 cores and 8 GPUs / 128 cores, every sleep divided by 2
    python3 -m benchmarks.projection run costs.json --out projection/ --nodes 1x16,8x128 --time-scale 2
    # 3. (optional) the report again from finished run folders, the speedup's base first
    python3 -m benchmarks.projection report costs.json RUNS/1gpu_16cores_scale2 RUNS/8gpu_128cores_scale2 --out DIR

`run` writes OUT/report.txt (what it found and the bottleneck), OUT/summary.tsv (one row per node),
OUT/jobs_<node>.tsv (one row per tune job) and OUT/runs.json. Snakemake's own per-job work, process starts
and the client/worker handoff are not scaled (they take what they take on this machine, whose cores all the
simulated node's processes share); the report measures them and projects each run back to real time:
what the stand-in slept x S plus the rest as measured. The runs use a copy of the workflow and the package
(an edit of the tree mid-run would restart the workers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmarks import common
from w8a8_tuner.plan.config import apply_aliases
from w8a8_tuner.standin import FORMAT, CpuCores, point_key

DEFAULT_NODES = "1x16,8x128"
FIRST_ROUND_PHASES = ("compile", "check")  # the rest (estimate, screen, re-measure) is the rest of a point
COMPILED_OK = ("ok", "wrong_result", "launch_error")  # statuses of configs that compiled and were checked


# --- what one tune job's log and TSV header say ----------------------------------------------------------
ACQUIRED = re.compile(r"^slot (\S+) \(index \d+\).*? acquired_at ([\d.]+)", re.M)
RELEASED = re.compile(r"^slot \S+ released_at ([\d.]+)", re.M)
PHASE = re.compile(r"^\[\s*([\d.]+) s\] ([A-Za-z-]+)", re.M)
STANDIN_GPU = re.compile(r"stand-in: GPU ([\d.]+) s, waiting for compiles (-?[\d.]+) s")
WORKER_START = re.compile(r"^stand-in: worker start ([\d.]+) s, compile pool .* started in ([\d.]+) s", re.M)
META = re.compile(r"^# (\w+): (.*)$", re.M)


@dataclass
class Job:
    N: int
    K: int
    M: int
    slot: str = ""
    acquired: float = math.nan
    released: float = math.nan
    started: float = math.nan    # the worker's start and end of the point (TSV header)
    finished: float = math.nan
    phases: dict[str, float] = field(default_factory=dict)
    standin_gpu_s: float = math.nan    # stand-in only: first-round GPU sleeps, compile waits, worker start
    standin_wait_s: float = math.nan
    worker_start_s: float = 0.0        # as the costs file says (slept / scale)
    pool_start_s: float = 0.0          # the compile pool's start, as measured (not scaled)

    @property
    def first_round_s(self) -> float:
        return sum(v for k, v in self.phases.items() if k in FIRST_ROUND_PHASES)

    @property
    def rest_s(self) -> float:
        return sum(v for k, v in self.phases.items() if k not in FIRST_ROUND_PHASES)

    @property
    def unphased_s(self) -> float:
        """The worker's time on the point outside the search's phases: operands, reference, TSV (and, on a
        worker's first point, the CUDA context); 0 where unknown."""
        other = self.finished - self.started - sum(self.phases.values())
        return 0.0 if math.isnan(other) else max(0.0, other)


def read_job(N: int, K: int, M: int, log: Path | None, tsv: Path | None) -> Job:
    job = Job(N, K, M)
    text = log.read_text(errors="replace") if log and log.exists() else ""
    if m := ACQUIRED.search(text):
        job.slot, job.acquired = m.group(1), float(m.group(2))
    if m := RELEASED.search(text):
        job.released = float(m.group(1))
    for seconds, name in PHASE.findall(text):
        job.phases[name] = job.phases.get(name, 0.0) + float(seconds)
    if m := STANDIN_GPU.search(text):
        job.standin_gpu_s, job.standin_wait_s = float(m.group(1)), float(m.group(2))
    if m := WORKER_START.search(text):
        job.worker_start_s, job.pool_start_s = float(m.group(1)), float(m.group(2))
    if tsv and tsv.exists():
        meta = dict(META.findall(tsv.read_text(errors="replace")[:4000]))
        job.started, job.finished = _float(meta.get("started")), _float(meta.get("finished"))
    return job


def _float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def sweep_folder(results: Path, fingerprint: str | None = None) -> Path:
    """The tune folder of the sweep: the fingerprint given, else the one with the most TSVs."""
    folders = [fingerprint and results / "tune" / fingerprint] if fingerprint else sorted(
        (results / "tune").glob("*/"), key=lambda p: len(list(p.glob("N*_K*/M*.tsv"))))
    if not folders or not folders[-1].is_dir():
        raise SystemExit(f"no sweep folder under {results / 'tune'}")
    return folders[-1]


def read_jobs(workdir: Path, device: str, sweep: Path) -> list[Job]:
    """Every tune job of the sweep: its TSV and its log, where they exist."""
    logs = workdir / "logs" / device / "tune"
    found: dict[tuple[int, int, int], tuple[Path | None, Path | None]] = {}
    for tsv in sweep.glob("N*_K*/M*.tsv"):
        found[_nkm(tsv)] = (None, tsv)
    for log in logs.glob("N*_K*/M*.log"):
        found[_nkm(log)] = (log, found.get(_nkm(log), (None, None))[1])
    return [read_job(*nkm, log, tsv) for nkm, (log, tsv) in sorted(found.items())]


def _nkm(path: Path) -> tuple[int, int, int]:
    n, k = re.fullmatch(r"N(\d+)_K(\d+)", path.parent.name).groups()
    return int(n), int(k), int(path.stem[1:])


def find_device(workdir: Path, device: str | None) -> str:
    if device:
        return device
    names = [p.name for p in (workdir / "results").glob("*/") if (p / "tune").is_dir()]
    if len(names) != 1:
        raise SystemExit(f"{workdir / 'results'} holds {names or 'no'} device folders: name one with --device")
    return names[0]


# --- costs from a finished sweep ---------------------------------------------------------------------
def build_costs(workdir: Path, device: str | None = None, fingerprint: str | None = None,
                compile_scale: float = 1.0) -> dict:
    """The costs file (w8a8_tuner.standin) of a GPU sweep's working folder. Whatever is missing takes a mean:
    a point without a log the median point, a config without an outcome its specialization's mean."""
    from w8a8_tuner.plan.settings import variant
    from w8a8_tuner.search.compile import Point, specialization_key, target_arch

    device = find_device(workdir, device)
    results = workdir / "results" / device
    sweep = sweep_folder(results, fingerprint)
    settings = json.loads((sweep / "settings.json").read_text()) if (sweep / "settings.json").exists() else {}
    block_shape = tuple(settings.get("block_shape", (128, 128)))
    out_dtype = settings.get("out_dtype", "bfloat16")
    arch = target_arch(device)
    jobs = read_jobs(workdir, device, sweep)
    spec_of = {(j.N, j.K, j.M): specialization_key(Point(j.M, j.N, j.K, block_shape, out_dtype, **variant(settings)))
               for j in jobs}
    compile_costs = _compile_costs(results, sweep, arch, compile_scale)
    rows = {(j.N, j.K, j.M): _tsv_rows(sweep / f"N{j.N}_K{j.K}" / f"M{j.M}.tsv") for j in jobs}
    ready = _ready_times(results, sweep, arch)
    points, notes = _point_costs(jobs, rows, spec_of, ready)
    if not points:
        raise SystemExit(f"no tune job under {workdir / 'logs' / device / 'tune'} has both a log with phase lines "
                         f"and a TSV with compiled configs: nothing to replay")
    if not compile_costs:
        notes.append("no compile outcome found (triton_cache/w8a8_compiled or the compile jobs' TSVs): "
                     "compiles take no time")
    else:
        notes.append("compile seconds are each compile's wall time (x --compile-scale): where a tune worker's "
                     "pool and a compile job shared the cores, that includes waiting for one")
    defaults = {key: statistics.median(p[key] for p in points.values()) if points else 0.0
                for key in ("first_round_s_per_config", "rest_s")}
    all_compile = [s for spec in compile_costs.values() for s, _ in spec["configs"].values()]
    return {
        "format": FORMAT, "source": str(workdir.resolve()), "device_name": device, "settings": settings,
        "compile": compile_costs, "compile_mean_s": statistics.fmean(all_compile) if all_compile else 0.0,
        "points": points, "defaults": defaults, "worker_start_s": _worker_start(jobs),
        "sweep": _sweep_facts(jobs, workdir, device), "notes": notes,
    }


def _tsv_rows(tsv: Path) -> list[dict]:
    """Rows of a point's TSV as dicts (status, time_us, config label); [] if unreadable."""
    try:
        lines = [line for line in tsv.read_text().splitlines() if line and not line.startswith("#")]
    except OSError:
        return []
    header, rows = lines[0].split("\t"), []
    for line in lines[1:]:
        cells = dict(zip(header, line.split("\t")))
        cells["label"] = "M{}_N{}_K{}_G{}_w{}_s{}".format(*(cells.get(p, "") for p in (
            "BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")))
        rows.append(cells)
    return rows


def _outcome_folders(results: Path, arch: int | None) -> list[Path]:
    """Per-spec outcome folders of the Triton cache (w8a8_compiled/sm<arch>/<spec>/), if the cache was kept."""
    base = results / "triton_cache" / "w8a8_compiled"
    archs = [base / f"sm{arch}"] if arch and (base / f"sm{arch}").is_dir() else sorted(base.glob("sm*"))
    return [spec for folder in archs for spec in sorted(folder.glob("*/"))]


def _compile_costs(results: Path, sweep: Path, arch: int | None, scale: float) -> dict:
    """{spec: {"mean_s", "configs": {label: [seconds, status]}}}: from the outcome files, else the compile
    jobs' TSVs (they list every outcome of their specialization, whoever compiled it)."""
    found: dict[str, dict[str, list]] = {}
    for folder in _outcome_folders(results, arch):
        for path in folder.glob("*.json"):
            try:
                outcome = json.loads(path.read_text())
                seconds = outcome.get("cpu_s") or outcome["seconds"]  # CPU seconds where recorded, else wall
                found.setdefault(folder.name, {})[path.stem] = [float(seconds) * scale, outcome["status"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue
    for tsv in sorted((sweep / "compile").glob("*.tsv")):
        if tsv.stem in found:
            continue
        for line in tsv.read_text().splitlines()[1:]:
            label, status, seconds, *_ = line.split("\t") + [""]
            if not math.isnan(_float(seconds)):
                found.setdefault(tsv.stem, {})[label] = [_float(seconds) * scale, status]
    return {spec: {"mean_s": statistics.fmean(s for s, _ in configs.values()), "configs": configs}
            for spec, configs in sorted(found.items())}


def _ready_times(results: Path, sweep: Path, arch: int | None) -> dict[str, dict[str, float] | float]:
    """When each config's outcome was on disk (outcome file times), else when its specialization's compile
    job ended (its TSV's time): a point that started later spent its compile phase on the GPU alone."""
    ready: dict = {}
    for folder in _outcome_folders(results, arch):
        ready[folder.name] = {p.stem: p.stat().st_mtime for p in folder.glob("*.json")}
    for tsv in (sweep / "compile").glob("*.tsv"):
        ready.setdefault(tsv.stem, tsv.stat().st_mtime)
    return ready


def _clean(job: Job, labels: list[str], ready) -> bool:
    """Was every config the point compiles ready before the point started?"""
    if ready is None or math.isnan(job.started):
        return False
    if isinstance(ready, float):
        return ready <= job.started
    return all(ready.get(label, math.inf) <= job.started for label in labels)


def _point_costs(jobs: list[Job], rows: dict, spec_of: dict, ready: dict) -> tuple[dict, list[str]]:
    """Per point: first-round GPU seconds per compiled config, and the rest. The log's compile phase is
    check + one timing round, plus any wait for compiles: points whose configs were all compiled before
    they started measure the GPU alone; they fit first_round = a x configs + b x their summed times, and the
    other points take min(measured, fitted)."""
    facts = {}
    for j in jobs:
        r = rows.get((j.N, j.K, j.M), [])
        compiled = [x for x in r if x.get("status") in COMPILED_OK]
        if not j.phases or not compiled:
            continue
        sum_s = sum(_float(x.get("time_us")) * 1e-6 for x in r if x.get("status") == "ok"
                    and not math.isnan(_float(x.get("time_us"))))
        todo = [x["label"] for x in r if x.get("status") != "pruned"]
        clean = _clean(j, todo, ready.get(spec_of[(j.N, j.K, j.M)]))
        facts[(j.N, j.K, j.M)] = (j, len(compiled), sum_s, clean)
    a, b = _fit([(n, s, j.first_round_s) for j, n, s, clean in facts.values() if clean])
    firsts = {id(j) for j in _first_jobs(jobs)}
    usual = statistics.median([j.unphased_s for j in jobs if id(j) not in firsts] or [0.0])
    clean_points = sum(f[3] for f in facts.values())
    notes = [f"{clean_points} of {len(facts)} points had every config compiled before they started; "
             + (f"the others' first round fitted on them: {a * 1e3:.2f} ms per config + {b:.2f} x the summed "
                "config times" if clean_points else "the first rounds include compile waits (an upper bound)")]
    points = {}
    for (N, K, M), (j, n, sum_s, clean) in facts.items():
        first = j.first_round_s if clean or not clean_points else min(j.first_round_s, a * n + b * sum_s)
        # A worker's first point also made its CUDA context: counted in the worker's start (_worker_start).
        other = min(j.unphased_s, usual) if id(j) in firsts else j.unphased_s
        points[point_key(N, K, M)] = {"first_round_s_per_config": first / n, "rest_s": j.rest_s + other,
                                      "compiled": n, "clean": clean}
    return points, notes


def _fit(samples: list[tuple[int, float, float]]) -> tuple[float, float]:
    """Least squares y = a n + b s (a, b >= 0) over (n, s, y); (0, 0) without samples."""
    if not samples:
        return 0.0, 0.0
    snn = sum(n * n for n, _, _ in samples)
    sss = sum(s * s for _, s, _ in samples)
    sns = sum(n * s for n, s, _ in samples)
    sny = sum(n * y for n, _, y in samples)
    ssy = sum(s * y for _, s, y in samples)
    det = snn * sss - sns * sns
    if det > 1e-12 * snn * max(sss, 1e-30):
        a, b = (sny * sss - ssy * sns) / det, (ssy * snn - sny * sns) / det
        if a >= 0 and b >= 0:
            return a, b
    return sny / snn, 0.0  # per config alone


def _first_jobs(jobs: list[Job]) -> list[Job]:
    """The first job of each slot: the one that started the slot's worker."""
    first: dict[str, Job] = {}
    for j in sorted((j for j in jobs if j.slot and not math.isnan(j.acquired)), key=lambda j: j.acquired):
        first.setdefault(j.slot, j)
    return list(first.values())


def _worker_start(jobs: list[Job]) -> float:
    """Median over slots of a worker's start: what the slot's first job waited for it (slot taken -> point
    started), plus what its point took outside the phases beyond the usual (the CUDA context)."""
    firsts = _first_jobs(jobs)
    usual = statistics.median([j.unphased_s for j in jobs if j not in firsts] or [0.0])
    waits = [j.started - j.acquired + max(0.0, j.unphased_s - usual) for j in firsts if not math.isnan(j.started)]
    return max(0.0, statistics.median(waits)) if waits else 0.0


def _sweep_facts(jobs: list[Job], workdir: Path, device: str) -> dict:
    """What the measured sweep itself took, for the report's comparison."""
    timed = [j for j in jobs if not math.isnan(j.acquired) and not math.isnan(j.released)]
    gaps = _gaps(timed)
    compile_s = [float(m.group(1)) for log in (workdir / "logs" / device / "compile").glob("*.log")
                 if (m := re.search(r" in ([\d.]+) s with", log.read_text(errors="replace")))]
    return {
        "points": len(jobs), "slots": len({j.slot for j in timed}),
        "tune_span_s": max(j.released for j in timed) - min(j.acquired for j in timed) if timed else 0.0,
        "slot_held_s": sum(j.released - j.acquired for j in timed),
        "job_gap_s_median": statistics.median(gaps) if gaps else math.nan,
        "compile_jobs": len(compile_s), "compile_jobs_s": sum(compile_s),
    }


def _gaps(jobs: list[Job]) -> list[float]:
    """Per slot, the time between one job's release and the next job's acquire (Snakemake's per-job work)."""
    gaps = []
    by_slot: dict[str, list[Job]] = {}
    for j in jobs:
        by_slot.setdefault(j.slot, []).append(j)
    for slot_jobs in by_slot.values():
        slot_jobs.sort(key=lambda j: j.acquired)
        gaps += [b.acquired - a.released for a, b in zip(slot_jobs, slot_jobs[1:])]
    return gaps


# --- synthetic costs in the shape of a sweep -----------------------------------------------------------
def synthetic_costs(config: dict, compile_s: float, first_round_ms: float, rest_s: float, worker_start_s: float,
                    spread: float = 0.5) -> dict:
    """Costs made up for the sweep `config` (schema defaults filled in: DeepSeek-V3 TP=8, vLLM's space): each
    config of each specialization compiles in compile_s x (1 +- spread) (stable per config, mean compile_s)."""
    from w8a8_tuner.plan.settings import result_settings, variant
    from w8a8_tuner.plan.sweep import make_plan
    from w8a8_tuner.search.compile import Point, specialization_key
    from w8a8_tuner.search.space import settings_configs, timed_at

    plan = make_plan(config)
    settings = result_settings(plan, config["tuning"])
    prune = settings["search"].get("prune_accumulators", 0)
    needed: dict[str, set] = {}
    for n, k, m in plan.points():
        spec = specialization_key(Point(m, n, k, plan.block_shape, plan.out_dtype, **variant(settings)))
        needed.setdefault(spec, set()).update(timed_at(list(settings_configs(settings, m)), m, k, prune))
    compile_costs = {}
    for spec, configs in sorted(needed.items()):
        seconds = {c.label(): [round(compile_s * (1 - spread + 2 * spread * (zlib.crc32(
            f"{spec}|{c.label()}".encode()) % 1000) / 999), 4), "ok"] for c in sorted(configs)}
        compile_costs[spec] = {"mean_s": statistics.fmean(s for s, _ in seconds.values()), "configs": seconds}
    point = {"first_round_s_per_config": first_round_ms / 1e3, "rest_s": rest_s}
    return {
        "format": FORMAT, "source": f"synthetic: compile {compile_s} s/config (+-{spread:.0%}), first round "
                                    f"{first_round_ms} ms/config, rest {rest_s} s/point",
        "device_name": plan.device_name, "settings": settings,
        "compile": compile_costs, "compile_mean_s": compile_s,
        "points": {point_key(n, k, m): dict(point) for n, k, m in plan.points()},
        "defaults": dict(point), "worker_start_s": worker_start_s, "sweep": {}, "notes": [],
    }


# --- one projected run -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    gpus: int
    cores: int
    scale: float  # every stand-in sleep is divided by it

    @property
    def name(self) -> str:
        return f"{self.gpus}gpu_{self.cores}cores_scale{self.scale:g}"


def parse_nodes(text: str, scale: float) -> list[Node]:
    """"1x16,8x128@1": GPUS x CORES, each with its own time scale after '@' (default `scale`)."""
    nodes = []
    for part in text.split(","):
        size, _, own_scale = part.partition("@")
        gpus, cores = size.lower().split("x")
        nodes.append(Node(int(gpus), int(cores), float(own_scale or scale)))
    return nodes


def sweep_config(costs: dict) -> dict:
    """The workflow config that tunes exactly the costs' points (their shapes x batch sizes) on fake GPUs."""
    points = [tuple(int(v) for v in re.fullmatch(r"N(\d+)_K(\d+)_M(\d+)", key).groups()) for key in costs["points"]]
    settings = costs.get("settings", {})
    config = {
        "device_name": costs["device_name"], "backend": "cuda",
        "shapes": [list(s) for s in sorted({(n, k) for n, k, _ in points})],
        "batch_sizes": sorted({m for _, _, m in points}),
        "tuning": {"compile_workers": "auto", "persistent_worker": True},
    }
    for key in ("block_shape", "out_dtype", "search_space", "input_type", "kernel"):
        if key in settings:
            config[key] = settings[key]
    config["search_space_extra"] = settings.get("search_space_extra", [])  # left out of settings where none
    return config


def run_node(costs: dict, node: Node, root: Path, timeout_s: float, snakemake_args: list[str]) -> dict:
    """Run the real snakemake on `node`'s fake GPUs with the stand-in; what it measured. The runs use this
    checkout's code: an edit of it while they run gives the workers a new code version (they restart)."""
    from w8a8_tuner.hooks import STANDIN_ENV
    from w8a8_tuner.jobs.slots import FAKE_GPUS_ENV, LOCK_DIR_ENV

    wd = root / node.name
    (wd / "config").mkdir(parents=True)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(sweep_config(costs)))
    cores = CpuCores.create(max(1, node.cores - node.gpus))  # what compile jobs' threads get: one core per GPU job
    run_costs = {**costs, "time_scale": node.scale, "cpu_semaphore": cores.semid,
                 "compile_log": str(wd / "compiled.tsv")}
    (wd / "standin.json").write_text(json.dumps(run_costs))
    env = {**os.environ, FAKE_GPUS_ENV: str(node.gpus), STANDIN_ENV: str(wd / "standin.json"),
           LOCK_DIR_ENV: str(wd / "locks")}
    for name in ("TRITON_INTERPRET", "TRITON_CACHE_DIR", "CUDA_VISIBLE_DEVICES"):  # the workflow sets its own
        env.pop(name, None)
    cmd = [snakemake_command(), "-s", str(common.REPO / "Snakefile"), "-d", str(wd),
           "--cores", str(node.cores), "--resources", f"gpu={node.gpus}", *snakemake_args]
    load_before, t0 = os.getloadavg()[0], time.time()
    try:
        rc, snakemake_cpu_s = _run_timed(cmd, wd, env, timeout_s)
    finally:
        t1 = time.time()
        stop_workers(wd / "locks")
        cores.remove()
    if rc != 0:
        tail = (wd / "snakemake.out").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"snakemake on {node.name} exited {rc}; its output ends:\n{tail}")
    facts = {"gpus": node.gpus, "cores": node.cores, "scale": node.scale, "t0": t0, "t1": t1,
             "snakemake_cpu_s": snakemake_cpu_s, "load_before": load_before, "load_after": os.getloadavg()[0]}
    (wd / "run.json").write_text(json.dumps(facts))
    return remeasure(wd, costs)


def remeasure(wd: Path, costs: dict) -> dict:
    """What the run in `wd` measured (its run.json and its logs), projected."""
    facts = json.loads((wd / "run.json").read_text())
    node = Node(facts["gpus"], facts["cores"], facts["scale"])
    return {**measure(wd, costs, node, facts["t0"], facts["t1"]),
            **{k: facts[k] for k in ("snakemake_cpu_s", "load_before", "load_after")}}


def _run_timed(cmd: list[str], wd: Path, env: dict, timeout_s: float) -> tuple[int, float]:
    """Run snakemake; its exit status and the CPU seconds of its own process (the scheduler: one process,
    whatever the node's cores), read from /proc while it runs."""
    deadline, cpu_s = time.monotonic() + timeout_s, 0.0
    with open(wd / "snakemake.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=wd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                cpu_s = _cpu_seconds(proc.pid) or cpu_s
                try:
                    return proc.wait(timeout=0.5), cpu_s
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise
        except BaseException:  # timed out or interrupted: snakemake and its jobs (the workers: stop_workers)
            os.killpg(proc.pid, signal.SIGKILL)
            raise


def _cpu_seconds(pid: int) -> float:
    fields = _read(f"/proc/{pid}/stat").decode(errors="replace").rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if len(fields) > 12 else 0.0


def snakemake_command() -> str:
    beside = Path(sys.executable).with_name("snakemake")
    return str(beside) if beside.exists() else (shutil.which("snakemake") or "snakemake")


def stop_workers(lock_dir: Path) -> None:
    """End the persistent workers this run started (found by its lock folder in their environment) and
    their compile pools, by pid: they would otherwise wait out their idle time."""
    from w8a8_tuner.jobs.slots import LOCK_DIR_ENV

    mark = f"{LOCK_DIR_ENV}={lock_dir}".encode()
    workers = [pid for pid in _pids() if b"w8a8_tuner.jobs.worker" in _read(f"/proc/{pid}/cmdline")
               and mark in _read(f"/proc/{pid}/environ").split(b"\0")]
    doomed = workers + [c for w in workers for c in _descendants(w)]
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30  # a kill takes effect asynchronously: wait until they are gone
    while time.monotonic() < deadline and any(_alive(pid) for pid in doomed):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Still running (a zombie, waiting for its parent to reap it, has ended)."""
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(b")", 1)[-1].split()[:1] != [b"Z"]


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _pids():
        stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
        if ")" in stat:
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# --- what a run measured, projected back to real time -------------------------------------------------
SLOT_PARTS = ("GPU work", "waiting for compiles", "worker start", "in-slot overhead", "gaps between jobs",
              "before the first job", "idle at the end", "after the last point")
HELD = SLOT_PARTS[:4]  # the slot is held by a job


def measure(wd: Path, costs: dict, node: Node, t0: float, t1: float) -> dict:
    """The run's numbers in real seconds. What the stand-in slept is multiplied by `scale`; the rest
    (Snakemake's work between jobs, process starts, the client/worker handoff) is taken as measured. Each
    slot's time is split into SLOT_PARTS; summed over the slots they make gpus x the projected wall."""
    device, scale = costs["device_name"], node.scale
    jobs = [j for j in read_jobs(wd, device, sweep_folder(wd / "results" / device)) if j.slot]
    by_slot: dict[str, list[Job]] = {}
    for j in sorted(jobs, key=lambda j: j.acquired):
        by_slot.setdefault(j.slot, []).append(j)
    slots = {slot: _project_slot(js, scale, t0) for slot, js in sorted(by_slot.items())}
    after_last = t1 - max(j.released for j in jobs)  # aggregate (and compile) jobs after the last point
    ends = {slot: s.pop("end") for slot, s in slots.items()}
    wall = max(ends.values()) + after_last
    for slot, s in slots.items():
        s["idle at the end"] = wall - after_last - ends[slot]
        s["after the last point"] = after_last
    parts = {name: sum(s.get(name, 0.0) for s in slots.values()) for name in SLOT_PARTS}
    compiled = _compile_log(wd / "compiled.tsv")
    compile_cores = max(1, node.cores - node.gpus)
    return {
        "node": node.name, "gpus": node.gpus, "cores": node.cores, "time_scale": scale, "points": len(jobs),
        "wall_s": wall, "wall_scaled_s": t1 - t0, "wall_naive_s": (t1 - t0) * scale,
        "first_tune_job_s": min(j.acquired for j in jobs) - t0,
        "gpu_floor_s": parts["GPU work"] / node.gpus,
        "compile_cpu_s": sum(seconds for _, _, _, seconds in compiled), "compile_cores": compile_cores,
        "compile_jobs_s": _compile_job_seconds(wd / "logs" / device / "compile", scale),
        "job_gap_s_median": _median(_gaps(jobs)),
        "in_slot_overhead_s_median": _median([(j.released - j.acquired) - (j.finished - j.started)
                                              - j.worker_start_s / scale - j.pool_start_s for j in jobs]),
        "pool_start_s_median": _median([j.pool_start_s for j in jobs if j.pool_start_s]),
        "slots": {slot: {"jobs": len(by_slot[slot]), "busy": sum(s[k] for k in HELD) / wall,
                         "gpu": s["GPU work"] / wall} for slot, s in slots.items()},
        "parts_s": parts,
        "excess_s": (excess := _excess(jobs, parts, len(slots))),
        "wall_typical_s": wall - sum(excess.values()) / node.gpus,
        "compiled_configs": len({(spec, label) for spec, label, _, _ in compiled}),
        "compiled_twice": sum(n > 1 for n in Counter((spec, label) for spec, label, _, _ in compiled).values()),
        "compiled_by": dict(Counter(role for _, _, role, _ in compiled)),
        "jobs": [_job_row(j, scale, t0) for j in jobs],
        "compile_wait_first_share": sum(max(0.0, _zero_nan(js[0].standin_wait_s)) * scale for js in by_slot.values())
        / max(parts["waiting for compiles"], 1e-9),
    }


JOB_COLUMNS = ("N", "K", "M", "slot", "acquired_s", "released_s", "point_s", "gpu_s", "compile_wait_s",
               "worker_start_s", "pool_start_s")


def _job_row(j: Job, scale: float, t0: float) -> dict:
    """One tune job as the run saw it: times from the run's start (scaled), and its parts in real seconds."""
    return dict(zip(JOB_COLUMNS, (
        j.N, j.K, j.M, j.slot, j.acquired - t0, j.released - t0, (j.finished - j.started) * scale,
        (_zero_nan(j.standin_gpu_s) + j.rest_s) * scale, max(0.0, _zero_nan(j.standin_wait_s)) * scale,
        j.worker_start_s, j.pool_start_s)))


def _excess(jobs: list[Job], parts: dict, slots: int) -> dict[str, float]:
    """Slot seconds above the typical: gaps between jobs over their median, compile pools' starts over the
    fastest. Their spikes are storms of process starts on this machine's few cores (a compile job's pool),
    which a node of the simulated size would spread over its cores."""
    gaps = parts["gaps between jobs"] - (len(jobs) - slots) * _median(_gaps(jobs))
    pools = [j.pool_start_s for j in jobs if j.pool_start_s]
    return {"gaps between jobs": max(0.0, gaps), "worker start": sum(p - min(pools) for p in pools)}


def _project_slot(jobs: list[Job], scale: float, t0: float) -> dict[str, float]:
    """One slot's parts in real seconds, and where it ends ("end", from the run's start)."""
    parts = Counter({"before the first job": jobs[0].acquired - t0})
    for prev, j in zip([None, *jobs], jobs):
        if prev is not None:
            parts["gaps between jobs"] += j.acquired - prev.released
        worker_start = j.worker_start_s / scale  # as slept
        gpu = _zero_nan(j.standin_gpu_s) + j.rest_s
        wait = max(0.0, _zero_nan(j.standin_wait_s))
        parts["GPU work"] += gpu * scale
        parts["waiting for compiles"] += wait * scale
        parts["worker start"] += worker_start * scale + j.pool_start_s
        parts["in-slot overhead"] += (j.released - j.acquired) - worker_start - j.pool_start_s - gpu - wait
    parts["end"] = sum(parts.values())
    return dict(parts)


def _zero_nan(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def _compile_log(path: Path) -> list[tuple[str, str, str, float]]:
    """(spec, label, who, measured seconds) of every config the stand-in compiled (w8a8_tuner.standin)."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        _, spec, label, who, seconds = line.split("\t")
        rows.append((spec, label, who, float(seconds)))
    return rows


def _compile_job_seconds(folder: Path, scale: float) -> list[float]:
    """Each compile job's own time (its log's line), projected."""
    return sorted(float(m.group(1)) * scale for log in folder.glob("*.log")
                  if (m := re.search(r" in ([\d.]+) s with", log.read_text(errors="replace"))))


# --- the report ----------------------------------------------------------------------------------------
def bottleneck(run: dict) -> str:
    """Name what keeps the run's slots from GPU work, from its numbers (the typical ones: without the spikes
    of process starts that this machine's few cores add, `_excess`)."""
    parts, wall, gpus = run["parts_s"], run["wall_typical_s"], run["gpus"]
    gpu_share = parts["GPU work"] / (gpus * wall)
    losses = {k: v - run["excess_s"].get(k, 0.0) for k, v in parts.items() if k != "GPU work"}
    ranked = sorted(losses, key=losses.get, reverse=True)
    worst = ranked[0]
    share = losses[worst] / (gpus * wall)
    why = {
        "waiting for compiles": f"compile throughput: {run['compile_cpu_s']:.0f} CPU-s of compiling on "
                                f"{run['compile_cores']} cores is {run['compile_cpu_s'] / run['compile_cores']:.0f} s "
                                f"at best, and {run['compile_wait_first_share']:.0%} of the wait is in each slot's "
                                "first point (the first points need every specialization at once); the longest "
                                f"compile job took {max(run['compile_jobs_s'] or [0]):.0f} s",
        "gaps between jobs": f"Snakemake's per-job work: {run['job_gap_s_median']:.2f} s median between one "
                             f"point and the next on a slot (unscaled); its one process used "
                             f"{run['snakemake_cpu_s'] / run['wall_scaled_s']:.0%} of a core",
        "idle at the end": "the tail: slots idle while the last points finish",
        "before the first job": f"startup: {run['first_tune_job_s']:.1f} s before the first tune job (unscaled)",
        "after the last point": "the jobs after the last point (aggregate, compile)",
        "worker start": f"the persistent workers' start (torch, CUDA context) and their compile pools' "
                        f"({run['pool_start_s_median']:.1f} s median, unscaled)",
        "in-slot overhead": f"the client/worker handoff and TSV writing: {run['in_slot_overhead_s_median']:.2f} s "
                            f"median per job (unscaled)",
    }[worst]
    verdict = "GPU-bound" if gpu_share >= 0.85 else "not GPU-bound"
    after = ", ".join(f"{k} {losses[k] / (gpus * wall):.0%}" for k in ranked[1:3])
    return (f"{verdict}: GPU work fills {gpu_share:.0%} of the slots' time (GPU floor {run['gpu_floor_s']:.0f} s "
            f"per slot); the largest loss is {worst} ({share:.0%} of slot time): {why}; then {after}")


SUMMARY_COLUMNS = ("node", "gpus", "cores", "points", "time_scale", "wall_s", "wall_scaled_s", "wall_naive_s",
                   "speedup", "wall_typical_s", "speedup_typical", "gpu_floor_s", "first_tune_job_s",
                   "job_gap_s_median", "in_slot_overhead_s_median", "compile_cpu_s", "compile_cores",
                   "compiled_configs", "compiled_twice", "busy_min", "busy_mean", "snakemake_cpu_s", "load_before",
                   "load_after")


def write_report(runs: list[dict], costs: dict, out: Path) -> str:
    base, base_typical = runs[0]["wall_s"], runs[0]["wall_typical_s"]
    for run in runs:
        run["speedup"], run["speedup_typical"] = base / run["wall_s"], base_typical / run["wall_typical_s"]
        busy = [s["busy"] for s in run["slots"].values()]
        run["busy_min"], run["busy_mean"] = min(busy), statistics.fmean(busy)
    scales = ", ".join(f"{run['time_scale']:g}" for run in runs)
    lines = [f"projection of {len(costs['points'])} points on {costs['device_name']} from {costs['source']}",
             *(f"  costs: {n}" for n in costs.get("notes", [])),
             f"time scale {scales}: every stand-in sleep divided by it; "
             "Snakemake's work, process starts and handoffs are not scaled: they are measured here (on this "
             f"machine's {os.cpu_count()} cores, which all the node's processes share) and added as measured. "
             "wall = projected real time.", ""]
    for run in runs:
        lines += _run_lines(run)
    top = runs[-1]
    lines.append(f"speedup {top['node']} over {runs[0]['node']}: {top['speedup']:.2f}x "
                 f"({'at least' if top['speedup'] >= 6 else 'BELOW'} 6x); {top['speedup_typical']:.2f}x with every gap "
                 "between jobs at its median and every compile pool started as fast as the fastest (their spikes are "
                 "process-start storms of this machine's few cores)")
    lines.append(f"bottleneck on {top['node']}: {bottleneck(top)}")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.txt").write_text(text)
    rows = ["\t".join(SUMMARY_COLUMNS)] + ["\t".join(_cell(run[c]) for c in SUMMARY_COLUMNS) for run in runs]
    (out / "summary.tsv").write_text("\n".join(rows) + "\n")
    (out / "runs.json").write_text(json.dumps(runs, indent=1))
    for run in runs:
        rows = ["\t".join(JOB_COLUMNS)] + ["\t".join(_cell(job[c]) for c in JOB_COLUMNS) for job in run["jobs"]]
        (out / f"jobs_{run['node']}.tsv").write_text("\n".join(rows) + "\n")
    return text


def _run_lines(run: dict) -> list[str]:
    parts = run["parts_s"]
    total = run["gpus"] * run["wall_s"]
    floor = run["compile_cpu_s"] / run["compile_cores"]
    return [
        f"{run['node']}: wall {run['wall_s']:.0f} s (measured {run['wall_scaled_s']:.1f} s scaled; x scale "
        f"{run['wall_naive_s']:.0f} s), GPU floor {run['gpu_floor_s']:.0f} s, first tune job after "
        f"{run['first_tune_job_s']:.1f} s, {run['wall_typical_s']:.0f} s with typical gaps and pool starts; "
        f"load average {run['load_before']:.1f} before, {run['load_after']:.1f} "
        "after",
        "  slot time: " + ", ".join(f"{k} {parts[k]:.0f} s ({parts[k] / total:.0%})" for k in SLOT_PARTS),
        "  per slot (jobs, busy, GPU): " + ", ".join(f"{slot} {s['jobs']} {s['busy']:.0%} {s['gpu']:.0%}"
                                                     for slot, s in run["slots"].items()),
        f"  Snakemake between jobs on a slot: {run['job_gap_s_median']:.2f} s median; in-slot overhead "
        f"{run['in_slot_overhead_s_median']:.2f} s median (both unscaled); Snakemake's own process used "
        f"{run['snakemake_cpu_s']:.0f} CPU-s: {run['snakemake_cpu_s'] / run['wall_scaled_s']:.0%} of a core over "
        f"this run, {run['snakemake_cpu_s'] / run['wall_s']:.0%} over the projected one",
        f"  compiling: {run['compiled_configs']} configs ({run['compiled_twice']} twice), "
        f"{run['compile_cpu_s']:.0f} CPU-s on {run['compile_cores']} cores = {floor:.0f} s at best; "
        f"by {run['compiled_by']}; compile jobs took "
        f"{', '.join(f'{s:.0f}' for s in run['compile_jobs_s'])} s",
        f"  bottleneck: {bottleneck(run)}", "",
    ]


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


# --- command line ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("costs", help="costs.json from a finished GPU sweep's working folder")
    c.add_argument("workdir", type=Path, help="the folder holding results/<device>/ and logs/<device>/")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--device", help="the device folder (default: the only one)")
    c.add_argument("--fingerprint", help="the sweep's settings folder (default: the one with most TSVs)")
    c.add_argument("--compile-scale", type=float, default=1.0,
                   help="multiply measured compile seconds (they are wall times: <1 where the sweep oversubscribed)")
    s = sub.add_parser("synthetic", help="costs.json made up for a sweep config (default: DeepSeek-V3 TP=8)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--device", default="NVIDIA_H200")
    s.add_argument("--configfile", type=Path, help="YAML over the schema's defaults (shapes, space, ...)")
    s.add_argument("--config", action="append", default=[], metavar="KEY=YAML",
                   help="a config value over those, as snakemake's --config (e.g. search_space=vllm)")
    s.add_argument("--compile-s", type=float, default=0.6, help="mean CPU seconds to compile one config")
    s.add_argument("--first-round-ms", type=float, default=2.0, help="GPU ms per config: check + one round")
    s.add_argument("--rest-s", type=float, default=0.8, help="GPU seconds of the rest of a point")
    s.add_argument("--worker-start-s", type=float, default=5.0, help="a worker's start: torch, CUDA context")
    r = sub.add_parser("run", help="replay costs.json through snakemake on fake GPUs")
    r.add_argument("costs", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--nodes", default=DEFAULT_NODES,
                   help="GPUSxCORES[@SCALE],... (the first is the speedup's base; @SCALE: its own time scale)")
    r.add_argument("--time-scale", type=float, default=2.0, help="divide every stand-in sleep by this")
    r.add_argument("--snakemake-args", default="", help="more snakemake options, e.g. '--scheduler greedy'")
    r.add_argument("--workdir", type=Path, help="where the runs' folders go (default: a new temp folder)")
    r.add_argument("--timeout-s", type=float, default=3600)
    m = sub.add_parser("report", help="the report again from finished runs' folders (no run)")
    m.add_argument("costs", type=Path)
    m.add_argument("runs", type=Path, nargs="+", help="run folders (holding run.json), the speedup's base first")
    m.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.command == "costs":
        costs = build_costs(a.workdir, a.device, a.fingerprint, a.compile_scale)
    elif a.command == "synthetic":
        config = yaml.safe_load(a.configfile.read_text()) if a.configfile else {}
        config.update({key: yaml.safe_load(value) for key, _, value in (c.partition("=") for c in a.config)})
        config = apply_aliases(config)
        costs = synthetic_costs(common.defaults(**{"device_name": a.device, **config}), a.compile_s,
                                a.first_round_ms, a.rest_s, a.worker_start_s)
    elif a.command == "report":
        costs = json.loads(a.costs.read_text())
        print(write_report([remeasure(wd, costs) for wd in a.runs], costs, a.out), end="")
        return 0
    else:
        costs = json.loads(a.costs.read_text())
        root = a.workdir or Path(tempfile.mkdtemp(prefix="w8a8-projection-"))
        runs = [run_node(costs, node, root, a.timeout_s, a.snakemake_args.split())
                for node in parse_nodes(a.nodes, a.time_scale)]
        print(write_report(runs, costs, a.out), end="")
        print(f"(run folders in {root})")
        return 0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(costs, indent=1))
    print(f"{a.out}: {len(costs['points'])} points, {len(costs['compile'])} specializations, "
          f"compile {costs['compile_mean_s']:.2f} s/config mean, worker start {costs['worker_start_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
