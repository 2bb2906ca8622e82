"""Per-point TSVs: written whole, read back checked (hostile edits refused by name), merged into the shape's
JSON with a manifest that finds a JSON no longer matching its TSVs and settings."""

import math
import random
from pathlib import Path

import pytest

from w8a8_tuner.results.aggregate import aggregate, stale_reason
from w8a8_tuner.results.naming import load_config_file
from w8a8_tuner.results.tsv import ResultFileError, best_config, read_tsv, write_tsv
from w8a8_tuner.search.space import Config
from w8a8_tuner.search.stages import Result

CONFIGS = [Config(bm, bn, 128, 1, 4, 2) for bm in (16, 32) for bn in (64, 128)]
EXPECTED = {"N": 256, "K": 512, "fingerprint": "abc", "device_name": "dev", "block_shape": [128, 128],
            "out_dtype": "bfloat16", "backend": "interpret"}


def fake_point(path, M, rng, statuses=None):
    """A TSV as the tuner writes it, with random times; returns its winner."""
    results = []
    for c, status in zip(CONFIGS, statuses or ["ok"] * len(CONFIGS)):
        t = rng.uniform(10, 100) if status == "ok" else math.nan
        results.append(Result(c, status, time_us=t, screen_us=t, rel_error=0.003 if status == "ok" else math.nan,
                              stage="remeasure" if status == "ok" else ""))
    ok = [r for r in results if r.status == "ok"]
    best = min(ok, key=lambda r: r.time_us).config
    write_tsv(path, {**{k: v for k, v in EXPECTED.items()}, "M": M}, results, best)
    return best


def test_round_trip_and_aggregate_with_manifest(tmp_path):
    rng = random.Random()
    tsvs, best = {}, {}
    for M in (1, 16, 33):
        tsvs[M] = str(tmp_path / f"M{M}.tsv")
        best[M] = fake_point(tsvs[M], M, rng)
    out, manifest = tmp_path / "out.json", tmp_path / "manifest.tsv"
    assert aggregate(tsvs, {out: False}, manifest, EXPECTED, lambda m: set(CONFIGS)) == best
    assert load_config_file(out) == best
    assert stale_reason([out], manifest, "abc", tsvs) is None


def test_wrong_result_never_chosen(tmp_path):
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random(), ["wrong_result", "ok", "compile_error", "out_of_resources"])
    _, df = read_tsv(path)
    assert best_config(path, df) == CONFIGS[1]


def edit_row(path, config: Config, column: str, value: str):
    """Replace one cell of one config's row, keeping the file otherwise intact."""
    from w8a8_tuner.results.tsv import COLUMNS

    lines = path.read_text().splitlines(keepends=True)
    prefix = "\t".join(str(v) for v in config.as_dict().values()) + "\t"
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            cells = line.rstrip("\n").split("\t")
            cells[COLUMNS.index(column)] = value
            lines[i] = "\t".join(cells) + "\n"
    path.write_text("".join(lines))


@pytest.mark.parametrize("column,value,needle", [
    ("time_us", "nan", "time_us='nan' is not a number"),
    ("time_us", "abc", "time_us='abc' is not a number"),
    ("time_us", "-3.5", "time_us='-3.5' is not a positive finite time"),
    ("time_us", "-inf", "time_us='-inf' is not a positive finite time"),
    ("time_us", "0", "time_us='0' is not a positive finite time"),
    ("rel_error", "0.9", "ok with rel_error='0.9', over the limit"),
    ("rel_error", "", "ok with rel_error='', over the limit"),
    ("status", "fine", "unknown status 'fine'"),
    ("BLOCK_SIZE_M", "1.5", "BLOCK_SIZE_M='1.5' is not a positive integer"),
])
def test_impossible_value_in_any_row_is_refused(tmp_path, column, value, needle):
    """A hand edit or damage that keeps the file's shape: text, NaN, negative or infinite times, a wrong
    result marked ok. Before, a text time made the column text and the JSON got the slowest finalist."""
    path = tmp_path / "M1.tsv"
    best = fake_point(path, 1, random.Random())
    loser = next(c for c in CONFIGS if c != best)
    edit_row(path, loser, column, value)
    with pytest.raises(ResultFileError, match=needle) as err:
        aggregate({1: str(path)}, {tmp_path / "o.json": False}, tmp_path / "m.tsv", EXPECTED,
                  (lambda m: set(CONFIGS)) if column != "BLOCK_SIZE_M" else None)
    assert str(path) in str(err.value)
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "m.tsv").exists()


def test_a_faster_time_written_in_by_hand_disagrees_with_the_best_line(tmp_path):
    path = tmp_path / "M1.tsv"
    best = fake_point(path, 1, random.Random())
    loser = next(c for c in CONFIGS if c != best)
    edit_row(path, loser, "time_us", "0.001")
    with pytest.raises(ResultFileError, match=f"header says best '{best.label()}' but the fastest"):
        read_tsv(path)


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random())
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    out = tmp_path / "out.json"
    with pytest.raises(ResultFileError, match=f"{path}: truncated"):
        aggregate({1: str(path)}, {out: False}, tmp_path / "m.tsv", EXPECTED, lambda m: set(CONFIGS))
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
        aggregate({2: str(path)}, {tmp_path / "o.json": False}, tmp_path / "m.tsv", EXPECTED, lambda m: set(CONFIGS))
    with pytest.raises(ResultFileError, match="header says fingerprint='abc', expected 'other'"):
        aggregate({1: str(path)}, {tmp_path / "o.json": False}, tmp_path / "m.tsv",
                  {**EXPECTED, "fingerprint": "other"})


def test_config_set_must_match_search_space(tmp_path):
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random())
    with pytest.raises(ResultFileError, match="1 missing"):
        read_tsv(path, expected_configs=set(CONFIGS) | {Config(64, 64, 128, 1, 4, 2)})


def test_stale_reasons(tmp_path):
    """The manifest finds every way a JSON on disk stops being what its TSVs and settings give."""
    rng = random.Random()
    tsvs = {M: str(tmp_path / f"M{M}.tsv") for M in (1, 16)}
    for M, p in tsvs.items():
        fake_point(p, M, rng)
    out, manifest = tmp_path / "out.json", tmp_path / "m.tsv"
    assert stale_reason([out], manifest, "abc", tsvs) is None  # no JSON yet: made anyway
    aggregate(tsvs, {out: False}, manifest, EXPECTED, lambda m: set(CONFIGS))
    assert stale_reason([out], manifest, "abc", tsvs) is None
    assert "other settings" in stale_reason([out], manifest, "xyz", tsvs)
    assert "batch sizes [1, 16], now [1]" in stale_reason([out], manifest, "abc", {1: tsvs[1]})
    text = out.read_text()
    out.write_text("garbage")
    assert stale_reason([out], manifest, "abc", tsvs) == "out.json changed on disk since it was written"
    out.write_text(text)
    fake_point(tsvs[16], 16, rng)  # re-tuned since
    assert stale_reason([out], manifest, "abc", tsvs) == "the TSV of M=16 changed since"
    Path(tsvs[1]).rename(tsvs[1] + ".gone")
    assert stale_reason([out], manifest, "abc", tsvs) == "the point M=1 is no longer tuned"
    Path(tsvs[1] + ".gone").rename(tsvs[1])
    manifest.write_text("damaged")
    assert stale_reason([out], manifest, "abc", tsvs) == "its record is damaged"
    manifest.unlink()
    assert stale_reason([out], manifest, "abc", tsvs) == "no record of what it was made from"


def test_each_batch_size_is_checked_against_the_space_at_that_batch_size(tmp_path):
    """search_space_extra adds configs at small M only: a TSV at M=128 has fewer configs than one at M=16,
    and each is right (the H200 sweep's aggregate refused every M > 64 TSV: "34 missing")."""
    from w8a8_tuner.results.tsv import write_tsv
    from w8a8_tuner.search.stages import Result

    extra = Config(16, 16, 128, 1, 2, 5)
    rng = random.Random()
    tsvs = {16: str(tmp_path / "M16.tsv"), 128: str(tmp_path / "M128.tsv")}
    for M, configs in ((16, CONFIGS + [extra]), (128, CONFIGS)):
        results = [Result(c, "ok", time_us=(t := rng.uniform(10, 100)), screen_us=t, rel_error=0.003,
                          stage="remeasure") for c in configs]
        write_tsv(tsvs[M], {**EXPECTED, "M": M}, results, min(results, key=lambda r: r.time_us).config)
    space_at = {16: set(CONFIGS) | {extra}, 128: set(CONFIGS)}
    best = aggregate(tsvs, {tmp_path / "o.json": False}, tmp_path / "m.tsv", EXPECTED, space_at.__getitem__)
    assert set(best) == {16, 128}
    with pytest.raises(ResultFileError, match="M128.tsv: configs differ from the search space .1 missing"):
        aggregate(tsvs, {tmp_path / "o2.json": False}, tmp_path / "m2.tsv", EXPECTED, lambda m: space_at[16])


def swap_finalists(path: Path) -> Config:
    """The hand edit the checks of values and of the best line let through: swap the re-measured times of the
    winner and the runner-up and name the runner-up as best. Returns the runner-up (the slower config)."""
    _, df = read_tsv(path)
    final = df[df["stage"] == "remeasure"].sort_values("time_us")
    (fast, fast_us), (slow, slow_us) = [(r.config, r.time_us) for r in final.iloc[:2].itertuples()]
    edit_row(path, fast, "time_us", f"{slow_us:.3f}")
    edit_row(path, slow, "time_us", f"{fast_us:.3f}")
    path.write_text(path.read_text().replace(f"# best: {fast.label()}\n", f"# best: {slow.label()}\n"))
    return slow


def test_swapped_finalist_times_with_a_matching_best_line_are_refused(tmp_path):
    """Before: the edit was merged and the JSON got the slower config. The tuner's checksum of everything it
    wrote (in the end mark) no longer matches, and the file is refused by name."""
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random(7))
    slower = swap_finalists(path)
    out = tmp_path / "o.json"
    with pytest.raises(ResultFileError, match=f"^{path}: changed since the tuner wrote it") as err:
        aggregate({1: str(path)}, {out: False}, tmp_path / "m.tsv", EXPECTED, lambda m: set(CONFIGS))
    assert "checksum" in str(err.value) and slower.label() not in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize("edit", ["a note", "the header", "a row's order"])
def test_any_edit_of_what_the_tuner_wrote_is_refused(tmp_path, edit):
    path = tmp_path / "M1.tsv"
    best = fake_point(path, 1, random.Random())
    text = path.read_text()
    if edit == "a note":
        edit_row(path, best, "note", "looks fine")
    elif edit == "the header":
        path.write_text(text.replace("# backend: interpret\n", "# backend: interpret \n"))
    else:
        lines = text.splitlines(keepends=True)
        first = next(i for i, line in enumerate(lines) if line.startswith("BLOCK_SIZE_M")) + 1
        lines[first], lines[first + 1] = lines[first + 1], lines[first]
        path.write_text("".join(lines))
    with pytest.raises(ResultFileError, match="changed since the tuner wrote it"):
        read_tsv(path)


def test_a_tsv_written_before_rows_were_checksummed_is_read(tmp_path):
    """TSVs tuned before the checksum existed (its end mark is `# end rows=N` alone) keep working, with every
    other check (README: to have them checked too, delete them and tune again)."""
    path = tmp_path / "M1.tsv"
    best = fake_point(path, 1, random.Random())
    lines = path.read_text().splitlines(keepends=True)
    assert " sha256=" in lines[-1]
    lines[-1] = lines[-1].split(" sha256=")[0] + "\n"
    path.write_text("".join(lines))
    meta, _ = read_tsv(path)
    assert meta["best"] == best.label()


def test_a_damaged_end_mark_is_named(tmp_path):
    path = tmp_path / "M1.tsv"
    fake_point(path, 1, random.Random())
    path.write_text(path.read_text().replace("# end rows=4 ", "# end rows=four "))
    with pytest.raises(ResultFileError, match=f"^{path}: damaged end mark '# end rows=four sha256="):
        read_tsv(path)
