"""Weight shapes from an engine's log (`shapes_from_log`): the shapes a user's vLLM or SGLang run actually ran.

When no tuned file matches a GEMM, both engines log the exact file they looked for (vLLM's fp8_utils.py and
int8_utils.py, SGLang's fp8_kernel.py and int8_kernel.py, get_w8a8_block_{fp8,int8}_configs; the same text in
both, each with its own spelling of the file name):

    Using default W8A8 Block FP8 kernel config. Performance might be sub-optimal! Config file not found at <path>

(`INT8` for the INT8 kernel), after whatever prefix the engine's logger adds: vLLM's
`(VllmWorker rank=0 pid=123) WARNING 11-02 10:00:00 [fp8_utils.py:123] `, SGLang's `[2026-11-02 10:00:00 TP0] `.
The file name holds N, K, the device, the dtype and the block shape, so those lines give every (N, K) of any
model and any parallelism the run used, per rank, as run. A file that was found is logged as
`Using configuration from <path> for W8A8 Block FP8 kernel.`; those shapes are counted, not tuned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from w8a8_tuner.plan.models import NO_SPLIT, Linear, Model, ShapeError
from w8a8_tuner.results.naming import DTYPE_TAGS, ENGINE_LABELS, INPUT_LABELS, parse_config_file_name

KEY = "shapes_from_log"

_KINDS = "|".join(INPUT_LABELS.values())
MISSING = re.compile(rf"Using default W8A8 Block (?P<kind>{_KINDS}) kernel config\. Performance might be "
                     r"sub-optimal! Config file not found at (?P<path>.+?\.json)")
FOUND = re.compile(rf"Using configuration from (?P<path>.+?\.json) for W8A8 Block (?P<kind>{_KINDS}) kernel")


@dataclass(frozen=True)
class LoggedFile:
    """One file an engine looked for and did not find, and the first line that says so."""

    line: int
    n: int
    k: int
    device: str
    input_type: str  # fp8 or int8
    block_shape: tuple[int, int]
    engine: str | None  # vllm or sglang (from the name's spelling or the path), None where neither tells
    path: str


@dataclass(frozen=True)
class EngineLog:
    """What a log says: the files not found (each (N, K) once, in log order) and how many were found."""

    path: str
    missing: tuple[LoggedFile, ...]
    found: int

    def the_one(self, what: str, value) -> object:
        """The single value of `what` over every line; lines that disagree are an error naming each value."""
        values: dict[object, list[int]] = {}
        for f in self.missing:
            values.setdefault(value(f), []).append(f.line)
        if len(values) > 1:
            listed = "; ".join(f"{_show(v)} (line{'s' if len(lines) > 1 else ''} {_lines(lines)})"
                               for v, lines in values.items())
            raise ShapeError(f"{KEY}: {self.path}: lines of several {what}s: {listed}; give the log of one run "
                             f"(one {what}), or tune the others in another run")
        return next(iter(values))

    @property
    def device(self) -> str:
        return self.the_one("device", lambda f: f.device)

    @property
    def input_type(self) -> str:
        return self.the_one("dtype", lambda f: f.input_type)

    @property
    def block_shape(self) -> tuple[int, int]:
        return self.the_one("block shape", lambda f: f.block_shape)

    @property
    def engine(self) -> str | None:
        engines = {f.engine for f in self.missing} - {None}
        if len(engines) > 1:
            return self.the_one("engine", lambda f: f.engine)
        return next(iter(engines), None)


def _show(value) -> str:
    return f"block_shape={list(value)}" if isinstance(value, tuple) else str(value)


def _lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:5]))
    return shown + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")


def _engine(engines: tuple[str, ...], path: str) -> str | None:
    """Whose log it is: the one engine whose spelling the file name has (FP8: vLLM [128,128], SGLang [128, 128]);
    where both spell it alike (INT8), the path of the package the file was looked for in."""
    if len(engines) == 1:
        return engines[0]
    parts = set(re.split(r"[/\\]", path))
    return next((e for e in engines if e in parts), None)


def parse_engine_log(text_lines, path: str) -> EngineLog:
    """The files an engine log says it did not find; an unreadable file name in such a line is an error."""
    missing: dict[tuple[int, int], LoggedFile] = {}
    found = 0
    for number, line in enumerate(text_lines, start=1):
        if FOUND.search(line):
            found += 1
            continue
        m = MISSING.search(line)
        if not m:
            continue
        name = re.split(r"[/\\]", m["path"])[-1]
        f = parse_config_file_name(name)
        if f is None:
            raise ShapeError(f"{KEY}: {path}, line {number}: {name!r} is not a W8A8 block config file name "
                             "(N=...,K=...,device_name=...,dtype=fp8_w8a8|int8_w8a8,block_shape=[...].json)")
        logged = LoggedFile(number, f.N, f.K, f.device_name, f.input_type, f.block_shape,
                            _engine(f.engines, m["path"]), m["path"])
        missing.setdefault((logged.n, logged.k), logged)  # every rank logs it: each (N, K) once
    return EngineLog(path, tuple(missing.values()), found)


def read_engine_log(path: str) -> EngineLog:
    """An engine log from disk; no line naming a missing file is an error saying what the file holds instead."""
    try:
        with open(path, errors="replace") as f:
            log = parse_engine_log(f, path)
    except OSError as e:
        raise ShapeError(f"{KEY}: {path}: cannot read it (from {Path.cwd()}): {e.strerror or e}") from e
    if not log.missing:
        if log.found:
            raise ShapeError(f"{KEY}: {path}: no 'Config file not found' line, only {log.found} 'Using configuration "
                             "from ... for W8A8 Block ... kernel' lines: every GEMM of that run already had a tuned "
                             "file, so there is nothing to tune")
        raise ShapeError(f"{KEY}: {path}: no line 'Using default W8A8 Block FP8 (or INT8) kernel config. Performance "
                         "might be sub-optimal! Config file not found at ...': give the log of a vLLM or SGLang run of "
                         "a block-quantized model, logged at INFO or WARNING level (vLLM's and SGLang's default)")
    return log


def log_model(log: EngineLog) -> Model:
    """The log's shapes as layers, tuned as given at every TP size (they are what one rank ran)."""
    linears = tuple(Linear(f"line {f.line}", (f.n,), f.k, NO_SPLIT) for f in log.missing)
    return Model(KEY, log.path, linears, block_shape=log.block_shape, block_shape_source="lines with block_shape")


def check_log_agrees(log: EngineLog, *, device_name: str | None, backend: str, input_type: str,
                     engines: tuple[str, ...]):
    """What the log says about the run against the config: the files tuned here must be the ones it looked for
    (device_name None: no device to compare, as when only the shapes are listed)."""
    if log.input_type != input_type:
        raise ShapeError(f"input_type: {input_type!r}, but {KEY} {log.path} has W8A8 Block {log.input_type.upper()} "
                         f"lines (dtype={DTYPE_TAGS[log.input_type]}); set input_type: {log.input_type}")
    # The interpreter's device is no GPU: any log's device disagrees with it, and it names no engine's file.
    if backend != "interpret" and device_name is not None and log.device != device_name:
        raise ShapeError(f"device_name: {device_name!r}, but {KEY} {log.path} was logged on {log.device}: its engine "
                         f"would not read files of {device_name}; tune on a {log.device} (or set device_name: "
                         f"{log.device} on a machine without it)")
    if log.engine is not None and log.engine not in engines:
        label = ENGINE_LABELS[log.engine]
        raise ShapeError(f"engine: {' and '.join(engines)}, but {KEY} {log.path} is {label}'s log: {label} would not "
                         f"find files named for {' and '.join(ENGINE_LABELS[e] for e in engines)}; set engine: "
                         f"{log.engine} (or both)")
