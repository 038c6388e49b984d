"""``pro-app score``: score a CSV or XLSX file of questionnaires, no app or database needed."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from pro_app.domain.instruments import NotRegisteredError, default_registry
from pro_app.services.score_file import ScoreFileError, Target, score_file

# Usage errors and bad input share click's exit status 2, so scripts can tell them from
# success (0) and from crashes (1).
BAD_INPUT = 2


@click.command("score")
@click.argument("input_file", metavar="INPUT")
@click.option(
    "--output", "-o", "output_file", required=True, metavar="OUTPUT",
    help="File to write (.xlsx for a workbook, otherwise CSV); '-' for stdout.",
)
@click.option(
    "--prefix", default="q", show_default=True,
    help="Item columns are named PREFIX1, PREFIX2, ... after the item numbers.",
)
@click.option(
    "--instrument", "instrument_code", default="qlq_c30", show_default=True,
    help="Code of the instrument whose scoring rules apply.",
)
def score_command(input_file: str, output_file: str, prefix: str, instrument_code: str) -> None:
    """Score the questionnaires in INPUT and write them with their scores to OUTPUT.

    INPUT is a CSV (UTF-8) or .xlsx file, or '-' for CSV on stdin, with one questionnaire per
    row and item columns q1 .. q30; a blank cell is a missing answer. OUTPUT repeats every
    input column and adds one column per scale and summary score, blank where the scoring
    rules leave a score missing. On any problem nothing is written, the problems are listed
    on stderr and the exit status is 2.

    \b
    Examples:
      pro-app score answers.csv --output scored.csv
      pro-app score answers.xlsx -o scored.xlsx
      cat answers.csv | pro-app score - -o - --prefix item_
    """
    try:
        instrument = default_registry().get(instrument_code)
    except NotRegisteredError as exc:
        _fail([str(exc)])
    source: Target = sys.stdin.buffer if input_file == "-" else input_file
    destination: Target = sys.stdout.buffer if output_file == "-" else output_file
    try:
        report = score_file(source, destination, instrument=instrument, prefix=prefix)
    except ScoreFileError as exc:
        _fail(exc.lines())
    if output_file != "-":
        noun = "questionnaire" if report.rows == 1 else "questionnaires"
        click.echo(
            f"Scored {report.rows} {noun} with {report.instrument} {report.version} "
            f"(algorithm {report.algorithm_version}) -> {output_file}",
            err=True,
        )


def _fail(lines: list[str]) -> NoReturn:
    for line in lines:
        click.echo(f"error: {line}", err=True)
    raise click.exceptions.Exit(BAD_INPUT)
