"""Score questionnaires held in a CSV or XLSX file (the engine behind ``pro-app score``).

Analysts often hold QLQ-C30 answers outside the app (legacy trials, paper forms keyed into a
spreadsheet). This service scores such a file with exactly the engine the app uses, so the
numbers agree to the last bit.

Contract:

* Input: a header row naming item columns ``{prefix}{number}`` (``q1`` .. ``q30``) among any
  other columns, then one questionnaire per row; a blank cell is a missing answer. A ``.xlsx``
  file is read from its first worksheet; anything else (and a stream) is UTF-8 CSV.
* Output: every input column in its original order, then one column per score in the
  instrument's order, blank where a score is missing, floats written with ``repr`` (full
  precision). CSV input cells are copied verbatim; in ``.xlsx`` output the item columns hold
  the validated integer answers so that spreadsheet formulas work on them.
* All or nothing: the whole file is validated, and the output appears only if every row is
  valid -- written to a temporary file beside the destination and renamed into place (or, for
  a stream such as stdout, spooled and copied at the end). Otherwise :class:`ScoreFileError`
  lists the first :data:`MAX_REPORTED_PROBLEMS` problems with row, file line and column, and
  counts the rest.
* Memory stays constant: rows are read, scored (with the numpy batch path) and written in
  chunks of :data:`CHUNK_ROWS`.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import operator
import os
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

import numpy as np
import openpyxl
from openpyxl.cell import WriteOnlyCell
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException

from pro_app.domain.instruments import Instrument
from pro_app.domain.scoring import ALGORITHM_VERSION, score_batch

MAX_REPORTED_PROBLEMS = 20
CHUNK_ROWS = 4_096

Target = str | os.PathLike[str] | BinaryIO
Cell = object  # str from CSV; str, int, float, bool, datetime or None from a worksheet

# Words analysts' tools write for "no value"; we ask for a blank cell instead of guessing.
_MISSING_WORDS = frozenset({"na", "n/a", "nan", "null", "none", "missing", ".", "-", "#n/a"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as we can.

    ``row`` is the 1-based data row (the header is not counted), ``line`` the line of a CSV
    file or the row of the worksheet (``line_kind`` says which), ``column`` the column name.
    """

    message: str
    row: int | None = None
    line: int | None = None
    column: str | None = None
    line_kind: str = "line"

    def __str__(self) -> str:
        where = ""
        if self.row is not None:
            where = f"row {self.row}"
        if self.line is not None:
            place = f"{self.line_kind} {self.line}"
            where = f"{where} ({place})" if where else place
        if self.column is not None:
            where = f"{where}, column {self.column}" if where else f"column {self.column}"
        return f"{where}: {self.message}" if where else self.message


class ScoreFileError(Exception):
    """The file cannot be scored; nothing was written.

    ``problems`` holds the first :data:`MAX_REPORTED_PROBLEMS` problems, ``total`` how many
    were found in all; :meth:`lines` renders them for a terminal.
    """

    def __init__(self, problems: Sequence[Problem], total: int | None = None) -> None:
        self.problems = tuple(problems)
        self.total = len(self.problems) if total is None else total
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        lines = [str(problem) for problem in self.problems]
        hidden = self.total - len(self.problems)
        if hidden > 0:
            lines.append(f"... and {hidden} more problem{'s' if hidden != 1 else ''}")
        return lines


@dataclass(frozen=True)
class ScoreReport:
    """What was scored, for the command's summary line."""

    rows: int
    instrument: str
    version: str
    algorithm_version: str
    score_columns: tuple[str, ...]


def is_xlsx(target: Target) -> bool:
    """Spreadsheets are recognised by the ``.xlsx`` file name; streams are always CSV."""
    return isinstance(target, (str, os.PathLike)) and os.fspath(target).lower().endswith(".xlsx")


def score_file(
    source: Target,
    destination: Target,
    *,
    instrument: Instrument,
    prefix: str = "q",
) -> ScoreReport:
    """Score every questionnaire in ``source`` and write ``destination`` (see module docs).

    ``source`` and ``destination`` are paths or binary streams (e.g. stdin/stdout). Raises
    :class:`ScoreFileError` when anything is wrong; the destination is then left untouched.
    """
    problems = _Problems()
    _check_targets(source, destination, problems)
    problems.raise_if_any()
    line_kind = "sheet row" if is_xlsx(source) else "line"
    with ExitStack() as stack:
        rows = stack.enter_context(_open_rows(source, problems))
        first = next(rows, None)
        if first is None:
            if not problems:  # not merely unreadable from its first line
                span = _item_span(instrument, prefix)
                problems.add(Problem(f"the file is empty: expected a header row naming {span}"))
            raise problems.error()
        header_line, header_cells = first
        layout = _Layout.build(header_cells, instrument, prefix, header_line, line_kind, problems)
        problems.raise_if_any()
        sink = stack.enter_context(
            _open_sink(destination, layout, as_xlsx=is_xlsx(destination), problems=problems)
        )
        problems.raise_if_any()
        count = _score_rows(rows, layout, sink, problems)
        problems.raise_if_any()
        sink.commit()
    return ScoreReport(
        rows=count,
        instrument=instrument.code,
        version=instrument.version,
        algorithm_version=ALGORITHM_VERSION,
        score_columns=instrument.score_codes,
    )


# --------------------------------------------------------------------------- problems


class _Problems:
    """Collects problems: keeps the first few for the report, counts all of them."""

    def __init__(self) -> None:
        self.kept: list[Problem] = []
        self.total = 0

    def add(self, problem: Problem) -> None:
        self.total += 1
        if len(self.kept) < MAX_REPORTED_PROBLEMS:
            self.kept.append(problem)

    def __bool__(self) -> bool:
        return self.total > 0

    def error(self) -> ScoreFileError:
        return ScoreFileError(self.kept, self.total)

    def raise_if_any(self) -> None:
        if self.total:
            raise self.error()


def _check_targets(source: Target, destination: Target, problems: _Problems) -> None:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            problems.add(Problem(f"cannot read {path}: no such file"))
        elif path.is_dir():
            problems.add(Problem(f"cannot read {path}: it is a directory"))
    if isinstance(destination, (str, os.PathLike)):
        out = Path(destination)
        if out.is_dir():
            problems.add(Problem(f"cannot write {out}: it is a directory"))
        elif not out.parent.is_dir():
            problems.add(Problem(f"cannot write {out}: directory {out.parent} does not exist"))
        elif isinstance(source, (str, os.PathLike)) and out.exists() and Path(source).exists():
            if os.path.samefile(source, out):
                problems.add(Problem(f"the output {out} is the input file; choose another name"))


def _item_span(instrument: Instrument, prefix: str) -> str:
    numbers = [item.number for item in instrument.items]
    return f"{prefix}{numbers[0]} .. {prefix}{numbers[-1]}"


# --------------------------------------------------------------------------- reading


_Rows = Generator[tuple[int, list[Cell]], None, None]


@contextmanager
def _open_rows(source: Target, problems: _Problems) -> Iterator[_Rows]:
    """Yield an iterator of (line, cells) over the non-blank rows, header included.

    Unreadable input (undecodable bytes, binary data, a broken workbook) becomes a problem and
    ends the iteration: nothing after it can be trusted.
    """
    if isinstance(source, (str, os.PathLike)) and is_xlsx(source):
        with _xlsx_rows(Path(source), problems) as rows:
            yield rows
        return
    if isinstance(source, (str, os.PathLike)):
        try:
            stream: IO[bytes] = open(source, "rb")
        except OSError as exc:
            problems.add(Problem(f"cannot read {source}: {exc.strerror or exc}"))
            yield _no_rows()
            return
        with stream, closing(_csv_rows(stream, problems)) as rows:
            yield rows
        return
    with closing(_csv_rows(source, problems)) as rows:
        yield rows


def _no_rows() -> _Rows:
    yield from ()


class _Unreadable(Exception):
    """Raised inside the line decoder; carries the physical line it happened on."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _text_lines(stream: IO[bytes]) -> Iterator[str]:
    """Decode the file line by line, so a bad byte is reported on its own line.

    Splitting raw bytes on newlines is safe for UTF-8 (no multi-byte sequence contains
    0x0A). Excel's "CSV UTF-8" starts with a byte-order mark, which is not part of the first
    column's name. A NUL character means binary data: no spreadsheet writes it in CSV.
    """
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Unreadable(
                number,
                "the file is not UTF-8 text (is it a spreadsheet or in another encoding? "
                "save it as 'CSV UTF-8' or as .xlsx)",
            ) from None
        if "\x00" in text:
            raise _Unreadable(number, "the file contains binary data; it does not look like CSV")
        yield text


def _csv_rows(stream: IO[bytes], problems: _Problems) -> _Rows:
    reader = csv.reader(_text_lines(stream), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _Unreadable as exc:
            problems.add(Problem(exc.reason, line=exc.line))
            return
        except csv.Error as exc:
            problems.add(Problem(f"the file is not valid CSV ({exc})", line=reader.line_num))
            return
        if cells:  # a completely empty line is not a row
            row: list[Cell] = list(cells)
            yield start, row


@contextmanager
def _xlsx_rows(path: Path, problems: _Problems) -> Iterator[_Rows]:
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        problems.add(Problem(f"cannot read {path.name} as an .xlsx workbook ({exc})"))
        yield _no_rows()
        return
    try:
        sheet = workbook.worksheets[0]
        # Sheets written by other tools often carry a wrong size record; read what is there.
        sheet.reset_dimensions()
        with closing(_sheet_rows(sheet.iter_rows(min_row=1, values_only=True))) as rows:
            yield rows
    finally:
        workbook.close()


def _sheet_rows(rows: Iterator[Sequence[Cell]]) -> _Rows:
    for number, values in enumerate(rows, start=1):
        cells = list(values)
        while cells and cells[-1] is None:  # formatting can leave trailing empty cells
            cells.pop()
        if cells:
            yield number, cells


# --------------------------------------------------------------------------- header layout


@dataclass(frozen=True)
class _ItemColumn:
    name: str
    position: int
    allowed: frozenset[int]
    fast: dict[str, int]  # exact cell text -> value (including "" -> missing marker)


@dataclass(frozen=True)
class _Layout:
    """Where the item columns are and how to read them, derived from the header once."""

    instrument: Instrument
    header: list[Cell]
    width: int
    items: tuple[_ItemColumn, ...]
    missing: int  # marker for an unanswered item in the batch matrix
    line_kind: str
    pick: Callable[[Sequence[Cell]], Sequence[Cell]]  # the item cells of a row, in item order
    tables: tuple[dict[str, int], ...]  # each item column's ``fast`` table, in item order

    @staticmethod
    def build(
        header: list[Cell],
        instrument: Instrument,
        prefix: str,
        line: int,
        line_kind: str,
        problems: _Problems,
    ) -> _Layout:
        names = [_header_name(cell) for cell in header]
        positions: dict[str, list[int]] = {}
        for position, name in enumerate(names):
            positions.setdefault(name, []).append(position)

        def header_problem(message: str, column: str | None = None) -> None:
            problems.add(Problem(message, line=line, column=column, line_kind=line_kind))

        wanted = [(f"{prefix}{item.number}", item) for item in instrument.items]
        if not any(name in positions for name, _ in wanted):
            header_problem(
                f"no item columns found: expected {_item_span(instrument, prefix)} "
                "in the header row (use --prefix if the columns are named differently)"
            )
        else:
            for name, _ in wanted:
                if name not in positions:
                    header_problem("item column is missing from the header", name)
                elif len(positions[name]) > 1:
                    header_problem("item column appears more than once in the header", name)
        clashes = [code for code in instrument.score_codes if code in positions]
        if clashes:
            # One line, not one per score: re-scoring an already scored file is the usual cause.
            header_problem(
                f"column{'s' if len(clashes) > 1 else ''} {', '.join(clashes)} would clash with "
                "the score columns this command adds (was the file scored already?); "
                "rename or remove them"
            )
        missing = min(v for rs in instrument.response_sets for v in rs.values) - 1
        items = []
        for name, item in wanted:
            values = instrument.response_set(item.response_set).values
            fast = {str(v): v for v in values} | {"": missing}
            items.append(_ItemColumn(name, positions.get(name, [-1])[0], frozenset(values), fast))
        where = [column.position for column in items]
        pick: Callable[[Sequence[Cell]], Sequence[Cell]] = (
            operator.itemgetter(*where) if len(where) > 1 else lambda cells: (cells[where[0]],)
        )
        tables = tuple(column.fast for column in items)
        return _Layout(
            instrument, header, len(header), tuple(items), missing, line_kind, pick, tables
        )


def _header_name(cell: Cell) -> str:
    return "" if cell is None else str(cell).strip()


# --------------------------------------------------------------------------- rows


class _CellError(Exception):
    pass


def _score_rows(rows: _Rows, layout: _Layout, sink: _Sink, problems: _Problems) -> int:
    """Validate every row; score and write them in chunks while the file is still clean."""
    pending_cells: list[list[Cell]] = []
    pending_items: list[list[int]] = []
    row_number = 0

    def flush() -> None:
        if pending_cells:
            matrix = np.array(pending_items, dtype=np.int32)
            scores = score_batch(layout.instrument, matrix, missing=layout.missing)
            sink.write(pending_cells, pending_items, scores.tolist())
            pending_cells.clear()
            pending_items.clear()

    for line, cells in rows:
        row_number += 1
        values = _read_row(cells, layout, row_number, line, problems)
        if values is None or problems:
            continue  # keep validating to report every problem, but stop producing output
        pending_cells.append(cells)
        pending_items.append(values)
        if len(pending_cells) >= CHUNK_ROWS:
            flush()
    if not problems:
        flush()
    return row_number


def _read_row(
    cells: list[Cell], layout: _Layout, row: int, line: int, problems: _Problems
) -> list[int] | None:
    """The row's item values (``layout.missing`` where blank), or None after adding problems."""
    if len(cells) != layout.width:
        if layout.line_kind == "line" or len(cells) > layout.width:
            _ragged(cells, layout, row, line, problems)
            return None
        cells.extend([None] * (layout.width - len(cells)))  # a sheet row ends at its last value
    # Usual case: every item cell is exactly "", "1", "2", ... -- one C-level pass.
    # (A non-text worksheet cell simply misses the tables and takes the careful path.)
    texts = cast("Sequence[str]", layout.pick(cells))
    quick: list[int | None] = list(map(dict.get, layout.tables, texts))
    if None not in quick:
        return cast("list[int]", quick)
    return _read_cells_carefully(cells, layout, row, line, problems)


def _read_cells_carefully(
    cells: list[Cell], layout: _Layout, row: int, line: int, problems: _Problems
) -> list[int] | None:
    values: list[int] = []
    ok = True
    for column in layout.items:
        cell = cells[column.position]
        value = column.fast.get(cell) if isinstance(cell, str) else None
        if value is None:
            try:
                value = _parse_cell(cell, column, layout.missing)
            except _CellError as exc:
                problems.add(Problem(str(exc), row, line, column.name, layout.line_kind))
                ok = False
                continue
        values.append(value)
    return values if ok else None


def _ragged(cells: list[Cell], layout: _Layout, row: int, line: int, problems: _Problems) -> None:
    if layout.line_kind == "line":
        message = f"has {len(cells)} fields but the header has {layout.width}"
        problems.add(Problem(message, row, line))
        return
    extra = next(i for i in range(layout.width, len(cells)) if cells[i] is not None)
    message = f"a value beyond the last header column ({get_column_letter(extra + 1)})"
    problems.add(Problem(message, row, line, line_kind=layout.line_kind))


def _parse_cell(cell: Cell, column: _ItemColumn, missing: int) -> int:
    """A cell that is not a plain answer text: xlsx numbers, padded or decimal text, errors."""
    if cell is None:
        return missing
    if isinstance(cell, bool):
        raise _CellError(f"{cell} is not an answer value")
    if isinstance(cell, int):
        value = cell
    elif isinstance(cell, float):
        value = _whole(cell, repr(cell))
    elif isinstance(cell, str):
        text = cell.strip()
        if not text:
            return missing
        try:
            number = float(text)
        except ValueError:
            hint = " (leave the cell blank for a missing answer)"
            raise _CellError(
                f"{cell!r} is not a number{hint if text.lower() in _MISSING_WORDS else ''}"
            ) from None
        value = _whole(number, repr(cell))
    else:
        raise _CellError(f"{cell!r} is not a number")
    if value not in column.allowed:
        raise _CellError(
            f"{value} is outside the item's response values ({_describe(column.allowed)})"
        )
    return value


def _whole(number: float, shown: str) -> int:
    if not math.isfinite(number):
        raise _CellError(f"{shown} is not a number")
    if not number.is_integer():
        raise _CellError(f"{shown} is not a whole number")
    return int(number)


def _describe(values: frozenset[int]) -> str:
    ordered = sorted(values)
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(str(v) for v in ordered)


# --------------------------------------------------------------------------- writing


class _Sink:
    """Where scored rows go; nothing is visible at the destination before :meth:`commit`.

    :meth:`close` after a commit does nothing; without one it throws the output away.
    """

    def __init__(self, layout: _Layout, *, typed_items: bool) -> None:
        self.layout = layout
        # Re-write item cells from their validated values when the cell type may differ from
        # the answer (xlsx in or out); plain CSV to CSV copies the text verbatim.
        self.typed_items = typed_items
        self.committed = False

    def write(
        self, cells: list[list[Cell]], items: list[list[int]], scores: list[list[float]]
    ) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        self._commit()
        self.committed = True

    def close(self) -> None:
        if not self.committed:
            self._abort()

    def _commit(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _typed(self, row: list[Cell], values: list[int]) -> list[Cell]:
        out = list(row)
        missing = self.layout.missing
        for column, value in zip(self.layout.items, values):
            out[column.position] = None if value == missing else value
        return out


class _CsvSink(_Sink):
    def __init__(self, layout: _Layout, stream: IO[bytes], *, typed_items: bool) -> None:
        super().__init__(layout, typed_items=typed_items)
        self.stream = stream
        self.text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        self.writer = csv.writer(self.text)  # RFC 4180: CRLF line ends, minimal quoting
        names = [cell if isinstance(cell, str) else _header_name(cell) for cell in layout.header]
        self.writer.writerow(names + list(layout.instrument.score_codes))

    def write(
        self, cells: list[list[Cell]], items: list[list[int]], scores: list[list[float]]
    ) -> None:
        for row, values, row_scores in zip(cells, items, scores):
            if self.typed_items:
                row = ["" if c is None else c for c in self._typed(row, values)]
            # repr keeps every bit of each float; NaN (a missing score) becomes a blank cell.
            # One repr of the whole list is much faster than one call per score, and a list's
            # repr shows each float exactly as repr(float) does.
            texts = repr(row_scores)[1:-1].replace("nan", "").split(", ")
            self.writer.writerow(row + texts)

    def finish(self) -> None:
        self.text.flush()
        self.text.detach()


class _XlsxSink(_Sink):
    def __init__(self, layout: _Layout) -> None:
        super().__init__(layout, typed_items=True)
        self.workbook = openpyxl.Workbook(write_only=True)
        self.sheet = self.workbook.create_sheet("scores")
        self.sheet.append(list(layout.header) + list(layout.instrument.score_codes))

    def write(
        self, cells: list[list[Cell]], items: list[list[int]], scores: list[list[float]]
    ) -> None:
        for row, values, row_scores in zip(cells, items, scores):
            out = self._typed(row, values) + [s if s == s else None for s in row_scores]
            self.sheet.append([self._exact(c) if isinstance(c, float) else c for c in out])

    def _exact(self, value: float) -> WriteOnlyCell:
        """A number cell holding exactly ``value``.

        openpyxl writes floats with 16 significant digits, which can change the last bit
        (58.333333333333336 would come back as 58.33333333333334); a numeric cell given
        the shortest round-trip text (``repr``) keeps every bit, as Excel itself does.
        """
        cell = WriteOnlyCell(self.sheet, value=repr(value))
        cell.data_type = "n"
        return cell


class _FileCsvSink(_CsvSink):
    def __init__(self, layout: _Layout, temp: _TempFile, *, typed_items: bool) -> None:
        self.temp = temp
        super().__init__(layout, temp.open(), typed_items=typed_items)

    def _commit(self) -> None:
        self.finish()
        self.stream.close()
        self.temp.publish()

    def _abort(self) -> None:
        self.stream.close()
        self.temp.discard()


class _StreamCsvSink(_CsvSink):
    """Spool to a temporary file, copy to the stream at the end: no partial output on error."""

    def __init__(self, layout: _Layout, target: BinaryIO, *, typed_items: bool) -> None:
        self.target = target
        super().__init__(
            layout, tempfile.SpooledTemporaryFile(max_size=8 << 20), typed_items=typed_items
        )

    def _commit(self) -> None:
        self.finish()
        self.stream.seek(0)
        shutil.copyfileobj(self.stream, self.target)
        self.target.flush()
        self.stream.close()

    def _abort(self) -> None:
        self.stream.close()


class _FileXlsxSink(_XlsxSink):
    def __init__(self, layout: _Layout, temp: _TempFile) -> None:
        super().__init__(layout)
        self.temp = temp

    def _commit(self) -> None:
        self.workbook.save(self.temp.path)
        self.temp.publish()

    def _abort(self) -> None:
        # Finish openpyxl's row writer (else it complains when garbage-collected) and drop
        # its spool file now rather than at interpreter exit: web workers live long.
        self.sheet.close()
        spool = getattr(self.sheet, "_writer", None)
        if spool is not None:
            spool.cleanup()
        self.temp.discard()


class _TempFile:
    """A file beside the destination, renamed over it only on success (atomic on POSIX).

    Created with mode 0o666 so the process umask applies, as for any new file; mkstemp's
    0o600 would silently make results unreadable to the analyst's team.
    """

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        for _ in range(100):
            candidate = destination.with_name(f".{destination.name}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            os.close(fd)
            self.path = candidate
            return
        raise FileExistsError(f"cannot create a temporary file beside {destination}")

    def open(self) -> IO[bytes]:
        return open(self.path, "wb")

    def publish(self) -> None:
        os.replace(self.path, self.destination)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@contextmanager
def _open_sink(
    destination: Target, layout: _Layout, *, as_xlsx: bool, problems: _Problems
) -> Iterator[_Sink]:
    """Open the sink; abort it (removing any temporary file) unless it was committed."""
    factory: Callable[[], _Sink]
    typed = layout.line_kind != "line" or as_xlsx
    if isinstance(destination, (str, os.PathLike)):
        path = Path(destination)

        def factory() -> _Sink:
            temp = _TempFile(path)
            if as_xlsx:
                return _FileXlsxSink(layout, temp)
            return _FileCsvSink(layout, temp, typed_items=typed)

    else:
        stream = destination

        def factory() -> _Sink:
            return _StreamCsvSink(layout, stream, typed_items=typed)

    try:
        sink = factory()
    except OSError as exc:
        problems.add(Problem(f"cannot write {destination}: {exc.strerror or exc}"))
        raise problems.error() from exc
    try:
        yield sink
    finally:
        sink.close()
