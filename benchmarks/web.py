"""The paths patients and nurses wait on, over HTTP, each next to this machine's own ceiling.

Run: ``.venv/bin/python benchmarks/web.py`` (``--quick`` for about 3 s per measurement,
``--help`` for the rest). Prints figures only; tests never assert timings. Figures and
budgets are explained in docs/performance.md.

Servers: gunicorn as ``make run`` starts it -- the command is read from ``make -n run``
(workers, worker class, access log format and logger class), only the port changes -- on
127.0.0.1 and a free port. Load: ``benchmarks/loadgen.py`` in its own process, closed loop,
32 connections (``--connections``), ``--warmup`` seconds of load first, then ``--seconds``
measured.

Ceilings, measured first in the same run: the bare Flask app of ``benchmarks/ceiling_app.py``
under the same gunicorn command -- (a) a plain-text response, (b) a static form of 30 radio
buttons rendered from a Jinja template, (c) one row inserted into SQLite (WAL,
``synchronous=FULL``) per request.

pro-app, on a fresh SQLite file (WAL, as the app configures it) and, when reachable, on a
dedicated PostgreSQL database (``PRO_BENCH_WEB_DATABASE_URL``, default ``bench_web`` on
127.0.0.1: created, emptied and migrated, dropped at the end). Each figure judged against a
ceiling is measured in turns with it (:func:`load_in_turns`: three rounds of a load of each),
so that both see the same stretch of a machine whose speed drifts. The answer saves are also
read against a reference measured before them, which is no budget's ceiling: the bare
Flask app doing the save's writes in plain SQL on SQLite, and on PostgreSQL inserting its one
row into that database instead of SQLite. The paths measured:

- participants enrolled and given personal links through the services (the 6-weekly
  schedule, baseline open now); each load connection is one patient who opened their
  link, started the questionnaire and holds their own session cookie;
- question page: ``GET /q/<n>``, n = 1..30 in turn (session and link check, the current
  assessment, the stored answer, the wording, a new request id) -- against ceiling (b);
- answer save: ``POST /q/answer`` as the page script sends it (JSON, CSRF token in the
  ``X-CSRFToken`` header, a new ``Idempotency-Key`` per request, each save changing the
  stored value so it really writes: receipt, answer and audit event) -- against ceiling (c);
  on SQLite also the no-JavaScript form post ``POST /q/<n>`` (CSRF token in the form);
- submission: ``POST /q/submit`` of fully answered questionnaires (prepared in bulk:
  started through the service, answers inserted), each one once, with scoring and alert
  evaluation, at ``--submit-connections`` (a burst of submissions, not 32 at once);
- nurse dashboard (SQLite): ``GET /staff/`` for a signed-in nurse of one site in a trial
  of ``--dashboard-participants`` (benchmarks/dashboard.py's data), at
  ``--dashboard-connections``.

Every load of a gunicorn server also reads its workers' CPU time from ``/proc`` (the ``cpu
ms`` column: milliseconds per request answered, warm-up included), and the table's notes set
each figure's beside its ceiling's: unlike requests per second, CPU per request hardly moves
with what else the machine is doing, so it tells a slower app from a busier machine.

Before serving, each pro-app path is also sent once in-process (Flask test client) to count
the SQL statements it issues; ``--profile`` adds a cProfile of 200 question pages and 200
answer saves. ``--json``: the last line printed is ``{"figures": [...]}`` for
benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import os
import pstats
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from _fixtures import drop_postgres_database, figure, optional_postgres_url, print_figures_json, temporary_sqlite_url
from loadgen import latency_summary
from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url

from pro_app import create_app
from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.models import (
    Answer, Arm, Assessment, Participant, ReceiptKind, ReceiptOutcome, RequestReceipt, Site, Study,
)
from pro_app.db.types import utcnow
from pro_app.domain.instruments import default_registry
from pro_app.domain.states import AssessmentMode, AssessmentStatus
from pro_app.services.access import issue_link
from pro_app.services.participants import enrol_participant
from pro_app.services.questionnaire import current_assessment, start_assessment
from pro_app.services.schedules import load_builtin_template
from pro_app.services.texts import text_for

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = Path(__file__).resolve().parent
LOADGEN = BENCHMARKS / "loadgen.py"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_web"
SECRET = "benchmark-web-" + "0" * 32
STAFF_PASSWORD = "bench-nurse-password-2024"
GRACE = timedelta(minutes=120)

#: Budgets (docs/performance.md): share of the ceiling's requests/s, and latency limits.
QUESTION_MIN_RATIO = 0.5
QUESTION_P99_MS = 50.0
SAVE_MIN_RATIO = 0.5
SAVE_P99_MS = 100.0
SUBMIT_P99_MS = 150.0
DASHBOARD_P95_MS = 150.0

#: The command ``make run`` would exec, in case ``make -n run`` cannot be read.
FALLBACK_RUN_COMMAND = [
    ".venv/bin/gunicorn", "--bind", "127.0.0.1:8000", "--workers", "2", "--access-logfile", "-",
    "--logger-class", "pro_app.gunicorn_logging.RedactingLogger",
    "--access-logformat", '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms', "wsgi:app",
]


# --- gunicorn -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_run_command() -> tuple[list[str], str]:
    """The gunicorn command of ``make run`` (from ``make -n run``) and where it came from."""
    try:
        env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        printed = subprocess.run(
            ["make", "--no-print-directory", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=30,
            check=True, env=env,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return list(FALLBACK_RUN_COMMAND), "built-in copy (make -n run failed)"
    for line in printed.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if words[:1] == ["exec"] and any(word.endswith("gunicorn") for word in words[1:2]):
            return words[1:], "make -n run"
    return list(FALLBACK_RUN_COMMAND), "built-in copy (no gunicorn line in make -n run)"


def server_command(app: str, port: int, *, chdir: Path | None = None) -> list[str]:
    """``make run``'s gunicorn command serving ``app`` on ``port`` (nothing else changed)."""
    command, _source = make_run_command()
    command = list(command)
    command[0] = str(ROOT / command[0]) if not os.path.isabs(command[0]) else command[0]
    for index, word in enumerate(command):
        if word in ("--bind", "-b"):
            command[index + 1] = f"127.0.0.1:{port}"
        elif word.startswith("--bind="):
            command[index] = f"--bind=127.0.0.1:{port}"
    if "--bind" not in command and "-b" not in command and not any(w.startswith("--bind=") for w in command):
        command[1:1] = ["--bind", f"127.0.0.1:{port}"]
    command[-1] = app
    if chdir is not None:
        command[-1:-1] = ["--chdir", str(chdir)]
    return command


def workers_of(command: list[str]) -> int:
    for flag in ("--workers", "-w"):
        if flag in command:
            return int(command[command.index(flag) + 1])
    return 1


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None when
    the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


class Server:
    """One gunicorn on a free loopback port, its output in ``log``."""

    def __init__(self, name: str, app: str, env: dict[str, str], folder: Path, *, chdir: Path | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.command = server_command(app, self.port, chdir=chdir)
        self.env = {**os.environ, **env}
        self.log = folder / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        workers = workers_of(self.command)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name}: gunicorn exited with {self.process.returncode}; see {self.log}")
            if status_of(self.port, "/healthz") == 200 and len(self.children()) >= workers:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: gunicorn did not answer within {timeout:.0f} s; see {self.log}")

    def children(self) -> list[int]:
        assert self.process is not None
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = _process_stat(int(entry.name))
                if fields is not None and int(fields[1]) == self.process.pid and fields[0] != "Z":
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def cpu_seconds(self) -> dict[int, float]:
        """CPU time (user and system) each worker process has used so far, by process id."""
        used = {}
        for pid in self.children():
            fields = _process_stat(pid)
            if fields is not None:  # else it ended since it was listed
                used[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return used

    def errors(self) -> list[str]:
        """Tracebacks and error lines of the server log (none expected)."""
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if "Traceback" in line or "[ERROR]" in line or "[CRITICAL]" in line]


@contextmanager
def serving(name: str, app: str, env: dict[str, str], folder: Path, *, chdir: Path | None = None) -> Iterator[Server]:
    server = Server(name, app, env, folder, chdir=chdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def app_environment(database_url: str, port_hint: str = "") -> dict[str, str]:
    return {"PRO_ENV": "production", "PRO_SECRET_KEY": SECRET, "PRO_DATABASE_URL": database_url,
            "PRO_BASE_URL": port_hint or "http://127.0.0.1"}


def status_of(port: int, path: str) -> int | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", path)
        status = connection.getresponse().status
        connection.close()
        return status
    except OSError:
        return None


# --- the load -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadSettings:
    seconds: float
    warmup: float
    connections: int


def load(port: int, spec: dict[str, Any], settings: LoadSettings, folder: Path, *, connections: int | None = None,
         label: str, server: Server | None = None, latencies: bool = False) -> dict[str, Any]:
    """Run the load generator in its own process; returns its figures.

    With the ``server`` loaded, also ``worker_cpu_ms``: the CPU time its workers spent per
    request answered during the run (warm-up included), read from ``/proc``. Unlike requests
    per second it hardly depends on what else the machine is doing, so it tells whether a
    figure moved because the code or the machine changed. Left out when a worker was replaced
    during the run."""
    cpu_before = server.cpu_seconds() if server is not None else {}
    spec_path = folder / f"spec-{label}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    command = [sys.executable, str(LOADGEN), "--port", str(port), "--spec", str(spec_path), "--json",
               "--connections", str(connections or settings.connections), "--seconds", str(settings.seconds),
               "--warmup", str(settings.warmup)] + (["--latencies"] if latencies else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=settings.seconds + settings.warmup + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if server is not None and cpu_before and result.get("answered"):
        cpu_after = server.cpu_seconds()
        if cpu_after.keys() == cpu_before.keys():
            used = sum(cpu_after[pid] - cpu_before[pid] for pid in cpu_before)
            result["worker_cpu_ms"] = round(1000 * used / result["answered"], 3)
    return result


#: How many turns a figure and its ceiling take (see :func:`load_in_turns`).
TURNS = 3


def load_in_turns(server: Server, spec: dict[str, Any], ceiling: Server, ceiling_spec: dict[str, Any],
                  settings: LoadSettings, folder: Path, *, label: str,
                  turns: int = TURNS) -> tuple[dict[str, Any], dict[str, Any]]:
    """A figure and its ceiling, measured in turns: ``turns`` rounds of a load of each, the
    measured seconds (and the warm-up) shared out among them, the ceiling first in odd rounds
    and second in even ones. The machine's speed drifts within minutes (docs/performance.md), and
    so each side sees the same stretch of it. Returns (the figure, its ceiling), each the
    rounds pooled (:func:`pooled`)."""
    share = LoadSettings(settings.seconds / turns, settings.warmup / turns, settings.connections)
    mine: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for turn in range(turns):
        order = [(ceiling, ceiling_spec, theirs, "ceiling"), (server, spec, mine, "app")]
        for target, what, into, side in order if turn % 2 == 0 else order[::-1]:
            into.append(load(target.port, what, share, folder, label=f"{label}-{side}-{turn + 1}", server=target,
                             latencies=True))
    return pooled(mine), pooled(theirs)


def pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Several loads of one thing as one result: their requests over their windows, latency
    percentiles of all their requests together, the workers' CPU per request answered in all
    (where every round measured it); ``rounds_rps``: each round's requests/s."""
    first = rounds[0]
    seconds = sum(result["seconds"] for result in rounds)
    requests = sum(result["requests"] for result in rounds)
    statuses: Counter[str] = Counter()
    transport: Counter[str] = Counter()
    for result in rounds:
        statuses.update(result["statuses"])
        transport.update(result["transport_errors"])
    latencies = sorted(value for result in rounds for value in result.get("latencies_ms", []))
    together: dict[str, Any] = {
        "connections": first["connections"],
        "seconds": round(seconds, 3),
        "requests": requests,
        "answered": sum(result["answered"] for result in rounds),
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "errors": sum(result["errors"] for result in rounds),
        "statuses": dict(sorted(statuses.items())),
        "transport_errors": dict(transport),
        "unexpected": [line for result in rounds for line in result["unexpected"]][:5],
        "bytes_per_response": round(sum(result["bytes_per_response"] * result["requests"] for result in rounds)
                                    / requests) if requests else 0,
        "latency_ms": latency_summary(latencies),
        "rounds_rps": [result["rps"] for result in rounds],
    }
    if all("worker_cpu_ms" in result for result in rounds) and together["answered"]:
        used = sum(result["worker_cpu_ms"] * result["answered"] for result in rounds)
        together["worker_cpu_ms"] = round(used / together["answered"], 3)
    return together


def turns_note(result: dict[str, Any], ceiling: dict[str, Any]) -> str:
    """Each round's ratio to its ceiling's round, for a figure measured in turns."""
    pairs = list(zip(result.get("rounds_rps", []), ceiling.get("rounds_rps", [])))
    if len(pairs) < 2 or not all(theirs for _mine, theirs in pairs):
        return ""
    return f"{len(pairs)} turns with its ceiling: " + ", ".join(f"{mine / theirs:.0%}" for mine, theirs in pairs)


def describe(label: str, result: dict[str, Any]) -> str:
    latency = result["latency_ms"]
    text_ = (f"{label:<44}{result['rps']:>9,.1f}{latency['p50']:>8.1f}{latency['p95']:>8.1f}{latency['p99']:>8.1f}"
             f"{latency['max']:>8.1f}{result['requests']:>8}{result['errors']:>7}{result['connections']:>6}"
             f"{result['bytes_per_response']:>8}")
    cpu = result.get("worker_cpu_ms")
    text_ += f"{cpu:>8.2f}" if cpu is not None else f"{'':>8}"
    for line in result.get("unexpected", [])[:2]:
        text_ += f"\n    unexpected: {line[:200]}"
    if result.get("transport_errors"):
        text_ += f"\n    transport errors: {result['transport_errors']}"
    return text_


def cpu_note(result: dict[str, Any], ceiling: dict[str, Any] | None = None, key: str = "") -> str:
    """The workers' CPU time per request (see :func:`load`) and, with the ceiling measured
    before it, the ceiling's: their ratio is what the requests/s ratio would be if the CPU were
    all that limited both."""
    cpu = result.get("worker_cpu_ms")
    if not cpu:
        return ""
    text_ = f"workers' CPU {cpu:.2f} ms/request"
    ceiling_cpu = (ceiling or {}).get("worker_cpu_ms")
    if ceiling_cpu:
        text_ += f" (ceiling ({key}) {ceiling_cpu:.2f} ms, {ceiling_cpu / cpu:.0%} of it)"
    return text_


HEADER = (f"{'measurement':<44}{'req/s':>9}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'count':>8}{'errors':>7}"
          f"{'conns':>6}{'bytes':>8}{'cpu ms':>8}")


# --- browsing like a patient (over HTTP, or in-process for counting queries) -------------------

class Browser:
    """One client with its own cookies, over HTTP to the loopback server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, body: str | None = None) -> tuple[int, str, str]:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = self.cookie_header()
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=sent)
            reply = connection.getresponse()
            content = reply.read().decode("utf-8", errors="replace")
            for header in reply.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                value = rest.split(";", 1)[0]
                if "max-age=0" in header.lower() or "expires=thu, 01 jan 1970" in header.lower():
                    self.cookies.pop(name.strip(), None)
                else:
                    self.cookies[name.strip()] = value
            return reply.status, urlsplit(reply.headers.get("Location", "")).path, content
        finally:
            connection.close()

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())


class InProcessBrowser:
    """The same requests through Flask's test client (cookies kept by the client)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, body: str | None = None) -> tuple[int, str, str]:
        response = self.client.open(path, method=method, data=form if form is not None else body,
                                    headers=headers or {})
        location = urlsplit(response.headers.get("Location", "")).path
        return response.status_code, location, response.get_data(as_text=True)


Requester = Browser | InProcessBrowser


def expect(reply: tuple[int, str, str], status: int, what: str) -> tuple[int, str, str]:
    if reply[0] != status:
        raise RuntimeError(f"{what}: expected {status}, got {reply[0]} {reply[1]} {reply[2][:300]!r}")
    return reply


def form_fields(page: str, action: str) -> dict[str, str]:
    """The hidden and text inputs (name: value) of the form posting to ``action``."""
    start = page.find(f'action="{action}"')
    if start < 0:
        raise RuntimeError(f"no form posting to {action}")
    block = page[start:page.find("</form>", start)]
    fields = {}
    for tag in re.findall(r"<input[^>]*>", block):
        name = re.search(r'\sname="([^"]*)"', tag)
        kind = re.search(r'\stype="([^"]*)"', tag)
        if name is None or (kind and kind.group(1) in ("radio", "checkbox", "submit")):
            continue
        value = re.search(r'\svalue="([^"]*)"', tag)
        fields[unescape(name.group(1))] = unescape(value.group(1)) if value else ""
    return fields


def meta_csrf(page: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    if found is None:
        raise RuntimeError("no CSRF token on the question page")
    return unescape(found.group(1))


def open_questionnaire(browser: Requester, token: str) -> tuple[int, str]:
    """Open the link, start the questionnaire; returns (assessment id, CSRF token)."""
    status, location, _ = expect(browser.request("GET", f"/p/{token}"), 303, "open link")
    _, _, home = expect(browser.request("GET", location), 200, "start page")
    start = form_fields(home, "/q/start")
    _, first, _ = expect(browser.request("POST", "/q/start", form=start), 303, "start")
    _, _, page = expect(browser.request("GET", first), 200, "first question")
    return int(start["assessment"]), meta_csrf(page)


def open_review(browser: Requester, token: str) -> dict[str, str]:
    """Open the link of a fully answered questionnaire; returns the submit form's fields."""
    expect(browser.request("GET", f"/p/{token}"), 303, "open link")
    _, _, page = expect(browser.request("GET", "/q/review"), 200, "review page")
    return form_fields(page, "/q/submit")


def answer_request(assessment: int, item: str, csrf: str, cookie: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf,
               "Idempotency-Key": "{uuid}"}
    if cookie is not None:
        headers["Cookie"] = cookie
    body = '{"assessment": %d, "item": %s, "value": {v}}' % (assessment, json.dumps(item))
    return {"method": "POST", "path": "/q/answer", "headers": headers, "body": body}


# --- data ---------------------------------------------------------------------------------------

@dataclass
class Prepared:
    url: str
    browsing: list[str]  # link tokens: patients who open and answer
    submitting: list[str]  # link tokens: patients whose questionnaire is fully answered
    seconds: float


def prepare(url: str, browsing: int, submitting: int, seed: int = 20240601) -> Prepared:
    """Participants with links through the services; the submitters' questionnaires started
    through the service and answered in bulk (all 30 items, random values), each answer with
    the receipt its save would have left. On PostgreSQL the planner's statistics are then made
    current, as autovacuum would after a bulk load: with an empty receipts table a connection's
    cached plans would read it from end to end, slower with every save (docs/performance.md)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    now = utcnow()
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            study = Study(code="WEB", name="Web benchmark study", timezone="Europe/Berlin")
            study.sites = [Site(code="A", name="Site A", timezone="Europe/Berlin"),
                           Site(code="B", name="Site B", timezone="Asia/Shanghai")]
            study.arms = [Arm(code="low", name="Low dose"), Arm(code="high", name="High dose")]
            session.add(study)
            session.flush()
            load_builtin_template(session, study, "qol_6_weekly", actor="cli")
            tokens: list[str] = []
            participants: list[Participant] = []
            for number in range(browsing + submitting):
                participant = enrol_participant(
                    session, study=study, site=study.sites[number % 2], arm=study.arms[number % 2],
                    subject_code=f"WEB-{number:05d}", locale="en",
                    anchors={"enrolment": now - timedelta(hours=1)}, actor="cli", now=now,
                )
                tokens.append(issue_link(session, participant, actor="cli", valid_days=30, now=now).token)
                participants.append(participant)
            instrument = default_registry().get("qlq_c30")
            wording = text_for(session, instrument, ("en",))
            rows: list[dict[str, Any]] = []
            receipts: list[dict[str, Any]] = []
            for participant in participants[browsing:]:
                assessment = current_assessment(session, participant, now=now, grace=GRACE)
                if assessment is None:
                    raise RuntimeError("no open baseline assessment for a prepared participant")
                actor = f"participant:{participant.id}"
                start_assessment(session, assessment, mode=AssessmentMode.SELF, text=wording, actor=actor, now=now)
                for item in instrument.items:
                    top = instrument.response_set(item.response_set).maximum
                    rows.append({"assessment_id": assessment.id, "item_id": item.id, "value": rng.randint(1, top),
                                 "locale": "en", "answered_at": now, "answered_by": actor})
                    receipts.append({
                        "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        "kind": ReceiptKind.ANSWER.value, "participant_id": participant.id,
                        "assessment_id": assessment.id, "item_id": item.id, "value": rows[-1]["value"],
                        "outcome": ReceiptOutcome.SAVED.value, "recorded_at": now,
                    })
            for first in range(0, len(rows), 10_000):
                session.execute(insert(Answer), rows[first:first + 10_000])
                session.execute(insert(RequestReceipt), receipts[first:first + 10_000])
            session.commit()
    finally:
        engine.dispose()
    if engine.dialect.name == "postgresql":
        analyse(url)
    return Prepared(url, tokens[:browsing], tokens[browsing:], time.perf_counter() - started)


def analyse(url: str) -> None:
    """As autovacuum would after a bulk load."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def completed_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(Assessment).where(
                Assessment.status == AssessmentStatus.COMPLETED.value)) or 0)
    finally:
        engine.dispose()


# --- query counts and profiles (in-process) -----------------------------------------------------

@contextmanager
def counting(engine: Engine) -> Iterator[Counter[str]]:
    seen: Counter[str] = Counter()

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen[statement.lstrip().split(None, 1)[0].upper()] += 1

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def statements_per_request(url: str, question_token: str, submit_token: str,
                           profile: bool) -> dict[str, Counter[str]]:
    """SQL statements each measured path sends (one request each, after one warm-up)."""
    app = create_app({"SECRET_KEY": SECRET, "DATABASE_URL": url, "BASE_URL": "http://127.0.0.1"})
    engine = app.extensions["pro_db"].engine
    browser = InProcessBrowser(app.test_client())
    assessment, csrf = open_questionnaire(browser, question_token)
    counts: dict[str, Counter[str]] = {}
    json_headers = {"Content-Type": "application/json", "X-CSRFToken": csrf}

    def save(item: str, value: int) -> tuple[int, str, str]:
        body = json.dumps({"assessment": assessment, "item": item, "value": value})
        return browser.request("POST", "/q/answer", headers={**json_headers, "Idempotency-Key": str(uuid.uuid4())},
                               body=body)

    expect(browser.request("GET", "/q/2"), 200, "question page")
    expect(save("q2", 1), 200, "answer save")
    with counting(engine) as seen:
        expect(browser.request("GET", "/q/3"), 200, "question page")
    counts["question page GET /q/<n>"] = seen
    with counting(engine) as seen:
        expect(save("q3", 2), 200, "answer save")
    counts["answer save POST /q/answer"] = seen
    page = browser.request("GET", "/q/4")[2]
    fields = {**form_fields(page, "/q/4"), "value": "2", "go": "next"}
    with counting(engine) as seen:
        expect(browser.request("POST", "/q/4", form=fields), 303, "answer form post")
    counts["answer save POST /q/<n> (form)"] = seen
    submitter = InProcessBrowser(app.test_client())
    submit_form = open_review(submitter, submit_token)
    with counting(engine) as seen:
        expect(submitter.request("POST", "/q/submit", form=submit_form), 303, "submission")
    counts["submission POST /q/submit"] = seen
    if profile:
        _profile("question page x200", lambda n: expect(browser.request("GET", f"/q/{1 + n % 30}"), 200, "page"))
        _profile("answer save x200", lambda n: expect(save(f"q{1 + n % 30}", 1 + (n // 30) % 2), 200, "save"))
    app.extensions["pro_db"].engine.dispose()
    return counts


def statements(seen: Counter[str]) -> str:
    return f"{sum(seen.values())} SQL statements ({', '.join(f'{k} {n}' for k, n in sorted(seen.items()))})"


def _profile(label: str, action: Callable[[int], object]) -> None:
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for n in range(200):
        action(n)
    profiler.disable()
    elapsed = time.perf_counter() - started
    print(f"\nprofile of {label} in-process: {elapsed / 200 * 1000:.2f} ms per request (with profiler overhead)")
    for order, restriction, title in (("cumulative", ("pro_app", 30), "our code, by cumulative time"),
                                      ("tottime", (20,), "all code, by own time")):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(*restriction)
        lines = [line for line in out.getvalue().splitlines() if re.match(r"\s*[\d/]+\s+\d", line)]
        print(f"  {title}:")
        print("\n".join("    " + line.strip() for line in lines))


# --- the measurements ---------------------------------------------------------------------------

def _insert_spec(path: str) -> dict[str, Any]:
    """One durable insert per request, each with a new request id and a value alternating 1 and 2."""
    return {"connections": [[{"method": "POST", "path": path, "body": '{"value": {v}}',
                              "headers": {"Content-Type": "application/json", "Idempotency-Key": "{uuid}"}}]]}


#: What each ceiling measures, as load specs for loadgen.py.
CEILING_SPECS: dict[str, dict[str, Any]] = {
    "a": {"connections": [[{"method": "GET", "path": "/plain"}]]},
    "b": {"connections": [[{"method": "GET", "path": "/form"}]]},
    "c": _insert_spec("/insert"),
}
CEILING_NAMES = {"a": "plain text", "b": "30-radio form", "c": "SQLite insert"}


def audited_save_reference_spec(connections: int) -> dict[str, Any]:
    """Not a budget's ceiling: the answer save's writes in plain SQL (ceiling_app.py), each
    connection answering its own questionnaire's 30 items in turn, as the patients do."""
    return {"connections": [[{
        "method": "POST", "path": "/save-audited",
        "headers": {"Content-Type": "application/json", "Idempotency-Key": "{uuid}"},
        "body": '{"assessment": %d, "item": "q%d", "value": {v}}' % (connection + 1, item)}
        for item in range(1, 31)] for connection in range(connections)]}


#: Not a budget's ceiling: ceiling (c)'s insert on PostgreSQL (see ceiling_app.py), measured
#: before pro-app's saves on PostgreSQL when they are measured.
POSTGRES_REFERENCE_SPEC = _insert_spec("/insert-postgres")


@contextmanager
def ceiling_server(folder: Path, postgres_url: str | None = None) -> Iterator[Server]:
    """The ceiling app, served for the whole run (idle while pro-app is measured); with
    ``postgres_url``, its PostgreSQL reference inserts into a table of that database."""
    env = {"CEILING_DATABASE": str(folder / "ceiling.sqlite3")}
    if postgres_url is not None:
        env["CEILING_POSTGRES"] = make_url(postgres_url).set(drivername="postgresql").render_as_string(
            hide_password=False)
    with serving("ceiling", "ceiling_app:app", env, folder, chdir=BENCHMARKS) as server:
        yield server
        problems = server.errors()
    if problems:
        print(f"  ceiling server log: {len(problems)} error lines, e.g. {problems[0]}")


def measure_ceiling(ceiling: Server, key: str, settings: LoadSettings, folder: Path) -> dict[str, Any]:
    result = load(ceiling.port, CEILING_SPECS[key], settings, folder, label=f"ceiling-{key}", server=ceiling)
    print(describe(f"ceiling ({key}) {CEILING_NAMES[key]}", result), flush=True)
    return result


def measure_ceilings(ceiling: Server, settings: LoadSettings, folder: Path) -> dict[str, dict[str, Any]]:
    return {key: measure_ceiling(ceiling, key, settings, folder) for key in CEILING_SPECS}


def measure_app(label: str, url: str, args: argparse.Namespace, settings: LoadSettings, folder: Path,
                ceiling: Server | None) -> list[dict[str, Any]]:
    """Question page, answer save(s) and submission of pro-app on the database at ``url``.

    Each request-rate figure is measured in turns with its ceiling (:func:`load_in_turns`; the
    ceiling server stays up for the run): on a shared or virtual machine the speed drifts
    within minutes, and a ceiling measured at another time would judge the figure by another
    machine."""
    ceilings: dict[str, dict[str, Any]] = {}

    def against(key: str, target: Server, spec: dict[str, Any], what: str, slot: str,
                load_label: str) -> dict[str, Any]:
        """The load ``spec`` of ``target`` in turns with ceiling ``key`` (kept as ``slot``), or
        alone when there is no ceiling server."""
        if ceiling is None:
            result = load(target.port, spec, settings, folder, label=load_label, server=target)
        else:
            result, ceilings[slot] = load_in_turns(target, spec, ceiling, CEILING_SPECS[key], settings, folder,
                                                   label=load_label)
            print(describe(f"ceiling ({key}) {CEILING_NAMES[key]}, in turns with the {what}", ceilings[slot]),
                  flush=True)
        print(describe(what if target is ceiling else f"{label}: {what}", result), flush=True)
        return result

    browsing = settings.connections
    spare = 1  # one patient of each kind for counting statements in-process
    prepared = prepare(url, browsing + spare, args.submissions + spare)
    print(f"{label}: prepared {browsing + spare} patients and {args.submissions + spare} fully answered "
          f"questionnaires in {prepared.seconds:.1f} s", flush=True)
    counts = statements_per_request(url, prepared.browsing[-1], prepared.submitting[-1], args.profile)
    for path, seen in counts.items():
        print(f"  {path}: {statements(seen)}")
    figures: list[dict[str, Any]] = []
    sqlite = url.startswith("sqlite")
    reference: dict[str, Any] | None = None
    with serving(f"pro-app-{label.lower()}", "wsgi:app", app_environment(url), folder) as server:
        patients = [Browser(server.port) for _ in range(browsing)]
        opened = [open_questionnaire(browser, token) for browser, token in zip(patients, prepared.browsing)]
        question_spec = {"connections": [
            [{"method": "GET", "path": f"/q/{n}", "headers": {"Cookie": browser.cookie_header()}} for n in range(1, 31)]
            for browser in patients]}
        question = against("b", server, question_spec, "question page GET /q/<n>", "b", f"{label}-question")

        save_spec = {"connections": [
            [answer_request(assessment, f"q{n}", csrf, browser.cookie_header()) for n in range(1, 31)]
            for browser, (assessment, csrf) in zip(patients, opened)]}
        if sqlite and ceiling is not None:
            reference = against("c", ceiling, audited_save_reference_spec(browsing),
                                "reference: bare Flask, the save's writes in plain SQL", "c reference",
                                "reference-audited-save")
        elif ceiling is not None:
            reference = against("c", ceiling, POSTGRES_REFERENCE_SPEC, "reference: bare Flask, one PostgreSQL insert",
                                "c reference", "reference-postgres")
        save = against("c", server, save_spec, "answer save POST /q/answer", "c autosave", f"{label}-save")

        form_save: dict[str, Any] | None = None
        if sqlite:
            form_spec = {"expect": [303], "connections": [
                [{"method": "POST", "path": f"/q/{n}",
                  "headers": {"Cookie": browser.cookie_header(), "Content-Type": "application/x-www-form-urlencoded"},
                  "body": urlencode({"csrf_token": csrf, "assessment": assessment, "go": "next"})
                  + "&value={v}&request_id={uuid}"} for n in range(1, 31)]
                for browser, (assessment, csrf) in zip(patients, opened)]}
            form_save = against("c", server, form_spec, "answer save POST /q/<n> (form)", "c form",
                                f"{label}-form-save")

        submitters = [Browser(server.port) for _ in prepared.submitting[:-1]]
        with ThreadPoolExecutor(4) as pool:
            forms = list(pool.map(open_review, submitters, prepared.submitting))
        per_connection: list[list[dict[str, Any]]] = [[] for _ in range(args.submit_connections)]
        for index, (browser, fields) in enumerate(zip(submitters, forms)):
            per_connection[index % args.submit_connections].append(
                {"method": "POST", "path": "/q/submit", "body": urlencode(fields),
                 "headers": {"Cookie": browser.cookie_header(), "Content-Type": "application/x-www-form-urlencoded"}})
        before = completed_count(url)
        # Each submission can be sent once: no warm-up (the workers are warm from the loads above).
        once = LoadSettings(settings.seconds, 0.0, args.submit_connections)
        submit = load(server.port, {"cycle": False, "expect": [303], "connections": per_connection}, once, folder,
                      label=f"{label}-submit", server=server)
        submitted = completed_count(url) - before
        print(describe(f"{label}: submission POST /q/submit", submit), flush=True)
        print(f"  {submitted} questionnaires completed in the database during the submission run "
              f"({sum(int(n) for s, n in submit['statuses'].items() if s == '303')} counted 303 in the window)")
        problems = server.errors()
    if problems:
        print(f"  {label} server log: {len(problems)} error lines, e.g. {problems[0]}")

    def counted(path: str) -> str:
        return f"{sum(counts[path].values())} SQL statements per request"

    def errors_note(result: dict[str, Any]) -> str:
        return f"{result['errors']} errors" if result["errors"] else ""

    def measured(result: dict[str, Any]) -> bool:
        """Requests completed in the window, none failed: else no latency budget is met."""
        return bool(result["requests"]) and not result["errors"]

    def join(*parts: str) -> str:
        return "; ".join(part for part in parts if part)

    # A failed ceiling leaves its ratios empty (and the budgets they decide unmet).
    ceiling_b = ceilings.get("b", {}).get("rps")
    ceiling_c = ceilings.get("c reference", {}).get("rps")
    ratio = question["rps"] / ceiling_b if ceiling_b else None
    figures += [
        figure(f"Question page GET /q/<n>, {label}", question["rps"], "req/s", ceiling=ceiling_b, ratio=ratio,
               budget=f">= {QUESTION_MIN_RATIO:.0%} of ceiling (b)",
               passed=ratio is not None and ratio >= QUESTION_MIN_RATIO and not question["errors"],
               note=join(counted("question page GET /q/<n>"), cpu_note(question, ceilings.get("b"), "b"),
                         turns_note(question, ceilings.get("b", {})), errors_note(question))),
        figure(f"Question page p99, {label}, {settings.connections} conns", question["latency_ms"]["p99"], "ms",
               budget=f"< {QUESTION_P99_MS:.0f} ms",
               passed=measured(question) and question["latency_ms"]["p99"] < QUESTION_P99_MS,
               note=f"p50 {question['latency_ms']['p50']:.1f} ms"),
    ]
    if reference is not None:
        share = save["rps"] / reference["rps"] if reference["rps"] else None
        what = "the save's writes in plain SQL, SQLite" if sqlite else "one PostgreSQL insert"
        figures.append(figure(
            f"Reference: bare Flask, {what}", reference["rps"], "req/s", ceiling=ceiling_c,
            ratio=reference["rps"] / ceiling_c if ceiling_c else None,
            note=join(f"p99 {reference['latency_ms']['p99']:.1f} ms", "" if share is None else
                      f"pro-app's autosave on {label} is {share:.0%} of it",
                      cpu_note(reference, ceilings.get("c reference"), "c"),
                      turns_note(reference, ceilings.get("c reference", {})), errors_note(reference))))
    # Each save against ceiling (c) measured in turns with it.
    saves = [("autosave POST /q/answer", save, "answer save POST /q/answer", "c autosave")]
    if form_save is not None:
        saves.append(("form POST /q/<n>", form_save, "answer save POST /q/<n> (form)", "c form"))
    for name, result, path, slot in saves:
        paired_c = ceilings.get(slot, {}).get("rps")
        ratio = result["rps"] / paired_c if paired_c else None
        figures += [
            figure(f"Answer save {name}, {label}", result["rps"], "req/s", ceiling=paired_c, ratio=ratio,
                   budget=f">= {SAVE_MIN_RATIO:.0%} of ceiling (c)",
                   passed=ratio is not None and ratio >= SAVE_MIN_RATIO and not result["errors"],
                   note=join(counted(path), cpu_note(result, ceilings.get(slot), "c"),
                             turns_note(result, ceilings.get(slot, {})), errors_note(result))),
            figure(f"Answer save {name} p99, {label}, {settings.connections} conns", result["latency_ms"]["p99"], "ms",
                   budget=f"< {SAVE_P99_MS:.0f} ms",
                   passed=measured(result) and result["latency_ms"]["p99"] < SAVE_P99_MS,
                   note=f"p50 {result['latency_ms']['p50']:.1f} ms"),
        ]
    figures.append(
        figure(f"Submission p99, {label}, {args.submit_connections} conns", submit["latency_ms"]["p99"], "ms",
               budget=f"< {SUBMIT_P99_MS:.0f} ms",
               passed=measured(submit) and submit["latency_ms"]["p99"] < SUBMIT_P99_MS,
               note=join(f"{submit['requests']} submissions, {submit['rps']:.0f}/s, p50 "
                         f"{submit['latency_ms']['p50']:.1f} ms", counted("submission POST /q/submit"),
                         cpu_note(submit), errors_note(submit)))
    )
    return figures


def measure_dashboard(args: argparse.Namespace, settings: LoadSettings, folder: Path) -> list[dict[str, Any]]:
    """The nurse's dashboard over HTTP, on benchmarks/dashboard.py's trial (SQLite)."""
    from dashboard import populate

    from pro_app.services.staff import create_staff_user

    url = temporary_sqlite_url()
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            info = populate(session, args.dashboard_participants, utcnow())
            create_staff_user(session, email="nurse@bench.example.org", password=STAFF_PASSWORD, role="nurse",
                              site_ids=info.site_ids[:1], actor="cli")
            session.commit()
    finally:
        engine.dispose()
    print(f"dashboard: populated {info.participants:,} participants, {info.assessments:,} assessments in "
          f"{info.seconds:.1f} s", flush=True)
    with serving("pro-app-dashboard", "wsgi:app", app_environment(url), folder) as server:
        nurse = Browser(server.port)
        _, _, page = expect(nurse.request("GET", "/staff/login"), 200, "login page")
        fields = {**form_fields(page, "/staff/login"), "email": "nurse@bench.example.org", "password": STAFF_PASSWORD}
        _, location, _ = expect(nurse.request("POST", "/staff/login", form=fields), 303, "sign-in")
        expect(nurse.request("GET", "/staff/"), 200, f"dashboard (signed in, sent to {location})")
        spec = {"connections": [[{"method": "GET", "path": "/staff/", "headers": {"Cookie": nurse.cookie_header()}}]]}
        result = load(server.port, spec, settings, folder, connections=args.dashboard_connections, label="dashboard",
                      server=server)
        print(describe("SQLite: nurse dashboard GET /staff/", result), flush=True)
    shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent, ignore_errors=True)
    p95 = result["latency_ms"]["p95"]
    return [figure(f"Nurse dashboard over HTTP p95, SQLite, {info.participants:,} participants, "
                   f"{args.dashboard_connections} conns", p95, "ms", budget=f"< {DASHBOARD_P95_MS:.0f} ms",
                   passed=p95 < DASHBOARD_P95_MS and not result["errors"] and result["requests"] > 0,
                   note=f"{result['rps']:.1f} req/s, p50 {result['latency_ms']['p50']:.1f} ms"
                   + (f"; {cpu_note(result)}" if cpu_note(result) else "")
                   + (f"; {result['errors']} errors" if result["errors"] else ""))]


STARTUP_BUDGET_S = 5.0


def measure_startup(folder: Path, *, runs: int = 2) -> list[dict[str, Any]]:
    """``make run`` from the command to the first 200 from ``/healthz``: once on a fresh
    database (migrations, demo study), then again as on an already set-up checkout.

    The checkout is a temporary folder of symbolic links to this one (Makefile, .venv,
    sources) with its own ``instance/``, and ``PRO_DATABASE_URL`` names a database file in it:
    the developer's database and instance folder are never touched. An out-of-date
    ``.venv/.installed`` (``make`` would reinstall the package first) is treated as up to
    date with ``make -o``: the budget is for a checkout that is already set up.
    """
    checkout = folder / "checkout"
    checkout.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in ("instance", ".git"):
            (checkout / entry.name).symlink_to(entry)
    (checkout / "instance").mkdir()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("PRO_") and name not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PRO_DATABASE_URL"] = f"sqlite:///{checkout / 'instance' / 'pro-app.sqlite3'}"
    env["PRO_SECRET_KEY"] = SECRET  # else the app would read the real checkout's instance/secret_key
    up_to_date = subprocess.run(["make", "-q", ".venv/.installed"], cwd=checkout, env=env, capture_output=True)
    stale = up_to_date.returncode != 0
    command = ["make", "--no-print-directory"] + (["-o", ".venv/.installed"] if stale else []) + ["run"]
    timings: list[float] = []
    for number in range(runs):
        port = free_port()
        log = folder / f"make-run-{number}.log"
        with log.open("wb") as out:
            started = time.perf_counter()
            process = subprocess.Popen(command + [f"PORT={port}", "HOST=127.0.0.1"], cwd=checkout, env=env,
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                while status_of(port, "/healthz") != 200:
                    if process.poll() is not None:
                        raise RuntimeError(f"make run exited with {process.returncode}: "
                                           f"{log.read_text(errors='replace')[-500:]}")
                    if time.perf_counter() - started > 120:
                        raise RuntimeError("make run did not serve /healthz within 120 s")
                    time.sleep(0.02)
                timings.append(time.perf_counter() - started)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        process.wait(timeout=10)
        print(f"make run #{number + 1}: first 200 from /healthz after {timings[-1]:.2f} s"
              + (" (fresh database: migrations and demo study)" if number == 0 else " (already set up)"), flush=True)
    note = "package install step skipped (.venv/.installed out of date)" if stale else ""
    figures = [figure("Start-up: make run to first 200, first run (migrate, seed demo)", timings[0], "s", note=note)]
    if len(timings) > 1:
        warm = min(timings[1:])
        figures.append(figure("Start-up: make run to first 200, already set up", warm, "s",
                              budget=f"< {STARTUP_BUDGET_S:.0f} s", passed=warm < STARTUP_BUDGET_S,
                              note=f"best of {len(timings) - 1}" + (f"; {note}" if note else "")))
    return figures


def postgres_url(args: argparse.Namespace) -> str | None:
    """The dedicated PostgreSQL database (fresh), or None (see ``optional_postgres_url``)."""
    return optional_postgres_url("PRO_BENCH_WEB_DATABASE_URL", DEFAULT_POSTGRES, skip=args.no_postgres)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="3 s per measurement, smaller data")
    parser.add_argument("--seconds", type=float, help="measured seconds per measurement (default 10, quick 3)")
    parser.add_argument("--warmup", type=float, help="seconds of load before measuring (default 2, quick 1)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--submissions", type=int,
                        help="fully answered questionnaires prepared (default 600, quick 200)")
    parser.add_argument("--submit-connections", type=int, default=8)
    parser.add_argument("--dashboard-participants", type=int, help="default 10,000 (quick 2,000)")
    parser.add_argument("--dashboard-connections", type=int, default=2)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-dashboard", action="store_true")
    parser.add_argument("--no-startup", action="store_true", help="skip timing make run")
    parser.add_argument("--profile", action="store_true", help="cProfile 200 question pages and answer saves")
    parser.add_argument("--profile-only", action="store_true",
                        help="only count statements and profile in-process (no servers, no load)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, SQLite files)")
    parser.add_argument("--json", action="store_true", help="finish with one JSON line of figures")
    args = parser.parse_args()
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.submissions = args.submissions or (200 if args.quick else 600)
    args.dashboard_participants = args.dashboard_participants or (2_000 if args.quick else 10_000)
    settings = LoadSettings(args.seconds, args.warmup, args.connections)

    if args.profile_only:
        url = temporary_sqlite_url()
        prepared = prepare(url, 1, 1)
        for path, seen in statements_per_request(url, prepared.browsing[0], prepared.submitting[0], True).items():
            print(f"{path}: {statements(seen)}")
        shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent, ignore_errors=True)
        return

    command, source = make_run_command()
    print(f"gunicorn command ({source}): {' '.join(shlex.quote(word) for word in command)}")
    print(f"load: {args.connections} connections (submissions {args.submit_connections}, dashboard "
          f"{args.dashboard_connections}), {args.warmup:g} s warm-up + {args.seconds:g} s measured; times in ms")
    folder = Path(tempfile.mkdtemp(prefix="pro-bench-web-"))
    pg_url = postgres_url(args)  # first, so that a wrong URL fails before minutes of work
    figures: list[dict[str, Any]] = []
    failed: list[str] = []

    def section(name: str, action: Callable[[], list[dict[str, Any]]]) -> None:
        """One part of the run: its failure becomes an error row, the other parts still run."""
        try:
            figures.extend(action())
        except Exception as error:  # reported in the table; KeyboardInterrupt still stops the run
            traceback.print_exc()
            failed.append(name)
            figures.append(figure(f"{name}: ERROR", None, "", passed=False,
                                  note=f"{type(error).__name__}: {error}"[:300]))

    def ceiling_figures() -> list[dict[str, Any]]:
        print(HEADER)
        assert ceiling is not None
        ceilings = measure_ceilings(ceiling, settings, folder)
        return [figure(f"Ceiling ({key}) {name}", ceilings[key]["rps"], "req/s",
                       note=f"p99 {ceilings[key]['latency_ms']['p99']:.1f} ms, "
                            f"{ceilings[key]['bytes_per_response']} B"
                            + (f"; {cpu_note(ceilings[key])}" if cpu_note(ceilings[key]) else "")
                            + (f"; {ceilings[key]['errors']} errors" if ceilings[key]["errors"] else ""))
                for key, name in CEILING_NAMES.items()]

    def on_sqlite() -> list[dict[str, Any]]:
        url = temporary_sqlite_url()
        try:
            return measure_app("SQLite", url, args, settings, folder, ceiling)
        finally:
            if not args.keep:
                shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent, ignore_errors=True)

    def on_postgres() -> list[dict[str, Any]]:
        assert pg_url is not None
        try:
            return measure_app("PostgreSQL", pg_url, args, settings, folder, ceiling)
        finally:
            drop_postgres_database(pg_url)

    ceiling: Server | None = None
    servers = ExitStack()
    try:
        if not args.no_startup:
            section("Start-up", lambda: measure_startup(folder, runs=2 if args.quick else 4))

        def start_ceiling() -> list[dict[str, Any]]:
            nonlocal ceiling
            ceiling = servers.enter_context(ceiling_server(folder, pg_url))
            return []

        section("Ceiling server", start_ceiling)
        if ceiling is not None:
            section("Ceilings", ceiling_figures)
        section("pro-app on SQLite", on_sqlite)
        if pg_url is not None:
            section("pro-app on PostgreSQL", on_postgres)
        if not args.no_dashboard:
            section("Nurse dashboard over HTTP", lambda: measure_dashboard(args, settings, folder))
    finally:
        servers.close()
        if args.keep:
            print(f"kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print()
    for row in figures:
        verdict = "" if row["pass"] is None else ("ok" if row["pass"] else "OVER BUDGET")
        ratio = f"{row['ratio']:.0%}" if row["ratio"] is not None else ""
        value = "" if row["value"] is None else f"{row['value']:,.1f}"
        print(f"{row['name']:<62}{value:>10} {row['unit']:<6}{ratio:>6}  {row['budget']:<24}{verdict}")
    if args.json:
        print_figures_json(figures)
    sys.stdout.flush()
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
