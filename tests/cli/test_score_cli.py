"""``pro-app score``: analysts score their own files; bad input is refused whole, exit 2."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner, Result

from pro_app.cli.score import score_command

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / (
    "qlq_c30_v3_worked_examples.csv"
)
SCORE_COLUMNS = "QL2 PF2 RF2 EF CF SF FA NV PA DY SL AP CO DI FI C30SUM".split()


def reference_table() -> list[list[str]]:
    with REFERENCE.open(newline="") as handle:
        return list(csv.reader(handle))


def input_table() -> list[list[str]]:
    """The reference rows without their score columns: what an analyst would hand us."""
    return [row[:31] for row in reference_table()]


def csv_bytes(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def run(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(score_command, list(args), input=stdin)


def error_lines(result: Result) -> list[str]:
    return result.stderr.splitlines()


@pytest.fixture()
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "answers.csv"
    path.write_bytes(csv_bytes(input_table()))
    return path


# --------------------------------------------------------------------------- round trips


def test_csv_round_trip_reproduces_the_reference_exactly(sample: Path, tmp_path: Path) -> None:
    output = tmp_path / "scored.csv"
    result = run(str(sample), "--output", str(output))
    assert result.exit_code == 0, result.stderr
    # Same bytes as the independently computed reference: values, precision and blanks.
    assert output.read_bytes() == REFERENCE.read_bytes()
    assert "Scored 6 questionnaires with qlq_c30 3.0" in result.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"answers.csv", "scored.csv"}  # no temp left


def test_stdin_to_stdout(sample: Path) -> None:
    result = run("-", "--output", "-", stdin=sample.read_bytes())
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == REFERENCE.read_bytes()
    assert result.stderr == ""


def test_xlsx_output_then_xlsx_input(sample: Path, tmp_path: Path) -> None:
    workbook_path = tmp_path / "scored.xlsx"
    assert run(str(sample), "-o", str(workbook_path)).exit_code == 0
    workbook = openpyxl.load_workbook(workbook_path, read_only=True)
    # Write-only sheets end each row at its last value; pad to the full width.
    rows = [list(r) + [None] * (47 - len(r)) for r in workbook.worksheets[0].iter_rows(values_only=True)]
    workbook.close()
    expected = reference_table()
    assert rows[0] == expected[0]
    for got, want in zip(rows[1:], expected[1:]):
        assert got[0] == want[0]
        assert got[1:31] == [int(v) if v else None for v in want[1:31]]  # numbers, not text
        assert got[31:] == [float(v) if v else None for v in want[31:]]

    # A workbook of answers (scores removed) scores back to the same CSV bytes.
    answers_xlsx = tmp_path / "answers.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row[:31])
    book.save(answers_xlsx)
    result = run(str(answers_xlsx), "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == REFERENCE.read_bytes()


def test_xlsx_accepts_integral_floats_and_number_text(tmp_path: Path) -> None:
    path = tmp_path / "answers.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["id"] + [f"q{n}" for n in range(1, 31)])
    sheet.append(["a"] + [2.0] * 28 + ["5", " 5 "])
    book.save(path)
    result = run(str(path), "-o", "-")
    assert result.exit_code == 0, result.stderr
    row = next(r for r in csv.DictReader(io.StringIO(result.stdout)))
    assert row["q1"] == "2" and row["QL2"] == "66.66666666666666"


def test_other_columns_pass_through_verbatim(tmp_path: Path) -> None:
    rows = input_table()
    rows[0].insert(0, "note")
    rows[1].insert(0, 'multi\nline, "quoted"')
    for row in rows[2:]:
        row.insert(0, " keep  spaces ")
    path = tmp_path / "answers.csv"
    path.write_bytes(csv_bytes(rows))
    result = run(str(path), "-o", "-")
    assert result.exit_code == 0, result.stderr
    out = list(csv.reader(io.StringIO(result.stdout)))
    assert [row[:32] for row in out] == rows
    assert out[0][32:] == SCORE_COLUMNS


def test_prefix_option_and_bom(tmp_path: Path) -> None:
    rows = input_table()
    rows[0] = ["id"] + [f"item_{n}" for n in range(1, 31)]
    path = tmp_path / "answers.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_bytes(rows))
    result = run(str(path), "-o", "-", "--prefix", "item_")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("id,item_1,")


def test_header_only_gives_header_only(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_bytes(csv_bytes(input_table()[:1]))
    result = run(str(path), "-o", "-")
    assert result.exit_code == 0
    assert result.stdout_bytes == csv_bytes([input_table()[0] + SCORE_COLUMNS])


def test_blank_lines_are_not_rows(tmp_path: Path) -> None:
    data = csv_bytes(input_table()).replace(b"\r\nworst", b"\r\n\r\nworst") + b"\r\n"
    path = tmp_path / "answers.csv"
    path.write_bytes(data)
    result = run(str(path), "-o", "-")
    assert result.exit_code == 0
    assert result.stdout_bytes == REFERENCE.read_bytes()


def test_existing_output_is_replaced_on_success(sample: Path, tmp_path: Path) -> None:
    output = tmp_path / "scored.csv"
    output.write_text("old")
    assert run(str(sample), "-o", str(output)).exit_code == 0
    assert output.read_bytes() == REFERENCE.read_bytes()


def test_through_the_pro_app_group_without_an_app(sample: Path) -> None:
    try:
        from pro_app.cli import main
    except ImportError as exc:  # pragma: no cover - the group is built elsewhere
        pytest.skip(f"pro-app group not importable: {exc}")
    result = CliRunner().invoke(main, ["score", str(sample), "-o", "-"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == REFERENCE.read_bytes()


# --------------------------------------------------------------------------- bad input


def with_cell(row: int, column: str, value: str) -> list[list[str]]:
    rows = input_table()
    rows[row][rows[0].index(column)] = value
    return rows


BAD_CSV: list[tuple[str, bytes, str]] = [
    ("out of range", csv_bytes(with_cell(2, "q7", "5")),
     "error: row 2 (line 3), column q7: 5 is outside the item's response values (1-4)"),
    ("seven-point out of range", csv_bytes(with_cell(1, "q30", "0")),
     "error: row 1 (line 2), column q30: 0 is outside the item's response values (1-7)"),
    ("decimal", csv_bytes(with_cell(3, "q1", "2.5")),
     "error: row 3 (line 4), column q1: '2.5' is not a whole number"),
    ("text", csv_bytes(with_cell(3, "q12", "abc")),
     "error: row 3 (line 4), column q12: 'abc' is not a number"),
    ("NA", csv_bytes(with_cell(6, "q12", "NA")),
     "error: row 6 (line 7), column q12: 'NA' is not a number (leave the cell blank for a "
     "missing answer)"),
    ("missing item column", csv_bytes([row[:17] + row[18:] for row in input_table()]),
     "error: line 1, column q17: item column is missing from the header"),
    ("duplicate item column", csv_bytes([row + [row[3]] for row in input_table()]),
     "error: line 1, column q3: item column appears more than once in the header"),
    ("wrong prefix", csv_bytes(input_table()).replace(b",q", b",Q"),
     "error: line 1: no item columns found: expected q1 .. q30 in the header row"),
    ("collision", csv_bytes([row + ["x"] for row in input_table()]).replace(b",x\r\n", b",PF2\r\n", 1),
     "error: line 1: column PF2 would clash with the score columns this command adds"),
    ("empty", b"", "error: the file is empty: expected a header row naming q1 .. q30"),
    ("ragged", csv_bytes(input_table()).replace(b"\r\nworst,4,", b"\r\nworst,4,4,", 1),
     "error: row 2 (line 3): has 32 fields but the header has 31"),
    ("binary", b"\x00\x01\x02PNG\x00" * 20, "binary data"),
    ("undecodable", csv_bytes(input_table()).replace(b"mixed", b"m\xe9lange"),
     "error: line 4: the file is not UTF-8 text"),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in BAD_CSV], ids=[c[0] for c in BAD_CSV])
def test_bad_csv_exits_2_and_writes_nothing(tmp_path: Path, data: bytes, message: str) -> None:
    source = tmp_path / "answers.csv"
    source.write_bytes(data)
    fresh = tmp_path / "fresh.csv"
    result = run(str(source), "--output", str(fresh))
    assert result.exit_code == 2
    assert any(line.startswith(message) or message in line for line in error_lines(result)), (
        result.stderr
    )
    assert not fresh.exists()

    existing = tmp_path / "existing.csv"
    existing.write_text("previous results\n")
    assert run(str(source), "--output", str(existing)).exit_code == 2
    assert existing.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.csv", "existing.csv"]

    piped = run("-", "--output", "-", stdin=data)
    assert piped.exit_code == 2
    assert piped.stdout_bytes == b""


def test_every_bad_cell_is_reported(tmp_path: Path) -> None:
    rows = with_cell(1, "q1", "9")
    rows[4][rows[0].index("q2")] = "x"
    source = tmp_path / "answers.csv"
    source.write_bytes(csv_bytes(rows))
    result = run(str(source), "-o", "-")
    assert error_lines(result) == [
        "error: row 1 (line 2), column q1: 9 is outside the item's response values (1-4)",
        "error: row 4 (line 5), column q2: 'x' is not a number",
    ]


def test_problems_are_capped_at_20(tmp_path: Path) -> None:
    rows = [input_table()[0]] + [input_table()[3] for _ in range(25)]
    for row in rows[1:]:
        row[5] = "7"
    source = tmp_path / "answers.csv"
    source.write_bytes(csv_bytes(rows))
    result = run(str(source), "-o", str(tmp_path / "out.csv"))
    lines = error_lines(result)
    assert result.exit_code == 2
    assert len(lines) == 21
    assert lines[0] == "error: row 1 (line 2), column q5: 7 is outside the item's response values (1-4)"
    assert lines[19].startswith("error: row 20 (line 21), column q5:")
    assert lines[20] == "error: ... and 5 more problems"


def test_line_numbers_count_multi_line_fields(tmp_path: Path) -> None:
    rows = input_table()
    rows[0].append("note")
    for row in rows[1:]:
        row.append("")
    rows[1][-1] = "first\nsecond\nthird"
    rows[2][1] = "0"
    source = tmp_path / "answers.csv"
    source.write_bytes(csv_bytes(rows))
    assert error_lines(run(str(source), "-o", "-"))[0].startswith(
        "error: row 2 (line 5), column q1:"
    )


def test_bad_xlsx_cells(tmp_path: Path) -> None:
    path = tmp_path / "answers.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["id"] + [f"q{n}" for n in range(1, 31)])
    sheet.append(["a", 2.5, True, "x"] + [1] * 27)
    sheet.append(["b"] + [1] * 30 + [None, "stray"])
    book.save(path)
    result = run(str(path), "-o", str(tmp_path / "out.xlsx"))
    assert result.exit_code == 2
    assert error_lines(result) == [
        "error: row 1 (sheet row 2), column q1: 2.5 is not a whole number",
        "error: row 1 (sheet row 2), column q2: True is not an answer value",
        "error: row 1 (sheet row 2), column q3: 'x' is not a number",
        "error: row 2 (sheet row 3): a value beyond the last header column (AG)",
    ]
    assert not (tmp_path / "out.xlsx").exists()


def test_corrupt_xlsx(tmp_path: Path) -> None:
    path = tmp_path / "answers.xlsx"
    path.write_bytes(b"not a zip file")
    result = run(str(path), "-o", "-")
    assert result.exit_code == 2
    assert "cannot read answers.xlsx as an .xlsx workbook" in result.stderr


def test_unknown_instrument(sample: Path, tmp_path: Path) -> None:
    result = run(str(sample), "-o", str(tmp_path / "out.csv"), "--instrument", "qlq_c15")
    assert result.exit_code == 2
    assert error_lines(result) == [
        "error: unknown instrument 'qlq_c15' (available: qlq_c30)"
    ]
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("source", "output", "message"),
    [
        ("missing.csv", "out.csv", "cannot read {tmp}/missing.csv: no such file"),
        ("answers.csv", "nowhere/out.csv", "directory {tmp}/nowhere does not exist"),
        ("answers.csv", "answers.csv", "is the input file"),
        ("answers.csv", ".", "it is a directory"),
    ],
)
def test_unusable_paths(sample: Path, tmp_path: Path, source: str, output: str, message: str) -> None:
    before = sample.read_bytes()
    result = run(str(tmp_path / source), "-o", str(tmp_path / output))
    assert result.exit_code == 2
    assert message.format(tmp=tmp_path) in result.stderr
    assert sample.read_bytes() == before


def test_output_is_required(sample: Path) -> None:
    result = run(str(sample))
    assert result.exit_code == 2
    assert "--output" in result.stderr
