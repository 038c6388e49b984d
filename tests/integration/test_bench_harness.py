"""The benchmark harness itself: the ceiling app under gunicorn, loaded by the load generator.

A one-second run of ``benchmarks/ceiling_app.py`` served with ``make run``'s gunicorn command
and loaded by ``benchmarks/loadgen.py`` in its own process, as ``benchmarks/web.py`` does.
Only the shape of the result is checked (requests made, no errors, every field present),
never a timing: the figures come from ``make bench``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import scratch_postgres

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from run_all import Outcome, table  # noqa: E402
import lighthouse  # noqa: E402
import web  # noqa: E402
from loadgen import latency_summary  # noqa: E402
from web import (  # noqa: E402
    POSTGRES_REFERENCE_SPEC, LoadSettings, audited_save_reference_spec, ceiling_server, cpu_note, load,
    load_in_turns, make_run_command, pooled, serving, turns_note, workers_of,
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


def test_a_figure_and_its_ceiling_measured_in_turns_pool_every_turn(tmp_path: Path) -> None:
    settings = LoadSettings(seconds=1.2, warmup=0.3, connections=4)
    with serving("ceiling", "ceiling_app:app", {"CEILING_DATABASE": str(tmp_path / "c.sqlite3")}, tmp_path,
                 chdir=BENCHMARKS) as server:
        plain = load(server.port, {"connections": [[{"method": "GET", "path": "/plain"}]]}, settings, tmp_path,
                     label="raw", latencies=True)
        form, ceiling = load_in_turns(server, {"connections": [[{"method": "GET", "path": "/form"}]]}, server,
                                      {"connections": [[{"method": "GET", "path": "/plain"}]]}, settings, tmp_path,
                                      label="turns")
        assert not server.errors()

    # The load generator gives every measured request's latency when asked, ascending.
    assert len(plain["latencies_ms"]) == plain["requests"] > 0
    assert plain["latencies_ms"] == sorted(plain["latencies_ms"])
    assert latency_summary(plain["latencies_ms"])["p99"] == pytest.approx(plain["latency_ms"]["p99"], abs=0.01)

    for result in (form, ceiling):
        assert len(result["rounds_rps"]) == 3 and all(rps > 0 for rps in result["rounds_rps"]), result
        assert result["errors"] == 0 and result["statuses"] == {"200": result["requests"]}, result
        assert result["seconds"] == pytest.approx(1.2, abs=0.1)  # the measured time, shared out among the turns
        assert result["answered"] > result["requests"] > 0 and result["worker_cpu_ms"] > 0
        assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert form["bytes_per_response"] > 5000 > 100 > ceiling["bytes_per_response"]
    assert turns_note(form, ceiling).startswith("3 turns with its ceiling: ")


def test_turns_alternate_which_side_goes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, str, LoadSettings, bool]] = []

    def recording_load(port: int, spec: dict[str, object], settings: LoadSettings, folder: Path, *,
                       label: str, server: object = None, latencies: bool = False) -> dict[str, object]:
        calls.append((port, label, settings, latencies))
        return {"connections": 4, "seconds": settings.seconds, "requests": 10, "answered": 12, "rps": 10.0,
                "errors": 0, "statuses": {"200": 10}, "transport_errors": {}, "unexpected": [],
                "bytes_per_response": 20, "latency_ms": {}, "latencies_ms": [1.0] * 10, "worker_cpu_ms": 0.5}

    monkeypatch.setattr(web, "load", recording_load)
    app = web.Server.__new__(web.Server)
    app.port = 1
    ceiling = web.Server.__new__(web.Server)
    ceiling.port = 2
    mine, theirs = load_in_turns(app, {}, ceiling, {}, LoadSettings(9.0, 3.0, 4), tmp_path, label="x", turns=3)
    assert [port for port, *_ in calls] == [2, 1, 1, 2, 2, 1]
    assert all(settings == LoadSettings(3.0, 1.0, 4) and latencies for _port, _label, settings, latencies in calls)
    assert len({label for _port, label, *_ in calls}) == 6  # each load its own spec file
    assert mine["requests"] == theirs["requests"] == 30 and mine["seconds"] == 9.0


def _round(seconds: float, latencies: list[float], **extra: object) -> dict[str, object]:
    return {"connections": 4, "seconds": seconds, "requests": len(latencies), "answered": len(latencies) + 2,
            "rps": len(latencies) / seconds, "errors": 0, "statuses": {"200": len(latencies)},
            "transport_errors": {}, "unexpected": [], "bytes_per_response": 100, "latency_ms": {},
            "latencies_ms": latencies, **extra}


def test_pooled_rounds_add_up_and_take_percentiles_of_all_their_requests() -> None:
    slow = _round(1.0, [float(n) for n in range(100, 200)], worker_cpu_ms=2.0, bytes_per_response=300,
                  statuses={"200": 98, "503": 2}, errors=2, unexpected=["a", "b", "c"], transport_errors={"OSError": 1})
    fast = _round(2.0, [float(n) for n in range(1, 301)], worker_cpu_ms=1.0, unexpected=["d", "e", "f"],
                  transport_errors={"OSError": 2})
    together = pooled([slow, fast])
    assert together["requests"] == 400 and together["seconds"] == 3.0 and together["rps"] == pytest.approx(133.3)
    assert together["answered"] == 404 and together["rounds_rps"] == [100.0, 150.0]
    assert together["statuses"] == {"200": 398, "503": 2} and together["errors"] == 2
    assert together["transport_errors"] == {"OSError": 3} and together["unexpected"] == ["a", "b", "c", "d", "e"]
    assert together["bytes_per_response"] == 150  # weighted by each round's requests
    everything = sorted([float(n) for n in range(100, 200)] + [float(n) for n in range(1, 301)])
    assert together["latency_ms"] == latency_summary(everything)
    assert together["latency_ms"]["p99"] == 296.0 and together["latency_ms"]["max"] == 300.0
    # The workers' CPU over every request answered in both rounds: (2.0 x 102 + 1.0 x 302) / 404.
    assert together["worker_cpu_ms"] == pytest.approx((2.0 * 102 + 1.0 * 302) / 404, abs=0.001)
    fast.pop("worker_cpu_ms")
    assert "worker_cpu_ms" not in pooled([slow, fast])  # not measured in every round: not given


def test_the_turns_note_gives_each_rounds_ratio() -> None:
    assert turns_note({"rounds_rps": [50.0, 60.0, 45.0]}, {"rounds_rps": [100.0, 100.0, 90.0]}) == (
        "3 turns with its ceiling: 50%, 60%, 50%")
    assert turns_note({"rps": 50.0}, {"rps": 100.0}) == ""  # measured once
    assert turns_note({"rounds_rps": [50.0, 60.0]}, {"rounds_rps": [100.0, 0.0]}) == ""  # a ceiling round failed


def _lighthouse_report(**extra: object) -> dict[str, object]:
    return {"categories": {"performance": {"score": 1.0},
                           "accessibility": {"score": 1.0, "auditRefs": [{"id": "color-contrast"}]}},
            "audits": {"color-contrast": {"score": 1}}, "finalDisplayedUrl": "http://127.0.0.1/q/1", **extra}


def test_a_lighthouse_run_whose_trace_was_not_recorded_is_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: list[object] = []

    def next_outcome(url: str, cookie: str, folder: Path, number: int) -> dict[str, object]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, dict)
        return outcome

    monkeypatch.setattr(lighthouse, "run_lighthouse", next_outcome)
    not_recorded = lighthouse.TraceNotRecorded("Please run Lighthouse again. (NO_NAVSTART)")
    outcomes[:] = [not_recorded, _lighthouse_report()]
    run, again = lighthouse.measured_run("http://127.0.0.1/q/1", "c=1", tmp_path, 0)
    assert again == 1 and run["performance"] == 100 and run["accessibility"] == 100 and outcomes == []

    # A trace reported in the result as not recorded is run again as well; another error is not.
    outcomes[:] = [_lighthouse_report(runtimeError={"code": "NO_DCL", "message": "..."}), _lighthouse_report()]
    assert lighthouse.measured_run("u", "c", tmp_path, 0)[1] == 1
    outcomes[:] = [_lighthouse_report(runtimeError={"code": "NO_FCP", "message": "The page did not paint"}),
                   _lighthouse_report()]
    with pytest.raises(RuntimeError, match="NO_FCP") as raised:
        lighthouse.measured_run("u", "c", tmp_path, 0)
    assert not isinstance(raised.value, lighthouse.TraceNotRecorded) and len(outcomes) == 1

    # Not recorded three times: the failure stands.
    outcomes[:] = [not_recorded] * 3 + [_lighthouse_report()]
    with pytest.raises(lighthouse.TraceNotRecorded):
        lighthouse.measured_run("u", "c", tmp_path, 0)
    assert len(outcomes) == 1


def test_lighthouse_failing_to_record_the_trace_is_told_from_other_failures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    said = {"stderr": ""}

    def lighthouse_exits_with_1(command: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=said["stderr"])

    monkeypatch.setattr(lighthouse.subprocess, "run", lighthouse_exits_with_1)
    said["stderr"] = ("Runtime error encountered: Something went wrong with recording the trace over your page "
                      "load. Please run Lighthouse again. (NO_NAVSTART)")
    with pytest.raises(lighthouse.TraceNotRecorded, match="NO_NAVSTART"):
        lighthouse.run_lighthouse("http://127.0.0.1/q/1", "c=1", tmp_path, 0)
    said["stderr"] = "Runtime error encountered: Chrome could not be launched"
    with pytest.raises(RuntimeError, match="could not be launched") as raised:
        lighthouse.run_lighthouse("http://127.0.0.1/q/1", "c=1", tmp_path, 0)
    assert not isinstance(raised.value, lighthouse.TraceNotRecorded)
