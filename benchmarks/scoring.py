"""Scoring throughput: single questionnaires, the numpy batch path, and the file command.

Run: ``.venv/bin/python benchmarks/scoring.py`` (add ``--help`` for sizes). Prints figures
only; tests never assert timings. The process is pinned to one CPU core where the OS allows,
because the target (1,000,000 questionnaires in under 1 s) is a one-core target.

Data: random QLQ-C30 answers, each item independently missing with probability 10%.
``--json`` ends the output with one JSON line of figures for benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _fixtures import figure, print_figures_json  # noqa: E402

from pro_app.domain.instruments import Instrument, default_registry  # noqa: E402
from pro_app.domain.scoring import score_answers, score_batch  # noqa: E402
from pro_app.services.score_file import score_file  # noqa: E402


def random_answers(instrument: Instrument, rows: int, missing: float, seed: int) -> np.ndarray:
    """int8 matrix, 0 = missing; values uniform over each item's response set."""
    rng = np.random.default_rng(seed)
    high = np.array([instrument.response_set(i.response_set).maximum for i in instrument.items])
    matrix = rng.integers(1, high + 1, size=(rows, len(high)), dtype=np.int8)
    matrix[rng.random(matrix.shape, dtype=np.float32) < missing] = 0
    return matrix


def best_of(repeats: int, action: Callable[[], object]) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


TARGET_SECONDS = 1.0  # for 1,000,000 questionnaires on one core


def bench_batch(instrument: Instrument, matrix: np.ndarray, repeats: int) -> float:
    seconds = best_of(repeats, lambda: score_batch(instrument, matrix))
    tracemalloc.start()
    scores = score_batch(instrument, matrix)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result_mb = scores.nbytes / 1e6
    print(f"batch path : {len(matrix):>9,} questionnaires in {seconds:.3f} s "
          f"(best of {repeats}) = {len(matrix) / seconds:,.0f}/s")
    print(f"             peak traced memory {peak / 1e6:.0f} MB, of which the result array "
          f"is {result_mb:.0f} MB and the input {matrix.nbytes / 1e6:.0f} MB (not counted)")
    return seconds


def bench_single(instrument: Instrument, matrix: np.ndarray, total: int) -> float:
    ids = instrument.item_ids
    questionnaires = [
        {item_id: (value or None) for item_id, value in zip(ids, row)}
        for row in matrix.tolist()
    ]
    start = time.perf_counter()
    for answers in questionnaires:
        score_answers(instrument, answers)
    seconds = time.perf_counter() - start
    rate = len(questionnaires) / seconds
    print(f"single path: {len(questionnaires):>9,} questionnaires in {seconds:.3f} s "
          f"= {rate:,.0f}/s (1 dict in, 16 ScaleResults out, each call validated); "
          f"extrapolated {total:,} in {total / rate:.1f} s")
    # Same numbers as the batch path, bit for bit (a cheap sanity check, not a test).
    batch = score_batch(instrument, matrix[:1000])
    for row, answers in zip(batch, questionnaires[:1000]):
        single = [np.nan if r.value is None else r.value for r in
                  score_answers(instrument, answers).values()]
        assert np.array_equal(row, np.array(single), equal_nan=True)
    return rate


def bench_file(instrument: Instrument, matrix: np.ndarray) -> float:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "answers.csv"
        with source.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["subject"] + [f"q{item.number}" for item in instrument.items])
            for index, row in enumerate(matrix.tolist()):
                writer.writerow([f"S{index}"] + [str(v) if v else "" for v in row])
        start = time.perf_counter()
        score_file(source, Path(folder) / "scored.csv", instrument=instrument)
        seconds = time.perf_counter() - start
    print(f"score file : {len(matrix):>9,} CSV rows in {seconds:.2f} s = "
          f"{len(matrix) / seconds:,.0f} rows/s (parse, validate, score, write)")
    return len(matrix) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="batch size")
    parser.add_argument("--single-rows", type=int, default=200_000)
    parser.add_argument("--file-rows", type=int, default=100_000)
    parser.add_argument("--missing", type=float, default=0.10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    instrument = default_registry().get("qlq_c30")
    matrix = random_answers(instrument, args.rows, args.missing, args.seed)
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} core(s), "
          f"{args.missing:.0%} of items missing")
    batch = bench_batch(instrument, matrix, args.repeats)
    single = bench_single(instrument, matrix[: args.single_rows], args.rows)
    per_second = bench_file(instrument, matrix[: args.file_rows])
    max_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"process peak RSS: {max_rss_kb / 1024:.0f} MB (includes the test data)")
    if args.json:
        full = args.rows == 1_000_000
        print_figures_json([
            figure(f"Scoring batch, {args.rows:,} questionnaires, 1 core", batch, "s",
                   budget=f"< {TARGET_SECONDS:.0f} s for 1,000,000",
                   passed=batch < TARGET_SECONDS if full else None,
                   note=f"best of {args.repeats}; {args.rows / batch:,.0f}/s"),
            figure("Scoring one questionnaire at a time", single, "/s",
                   note=f"{args.single_rows:,} questionnaires; 1,000,000 would take {1_000_000 / single:.1f} s"),
            figure("Scoring a CSV file (pro-app score)", per_second, "rows/s", note=f"{args.file_rows:,} rows"),
        ])


if __name__ == "__main__":
    main()
