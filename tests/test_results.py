"""Per-point TSVs: written whole, read back checked, merged into the shape's JSON."""

import math
import random

import pytest

from kernels.naming import load_config_file
from kernels.results import ResultFileError, aggregate, read_tsv, write_tsv
from kernels.search_space import Config
from kernels.tuner import Result

CONFIGS = [Config(bm, bn, 128, 1, 4, 2) for bm in (16, 32) for bn in (64, 128)]


def fake_point(path, M, rng, statuses=None):
    results = []
    for c, status in zip(CONFIGS, statuses or ["ok"] * len(CONFIGS)):
        t = rng.uniform(10, 100) if status == "ok" else math.nan
        results.append(Result(c, status, time_us=t, screen_us=t, rel_error=0.003,
                              stage="remeasure" if status == "ok" else ""))
    ok = [r for r in results if r.status == "ok"]
    best = min(ok, key=lambda r: r.time_us).config if ok else None
    meta = {"N": 256, "K": 512, "M": M, "device_name": "dev", "block_shape": [128, 128],
            "out_dtype": "bfloat16", "backend": "interpret"}
    write_tsv(path, meta, results, best)
    return best


EXPECTED = {"N": 256, "K": 512, "device_name": "dev", "block_shape": [128, 128],
            "out_dtype": "bfloat16", "backend": "interpret"}


def test_round_trip_and_aggregate(tmp_path):
    rng = random.Random()
    tsvs, best = {}, {}
    for M in (1, 16, 33):
        tsvs[M] = tmp_path / f"M{M}.tsv"
        best[M] = fake_point(tsvs[M], M, rng)
    out = tmp_path / "out.json"
    assert aggregate(tsvs, out, EXPECTED, set(CONFIGS)) == best
    assert load_config_file(out) == best


def test_wrong_result_never_chosen(tmp_path):
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random(), ["wrong_result", "ok", "compile_error", "out_of_resources"])
    _, df = read_tsv(path)
    from kernels.results import best_config
    assert best_config(path, df) == CONFIGS[1]


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random())
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    out = tmp_path / "out.json"
    with pytest.raises(ResultFileError, match=f"{path}: truncated"):
        aggregate({1: path}, out, EXPECTED, set(CONFIGS))
    assert not out.exists()


def test_hand_edited_row_count_is_refused(tmp_path):
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random())
    lines = path.read_text().splitlines(keepends=True)
    del lines[-2]  # drop one config row, keep the end mark
    path.write_text("".join(lines))
    with pytest.raises(ResultFileError, match="rows but the end mark says"):
        read_tsv(path)


def test_header_mismatch_is_refused(tmp_path):
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random())
    with pytest.raises(ResultFileError, match="header says M='1', expected 2"):
        aggregate({2: path}, tmp_path / "o.json", EXPECTED, set(CONFIGS))


def test_config_set_must_match_search_space(tmp_path):
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random())
    with pytest.raises(ResultFileError, match="1 missing"):
        read_tsv(path, expected_configs=set(CONFIGS) | {Config(64, 64, 128, 1, 4, 2)})
