"""The benchmark harness itself: the ceiling app under gunicorn, loaded by the load generator.

A one-second run of ``benchmarks/ceiling_app.py`` served with ``make run``'s gunicorn command
and loaded by ``benchmarks/loadgen.py`` in its own process, as ``benchmarks/web.py`` does.
Only the shape of the result is checked (requests made, no errors, every field present),
never a timing: the figures come from ``make bench``.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import scratch_postgres

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from run_all import Outcome, table  # noqa: E402
from web import (  # noqa: E402
    POSTGRES_REFERENCE_SPEC, LoadSettings, audited_save_reference_spec, ceiling_server, cpu_note, load,
    make_run_command, serving, workers_of,
)

LATENCY_FIELDS = {"mean", "p50", "p90", "p95", "p99", "max"}
RESULT_FIELDS = {"connections", "seconds", "requests", "answered", "rps", "errors", "statuses", "transport_errors",
                 "unexpected", "bytes_per_response", "latency_ms"}


def test_ceiling_app_under_load_gives_a_well_formed_result(tmp_path: Path) -> None:
    database = tmp_path / "ceiling.sqlite3"
    settings = LoadSettings(seconds=1.0, warmup=0.2, connections=4)
    with serving("ceiling", "ceiling_app:app", {"CEILING_DATABASE": str(database)}, tmp_path,
                 chdir=BENCHMARKS) as server:
        assert "--chdir" in server.command and f"127.0.0.1:{server.port}" in server.command
        assert workers_of(server.command) == workers_of(make_run_command()[0])
        page = load(server.port, {"connections": [[{"method": "GET", "path": "/form"}]]}, settings, tmp_path,
                    label="form", server=server)
        insert = load(server.port, {"connections": [[{
            "method": "POST", "path": "/insert", "body": '{"value": {v}}',
            "headers": {"Content-Type": "application/json", "Idempotency-Key": "{uuid}"},
        }]]}, settings, tmp_path, label="insert", server=server)
        without_server = load(server.port, {"connections": [[{"method": "GET", "path": "/plain"}]]}, settings, tmp_path,
                           label="plain")
        assert not server.errors()

    for result in (page, insert):
        assert RESULT_FIELDS <= set(result), result
        assert LATENCY_FIELDS <= set(result["latency_ms"]), result
        assert result["requests"] > 0 and result["rps"] > 0, result
        assert result["errors"] == 0 and result["transport_errors"] == {} and result["unexpected"] == [], result
        assert result["statuses"] == {"200": result["requests"]}, result
        assert result["connections"] == 4
        assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
        # The warm-up's answers are counted too, and the workers' CPU time is spread over all of them.
        assert result["answered"] > result["requests"], result
        assert result["worker_cpu_ms"] > 0, result
    assert "worker_cpu_ms" not in without_server and without_server["statuses"] == {"200": without_server["requests"]}
    assert page["bytes_per_response"] > 5000  # the 30-radio form, about the question page's size

    # Every insert answered 200 is a committed row, with its own request id, alternating values.
    with sqlite3.connect(database) as connection:
        rows, distinct_ids, values = connection.execute(
            "SELECT count(*), count(DISTINCT request_id), group_concat(DISTINCT value) FROM saves").fetchone()
    assert rows >= insert["requests"] and distinct_ids == rows
    assert sorted(values.split(",")) == ["1", "2"]


def test_the_audited_save_reference_writes_a_receipt_an_answer_and_a_chained_event(tmp_path: Path) -> None:
    settings = LoadSettings(seconds=1.0, warmup=0.2, connections=4)
    with ceiling_server(tmp_path) as server:
        result = load(server.port, audited_save_reference_spec(4), settings, tmp_path, label="audited")
        assert not server.errors()
    assert result["requests"] > 0 and result["errors"] == 0 and result["statuses"] == {"200": result["requests"]}
    with sqlite3.connect(tmp_path / "ceiling.sqlite3") as connection:
        receipts, saved = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE outcome = 'saved') FROM receipts").fetchone()
        events, first, last, gaps = connection.execute(
            "SELECT count(*), min(seq), max(seq), count(*) FILTER (WHERE prev_hash NOT IN "
            "(SELECT hash FROM events) AND seq > 1) FROM events").fetchone()
        head = connection.execute("SELECT last_seq, last_hash FROM head").fetchone()
        last_hash = connection.execute("SELECT hash FROM events WHERE seq = ?", (last,)).fetchone()[0]
        answers, questionnaires = connection.execute(
            "SELECT count(*), count(DISTINCT assessment_id) FROM answers").fetchone()
    assert receipts >= result["requests"]
    assert events == saved > 0 and (first, last) == (1, events) and gaps == 0  # one event per change, chained
    assert head == (last, last_hash)
    assert questionnaires == 4 and answers <= 4 * 30  # each connection answers its own questionnaire's items


def test_the_postgresql_reference_commits_every_insert_it_answers(tmp_path: Path) -> None:
    settings = LoadSettings(seconds=1.0, warmup=0.2, connections=4)
    with scratch_postgres("reference") as url:
        with ceiling_server(tmp_path, url) as server:
            result = load(server.port, POSTGRES_REFERENCE_SPEC, settings, tmp_path, label="reference")
            assert not server.errors()
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                rows, distinct_ids, values = connection.execute(text(
                    "SELECT count(*), count(DISTINCT request_id), string_agg(DISTINCT value::text, ',') FROM saves"
                )).one()
        finally:
            engine.dispose()
    assert result["requests"] > 0 and result["errors"] == 0 and result["statuses"] == {"200": result["requests"]}
    assert rows >= result["requests"] and distinct_ids == rows
    assert sorted(values.split(",")) == ["1", "2"]


def test_a_failing_script_becomes_an_error_row_of_the_table() -> None:
    good = Outcome("scoring.py", ["--json"], 3.0, "ok", [{
        "name": "Scoring batch", "value": 0.5, "unit": "s", "ceiling": None, "ratio": None,
        "budget": "< 1 s", "pass": True, "note": ""}])
    broken = Outcome("web.py", ["--json"], 9.0, "failed (exit 1)", [], tail="RuntimeError: gunicorn exited with 3")
    lines = table([good, broken])
    assert lines[0].startswith("| Script | Figure | Value | Ceiling | Ratio | Budget | Result |")
    assert any("Scoring batch" in line and "| pass |" in line for line in lines)
    assert any(line.startswith("| web.py | failed (exit 1) |") and "| ERROR |" in line and "gunicorn exited" in line
               for line in lines)
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_the_cpu_note_gives_the_workers_cpu_and_the_ceilings_share_of_it() -> None:
    assert cpu_note({"worker_cpu_ms": 1.0}) == "workers' CPU 1.00 ms/request"
    assert cpu_note({"worker_cpu_ms": 2.0}, {"worker_cpu_ms": 0.5}, "c") == (
        "workers' CPU 2.00 ms/request (ceiling (c) 0.50 ms, 25% of it)")
    assert cpu_note({"worker_cpu_ms": 2.0}, {"rps": 100.0}, "c") == "workers' CPU 2.00 ms/request"
    assert cpu_note({"rps": 100.0}) == ""  # not measured (a worker was replaced, or no server given)
