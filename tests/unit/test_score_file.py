"""The file-scoring service behind ``pro-app score``: streaming, streams, generic instruments."""

from __future__ import annotations

import csv
import io
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pro_app.domain.instruments import InstrumentRegistry, default_registry
from pro_app.domain.scoring import score_answers
from pro_app.services import score_file as service
from pro_app.services.score_file import Problem, ScoreFileError, is_xlsx, score_file

C30 = default_registry().get("qlq_c30")
TINY = InstrumentRegistry.load(
    Path(__file__).resolve().parents[1] / "fixtures" / "instruments"
).get("tiny")


def random_csv(path: Path, rows: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = np.array([4] * 28 + [7] * 2)
    matrix = rng.integers(1, high + 1, size=(rows, 30))
    matrix[rng.random(matrix.shape) < 0.15] = 0
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject"] + [f"q{n}" for n in range(1, 31)])
        for index, row in enumerate(matrix.tolist()):
            writer.writerow([f"S{index:05d}"] + [str(v) if v else "" for v in row])
    return matrix


def test_many_chunks_score_like_the_single_path(tmp_path: Path) -> None:
    rows = 2 * service.CHUNK_ROWS + 17
    matrix = random_csv(tmp_path / "in.csv", rows)
    report = score_file(tmp_path / "in.csv", tmp_path / "out.csv", instrument=C30)
    assert (report.rows, report.instrument, report.version) == (rows, "qlq_c30", "3.0")
    with (tmp_path / "out.csv").open(newline="") as handle:
        out = list(csv.DictReader(handle))
    assert len(out) == rows
    for index in range(0, rows, 97):
        answers = {f"q{n}": int(v) or None for n, v in enumerate(matrix[index], start=1)}
        expected = score_answers(C30, answers)
        assert out[index]["subject"] == f"S{index:05d}"
        for code, result in expected.items():
            assert out[index][code] == ("" if result.value is None else repr(result.value))


def test_memory_is_bounded_by_the_chunk_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "CHUNK_ROWS", 200)
    random_csv(tmp_path / "in.csv", 5_000)
    tracemalloc.start()
    try:
        score_file(tmp_path / "in.csv", tmp_path / "out.csv", instrument=C30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Holding all 5,000 parsed rows takes about 8 MB; 200-row chunks need well under 1 MB.
    assert peak < 2_500_000


def test_streams_in_and_out() -> None:
    source = io.BytesIO(b"id,q1,q2,q3,q4,q5\r\nA,1,2,,,\r\n")
    out = io.BytesIO()
    with pytest.raises(ScoreFileError):  # q6..q30 missing
        score_file(source, out, instrument=C30)
    assert out.getvalue() == b""

    source = io.BytesIO(b"t1,t2,t3,t4\n2,,5,4\n")
    score_file(source, out, instrument=TINY, prefix="t")
    assert out.getvalue() == b"t1,t2,t3,t4,ABL,BOT,TOT\r\n2,,5,4,75.0,87.5,43.75\r\n"
    assert not source.closed and not out.closed  # the caller's streams stay usable


def test_generic_instrument_to_xlsx(tmp_path: Path) -> None:
    import openpyxl

    (tmp_path / "in.csv").write_text("t1,t2,t3,t4,note\n1,1,1,,x\n")
    score_file(tmp_path / "in.csv", tmp_path / "out.xlsx", instrument=TINY, prefix="t")
    book = openpyxl.load_workbook(tmp_path / "out.xlsx", read_only=True)
    rows = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    book.close()
    assert rows[0] == ["t1", "t2", "t3", "t4", "note", "ABL", "BOT", "TOT"]
    # BOT needs both items; TOT (require_all false) is then ABL alone.
    assert rows[1] == [1, 1, 1, None, "x", 100.0, None, 100.0]


def test_error_carries_problems_and_total() -> None:
    body = "".join(f"P{i}" + ",9" * 30 + "\n" for i in range(3))
    source = io.BytesIO(("id," + ",".join(f"q{n}" for n in range(1, 31)) + "\n" + body).encode())
    with pytest.raises(ScoreFileError) as caught:
        score_file(source, io.BytesIO(), instrument=C30)
    error = caught.value
    assert error.total == 90
    assert len(error.problems) == service.MAX_REPORTED_PROBLEMS
    assert error.problems[0] == Problem(
        "9 is outside the item's response values (1-4)", row=1, line=2, column="q1"
    )
    assert error.lines()[-1] == "... and 70 more problems"
    assert str(error).splitlines() == error.lines()


def test_problem_rendering() -> None:
    assert str(Problem("bad", row=3, line=4, column="q5")) == "row 3 (line 4), column q5: bad"
    assert str(Problem("bad", line=1)) == "line 1: bad"
    assert str(Problem("bad", row=2, line=3, line_kind="sheet row")) == "row 2 (sheet row 3): bad"
    assert str(Problem("bad")) == "bad"
    assert ScoreFileError([Problem("x")], total=2).lines() == ["x", "... and 1 more problem"]


def test_output_file_mode_follows_umask(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("t1,t2,t3,t4\n1,1,1,1\n")
    old = os.umask(0o022)
    try:
        score_file(tmp_path / "in.csv", tmp_path / "out.csv", instrument=TINY, prefix="t")
    finally:
        os.umask(old)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o644


def test_unterminated_quote_is_not_silently_swallowed(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text('t1,t2,t3,t4,note\n1,1,1,1,"open\n2,2,2,2,x\n')
    with pytest.raises(ScoreFileError, match="not valid CSV"):
        score_file(tmp_path / "in.csv", tmp_path / "out.csv", instrument=TINY, prefix="t")


@pytest.mark.parametrize(
    ("target", "expected"),
    [("a.xlsx", True), ("A.XLSX", True), ("a.csv", False), ("a.xls", False), ("-", False)],
)
def test_is_xlsx(target: str, expected: bool) -> None:
    assert is_xlsx(target) is expected
    assert is_xlsx(Path(target)) is expected


def test_is_xlsx_is_false_for_streams() -> None:
    assert not is_xlsx(io.BytesIO())


def test_nan_never_leaks_into_csv(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("t1,t2,t3,t4\n,,,\n")
    out = io.BytesIO()
    score_file(tmp_path / "in.csv", out, instrument=TINY, prefix="t")
    last = out.getvalue().decode().splitlines()[-1]
    assert last == ",,,,,,"
