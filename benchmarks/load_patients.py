"""Many patients answering the QLQ-C30 at once against the real server, with faults injected.

Run: ``.venv/bin/python benchmarks/load_patients.py`` (``--help`` for options). Prints figures
and the result of the data checks; exits 1 when a check fails. Never timed assertions: the
figures are for reading; the checks are about data (nothing acknowledged lost, nothing
duplicated, no server error).

Server: gunicorn started as a subprocess on 127.0.0.1 and a free port, with the settings of
``make run`` (2 sync workers, the redacting access log), on a fresh temporary SQLite file in
WAL mode migrated to head, or with ``--database URL`` on a dedicated PostgreSQL database
(created if missing, its schema EMPTIED and migrated: never point it at data you keep).

Participants: ``--patients`` (default 200) enrolled through the services in a study on the
6-weekly schedule, the baseline questionnaire open now, each with a personal link issued as
the staff pages issue it.

Clients: one thread per patient, each with its own cookies, follows the real pages -- open
the link, start, each of the 30 question pages (the form is read from the HTML: CSRF token,
hidden fields such as ``assessment`` and ``request_id``, the radio values), review, submit,
thank-you page. Every form post carries an ``Idempotency-Key`` header (the form's
``request_id`` when the page has one). The clients misbehave as phones on a poor connection
do: some acknowledged posts are sent again unchanged (same request id), some answers are
posted twice at the same moment (a double tap), some reads time out after a few milliseconds
and the request is sent again, some answers are changed by going back to the question, a few
questions are left blank, and submissions are sent twice (sometimes both at the same moment).
Connection errors are retried with the same request.
A 503 with ``Retry-After`` (the app's answer when its database connection is lost under a
request: nothing was stored) is sent again after that pause and counted apart; any other 5xx
is counted as a failure (and retried, so that the rest of the run can be checked).

Faults (``--fault``, injected ``--fault-count`` times at even steps of progress):
``kill-worker`` SIGKILLs a gunicorn worker (the master starts a new one; the requests it was
serving fail with a connection error and are retried); ``reload`` sends SIGHUP to the master
(new workers, old ones finish their request); ``db-drop`` (PostgreSQL) terminates every
connection of the application's database with ``pg_terminate_backend``, three times in 0.2 s.

Checks, read from the database after the run: every acknowledged answer (303 received) is
stored exactly once with the last acknowledged value of its item, nothing is stored that was
not acknowledged, each change of an answer is audited once (a replayed request adds no
event); every acknowledged submission has one submission (status, key, one audit event) and
one score set of 16 scales; every assessment belongs to the patient who answered it; the
audit chain verifies; no 5xx, no unexpected status, no client gave up.

Figures: requests per second, questionnaires per minute, and p50/p95/p99/max latency per kind
of request (only requests that got a response; the injected short timeouts are counted
apart).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from _fixtures import fresh_postgres_url, temporary_sqlite_url
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.models import Answer, Arm, Assessment, AuditEvent, Participant, ScaleScore, Site, Study
from pro_app.db.types import utcnow
from pro_app.services.access import issue_link
from pro_app.services.audit import verify_chain
from pro_app.services.participants import enrol_participant
from pro_app.services.schedules import load_builtin_template

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ("kill-worker", "reload", "db-drop")
KINDS = ("link", "home", "start", "question", "answer", "review", "submit", "done")
ITEMS = 30
SCORES = 16
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # longer than gunicorn's 30 s worker timeout: a slow answer is not a lost one
MAX_ATTEMPTS = 40
STUDY_CODE = "LOAD"
#: An exception as a traceback ends: ``package.module.SomeError: message``.
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Shutdown)\w*): (.*)$")


# --- settings and results -------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    patients: int = 200
    #: None: a fresh temporary SQLite file. Else a dedicated PostgreSQL database (emptied).
    database_url: str | None = None
    fault: str | None = None
    fault_count: int = 2
    workers: int = 2
    seed: int = 20240601
    #: Probability that an acknowledged answer is posted again unchanged (same request id).
    replay_rate: float = 0.08
    #: Probability that a request's first read times out after 0.3-2 ms (then sent again).
    timeout_rate: float = 0.04
    #: Probability that the patient goes back to a question and chooses another answer.
    change_rate: float = 0.04
    #: Probability that a question is left blank (the review then asks for confirmation).
    skip_rate: float = 0.01
    #: Probability that an answer is posted twice at the same moment (a double tap on Next).
    double_tap_rate: float = 0.03
    #: Probability that the submission is sent twice; half of those at the same moment.
    duplicate_submit_rate: float = 0.5
    #: Whole run bounded in time: clients still running then give up (a failure).
    max_seconds: float = 1800.0
    #: Keep the temporary folder (database, server log) for inspection.
    keep: bool = False


@dataclass
class Ack:
    """One acknowledged answer post, in the order the client received the acknowledgements."""

    item: str
    value: int


@dataclass
class PatientRun:
    subject: str
    token: str
    assessment_id: int | None = None
    acks: list[Ack] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)
    submission_key: str | None = None
    submitted: bool = False
    error: str | None = None


@dataclass
class FaultEvent:
    at_seconds: float
    description: str


class Stats:
    """Counters and latencies shared by every client thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.server_errors: list[str] = []  # the first 200, for the report
        self.server_statuses: Counter[int] = Counter()  # every 5xx
        self.unexpected: list[str] = []
        self.transport: Counter[str] = Counter()
        self.behaviour: Counter[str] = Counter()
        self.unavailable: Counter[str] = Counter()  # 503 with Retry-After, by kind of request
        self.acked_answers = 0

    def response(self, kind: str, seconds: float, status: int) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            self.statuses[(kind, status)] += 1

    def count(self, what: str | int, counter: str = "behaviour") -> None:
        with self.lock:
            getattr(self, counter)[what] += 1

    def note(self, target: list[str], message: str) -> None:
        with self.lock:
            if len(target) < 200:
                target.append(message)

    def acked(self) -> None:
        with self.lock:
            self.acked_answers += 1


@dataclass
class Report:
    settings: Settings
    backend: str
    seconds: float
    responses: int
    submitted: int
    stats: Stats
    faults: list[FaultEvent]
    checks: list[tuple[bool, str]]
    folder: Path
    server_log_errors: list[str]
    database_url: str
    runs: list[PatientRun]

    @property
    def server_exceptions(self) -> Counter[str]:
        """The exceptions named in the server log (``psycopg.OperationalError: ...``), counted."""
        found: Counter[str] = Counter()
        for line in self.server_log_errors:
            match = EXCEPTION_LINE.match(line)
            if match:
                found[f"{match.group(1)}: {match.group(2)[:100]}"] += 1
        return found

    @property
    def failures(self) -> list[str]:
        return [message for ok, message in self.checks if not ok]

    @property
    def requests_per_second(self) -> float:
        return self.responses / self.seconds if self.seconds else 0.0

    @property
    def questionnaires_per_minute(self) -> float:
        return self.submitted * 60 / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        s = self.settings
        stats = self.stats
        behaviour = stats.behaviour
        lines = [
            f"{s.patients} patients, {self.backend}, {s.workers} gunicorn workers, fault: "
            f"{s.fault or 'none'}" + (f" x{s.fault_count}" if s.fault else ""),
            f"  wall {self.seconds:.1f} s, {self.responses:,} responses ({self.requests_per_second:.1f} requests/s), "
            f"{self.submitted} questionnaires submitted ({self.questionnaires_per_minute:.1f} per minute)",
            f"  clients: {behaviour['replay']} acknowledged posts replayed, {behaviour['timeout']} short timeouts, "
            f"{behaviour['double_tap']} answers double-tapped, {behaviour['change']} changed, "
            f"{behaviour['skip']} left blank, "
            f"{behaviour['duplicate_submit']} duplicate submits ({behaviour['concurrent_submit']} at the same moment)",
            f"  retried after a transport error: {sum(stats.transport.values())} "
            f"({', '.join(f'{name} {count}' for name, count in sorted(stats.transport.items())) or 'none'}); "
            f"503 'try again' (database connection lost) retried: {sum(stats.unavailable.values())}; "
            f"other 5xx responses: {sum(stats.server_statuses.values())}",
        ]
        for event in self.faults:
            lines.append(f"  fault at {event.at_seconds:.1f} s: {event.description}")
        lines.append(f"  {'request':<10}{'count':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for kind in KINDS:
            values = sorted(stats.latencies.get(kind, []))
            if not values:
                continue
            lines.append(
                f"  {kind:<10}{len(values):>8}" + "".join(
                    f"{milliseconds:>9.1f}"
                    for milliseconds in (_percentile(values, 50) * 1000, _percentile(values, 95) * 1000,
                                         _percentile(values, 99) * 1000, values[-1] * 1000)
                )
            )
        lines.append("  checks:")
        lines += [f"    {'ok  ' if ok else 'FAIL'} {message}" for ok, message in self.checks]
        for message in (stats.server_errors + stats.unexpected)[:10]:
            lines.append(f"    - {message}")
        for exception, count in self.server_exceptions.most_common(5):
            lines.append(f"    server log: {count} x {exception}")
        return lines


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


# --- the database -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Prepared:
    url: str
    folder: Path
    patients: list[tuple[str, str]]  # (subject code, link token)


def prepare(settings: Settings, folder: Path) -> Prepared:
    """A migrated database with ``settings.patients`` participants, each holding a link."""
    if settings.database_url is None:
        url = temporary_sqlite_url()
    else:
        url = fresh_postgres_url(settings.database_url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            now = utcnow()
            study = Study(code=STUDY_CODE, name="Load test study", timezone="Europe/Berlin")
            study.sites = [
                Site(code="A", name="Site A", timezone="Europe/Berlin"),
                Site(code="B", name="Site B", timezone="Asia/Shanghai"),
            ]
            study.arms = [Arm(code="low", name="Low dose"), Arm(code="high", name="High dose")]
            session.add(study)
            session.flush()
            load_builtin_template(session, study, "qol_6_weekly", actor="cli")
            patients = []
            for number in range(settings.patients):
                participant = enrol_participant(
                    session, study=study, site=study.sites[number % 2], arm=study.arms[number % 2],
                    subject_code=f"LOAD-{number:05d}", locale="en",
                    anchors={"enrolment": now - timedelta(hours=1)}, actor="cli", now=now,
                )
                issued = issue_link(session, participant, actor="cli", valid_days=30, now=now)
                patients.append((participant.subject_code, issued.token))
            session.commit()
    finally:
        engine.dispose()
    return Prepared(url=url, folder=folder, patients=patients)


def terminate_connections(url: str) -> int:
    """Terminate every connection to the application's PostgreSQL database, three times in
    0.2 s (connections opened again in between go too). Returns how many were terminated."""
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    terminated = 0
    try:
        with admin.connect() as connection:
            for _ in range(3):
                rows = connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": parsed.database},
                ).all()
                terminated += sum(1 for (done,) in rows if done)
                time.sleep(0.1)
    finally:
        admin.dispose()
    return terminated


# --- the server -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """gunicorn serving ``wsgi:app`` as ``make run`` does, on a free loopback port."""

    def __init__(self, database_url: str, folder: Path, workers: int = 2) -> None:
        self.database_url = database_url
        self.workers = workers
        self.port = free_port()
        self.log_path = folder / "gunicorn.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "PRO_ENV": "production",
            "PRO_SECRET_KEY": uuid.uuid4().hex,
            "PRO_DATABASE_URL": self.database_url,
            "PRO_BASE_URL": f"http://127.0.0.1:{self.port}",
        }
        command = [
            sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
            "--access-logfile", "-", "--logger-class", "pro_app.gunicorn_logging.RedactingLogger",
            "--access-logformat", '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms', "wsgi:app",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/healthz")
                status = connection.getresponse().status
                connection.close()
                if status == 200 and len(self.worker_pids()) == self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer within 60 s; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> set[int]:
        """The master's live child processes (read from /proc: no extra dependency)."""
        children = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == self.pid and fields[0] != "Z":
                children.add(int(entry.name))
        return children

    def wait_for_workers(self, gone: set[int], seconds: float = 20.0) -> set[int]:
        """Wait until ``self.workers`` workers run and none of ``gone`` is among them."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) == self.workers and not pids & gone:
                return pids
            time.sleep(0.05)
        return self.worker_pids()

    def kill_worker(self, rng: random.Random) -> str:
        before = self.worker_pids()
        victim = rng.choice(sorted(before))
        os.kill(victim, signal.SIGKILL)
        after = self.wait_for_workers({victim})
        replaced = len(after) == self.workers and victim not in after
        return (f"SIGKILL worker {victim}; workers now {sorted(after)}"
                + ("" if replaced else " (NOT replaced)"))

    def reload(self) -> str:
        before = self.worker_pids()
        os.kill(self.pid, signal.SIGHUP)
        after = self.wait_for_workers(before)
        renewed = len(after) == self.workers and not after & before
        return (f"SIGHUP master {self.pid}; workers {sorted(before)} -> {sorted(after)}"
                + ("" if renewed else " (NOT all replaced)"))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_errors(self) -> list[str]:
        """Error lines of the server log (tracebacks, unhandled errors, worker crashes)."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        markers = ("Traceback", "Unhandled error", "Error:", "[ERROR]", "[CRITICAL]")
        expected = ("was sent SIGKILL", "Worker (pid:")  # the kill-worker fault, logged by the master
        return [
            line for line in lines
            if (any(m in line for m in markers) or EXCEPTION_LINE.match(line)) and not any(e in line for e in expected)
        ]


@contextmanager
def running_server(database_url: str, folder: Path, workers: int) -> Iterator[Server]:
    server = Server(database_url, folder, workers)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- the clients ------------------------------------------------------------------------------

class GaveUp(RuntimeError):
    """A request could not be completed within the attempts or the run's time."""


class Unexpected(RuntimeError):
    """The server answered with a status the page flow does not allow."""


@dataclass
class Response:
    status: int
    location: str
    body: str
    retry_after: str | None = None


@dataclass
class Form:
    action: str
    data: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    radios: dict[str, list[str]] = field(default_factory=dict)
    checked: dict[str, str] = field(default_factory=dict)
    checkboxes: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)


class _FormParser(HTMLParser):
    """Every form of a page with its hidden fields, radio values, check boxes and buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._open = Form(action=attributes.get("action", ""), data=attributes)
            self.forms.append(self._open)
            return
        form = self._open
        if form is None or "name" not in attributes:
            return
        name = attributes["name"]
        if tag == "input":
            kind = attributes.get("type", "text").lower()
            if kind == "radio":
                form.radios.setdefault(name, []).append(attributes.get("value", ""))
                if "checked" in attributes:
                    form.checked[name] = attributes.get("value", "")
            elif kind == "checkbox":
                form.checkboxes[name] = attributes.get("value") or "y"
            elif kind not in ("submit", "button", "reset"):
                form.fields[name] = attributes.get("value", "")
        elif tag == "button":
            form.buttons.append((name, attributes.get("value", "")))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def find_form(body: str, action_prefix: str) -> Form:
    parser = _FormParser()
    parser.feed(body)
    for form in parser.forms:
        if form.action.startswith(action_prefix):
            return form
    raise Unexpected(f"no form posting to {action_prefix} on the page")


class PatientClient:
    """One patient's phone: its own cookies, the real pages, a poor connection."""

    def __init__(
        self, run: PatientRun, port: int, settings: Settings, stats: Stats, rng: random.Random, deadline: float,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.run = run
        self.port = port
        self.settings = settings
        self.stats = stats
        #: The patient's choices (answers, replays, changes, double submits): the same for a
        #: seed whatever the network does. ``net`` draws the timeouts and back-off delays.
        self.rng = rng
        self.net = random.Random(rng.getrandbits(64))
        self.deadline = deadline
        self.cancelled = cancelled or threading.Event()
        self.cookies: dict[str, str] = {}
        self.cookie_lock = threading.Lock()

    # transport

    def _exchange(self, method: str, path: str, body: str | None, key: str | None, read_timeout: float) -> Response:
        with self.cookie_lock:
            cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        headers = {"Accept": "text/html", "Connection": "close"}
        if cookie:
            headers["Cookie"] = cookie
        if key:
            headers["Idempotency-Key"] = key
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CONNECT_TIMEOUT)
        try:
            connection.request(method, path, body=body, headers=headers)
            assert connection.sock is not None
            connection.sock.settimeout(read_timeout)
            reply = connection.getresponse()
            content = reply.read().decode("utf-8", errors="replace")
            set_cookies = reply.headers.get_all("Set-Cookie") or []
            location = urlsplit(reply.headers.get("Location", "")).path
            retry_after = reply.headers.get("Retry-After")
            status = reply.status
        finally:
            connection.close()
        with self.cookie_lock:
            for header in set_cookies:
                name, _, rest = header.partition("=")
                value = rest.split(";", 1)[0]
                expired = "expires=thu, 01 jan 1970" in header.lower() or "max-age=0" in header.lower()
                if expired:
                    self.cookies.pop(name.strip(), None)
                else:
                    self.cookies[name.strip()] = value
        return Response(status, location, content, retry_after)

    def send(
        self, kind: str, method: str, path: str, fields: dict[str, str] | None = None, key: str | None = None,
        *, allow_timeout: bool = True,
    ) -> Response:
        """One logical request, sent again (same body, same key) until the server answers."""
        body = urlencode(fields) if fields is not None else None
        for attempt in range(MAX_ATTEMPTS):
            if time.monotonic() > self.deadline or self.cancelled.is_set():
                raise GaveUp(f"{kind} {method}: the run's time is up, or it was interrupted")
            short = attempt == 0 and allow_timeout and self.net.random() < self.settings.timeout_rate
            # A phone that gives up waiting: shorter than the server takes for any page (a few
            # milliseconds even on a fast machine), so the answer comes after the client left.
            read_timeout = self.net.uniform(0.0003, 0.002) if short else READ_TIMEOUT
            started = time.perf_counter()
            try:
                response = self._exchange(method, path, body, key, read_timeout)
            except (OSError, http.client.HTTPException) as error:
                if short and isinstance(error, TimeoutError):
                    self.stats.count("timeout")
                    self.stats.count("injected timeout", "transport")
                else:
                    self.stats.count(type(error).__name__, "transport")
                time.sleep(self.net.uniform(0.02, 0.2) * min(attempt + 1, 5))
                continue
            self.stats.response(kind, time.perf_counter() - started, response.status)
            if response.status == 503 and response.retry_after is not None:
                # "Briefly unavailable, try again": the database connection went away under the
                # request, nothing was stored; sent again after the pause the server asked for.
                self.stats.count(kind, "unavailable")
                time.sleep(min(float(response.retry_after), 2.0) * self.net.uniform(0.5, 1.0))
                continue
            if response.status >= 500:
                self.stats.count(response.status, "server_statuses")
                self.stats.note(
                    self.stats.server_errors, f"{response.status} on {kind} {method} (attempt {attempt + 1})"
                )
                time.sleep(self.net.uniform(0.05, 0.3))
                continue
            return response
        raise GaveUp(f"{kind} {method}: no answer after {MAX_ATTEMPTS} attempts")

    def expect(self, response: Response, status: int, kind: str, location: str | None = None) -> Response:
        if response.status != status or (location is not None and response.location != location):
            raise Unexpected(
                f"{kind}: expected {status}{' to ' + location if location else ''}, "
                f"got {response.status}{' to ' + response.location if response.location else ''}"
            )
        return response

    def get(self, kind: str, path: str) -> Response:
        return self.expect(self.send(kind, "GET", path), 200, kind)

    # the page flow

    def complete(self) -> None:
        run = self.run
        opened = self.expect(self.send("link", "GET", f"/p/{run.token}"), 303, "link")
        home = self.get("home", opened.location)
        start_form = find_form(home.body, "/q/start")
        started = self.post("start", start_form, dict(start_form.fields))
        page = self.get("question", started.location)
        for _ in range(3 * ITEMS):  # bounded: a server sending the patient round in circles fails
            form = find_form(page.body, "/q/")
            after = self.answer(form)
            if after == "/q/review":
                break
            page = self.get("question", after)
        else:
            raise Unexpected(f"still on question pages after {3 * ITEMS} of them")
        self.submit()
        self.get("done", "/q/done")

    def post(self, kind: str, form: Form, fields: dict[str, str], expect: int = 303) -> Response:
        key = fields.get("request_id") or str(uuid.uuid4())
        return self.expect(self.send(kind, "POST", form.action, fields, key), expect, kind)

    def answer(self, form: Form) -> str:
        """Answer one question page; returns where the server sent the patient next."""
        run = self.run
        item = form.data.get("data-item") or "q" + form.action.rstrip("/").rsplit("/", 1)[-1]
        assessment = int(form.fields.get("assessment", "0"))
        if run.assessment_id is None:
            run.assessment_id = assessment
        elif assessment != run.assessment_id:
            raise Unexpected(f"question page of assessment {assessment}, expected {run.assessment_id}")
        values = form.radios.get("value", [])
        go = "next" if ("go", "next") in form.buttons else "review"
        fields = dict(form.fields)
        fields["go"] = go
        if self.rng.random() < self.settings.skip_rate and item not in run.skipped:
            self.stats.count("skip")
            run.skipped.add(item)
            return self.post("answer", form, fields).location
        value = self.rng.choice(values)
        fields["value"] = value
        key = fields.get("request_id") or str(uuid.uuid4())
        if self.rng.random() < self.settings.double_tap_rate:
            self.stats.count("double_tap")
            first, second = self.send_together("answer", form.action, fields, key)
            done = self.expect(first, 303, "answer (double tap)")
            self.expect(second, 303, "answer (double tap)", done.location)
        else:
            done = self.expect(self.send("answer", "POST", form.action, fields, key), 303, "answer")
        self._acknowledge(item, value)
        if self.rng.random() < self.settings.replay_rate:
            # The phone did not see the answer and sends the very same request again.
            self.stats.count("replay")
            self.expect(self.send("answer", "POST", form.action, fields, key), 303, "answer replay", done.location)
        if self.rng.random() < self.settings.change_rate and len(values) > 1:
            # Back to the same question (a fresh page, so a fresh request id), another answer.
            self.stats.count("change")
            again = find_form(self.get("question", form.action).body, form.action)
            if again.checked.get("value") != value:
                raise Unexpected(f"question {item} shows {again.checked.get('value')!r}, saved {value!r}")
            other = dict(again.fields)
            other["go"] = go
            other["value"] = self.rng.choice([v for v in values if v != value])
            done = self.post("answer", again, other)
            self._acknowledge(item, other["value"])
        return done.location

    def _acknowledge(self, item: str, value: str) -> None:
        self.run.acks.append(Ack(item, int(value)))
        self.run.skipped.discard(item)
        self.stats.acked()

    def send_together(self, kind: str, path: str, fields: dict[str, str], key: str) -> list[Response]:
        """The same post twice at the same moment (a double tap), each retried on its own."""
        results: list[Response | BaseException] = []

        def one() -> None:
            try:
                results.append(self.send(kind, "POST", path, fields, key))
            except BaseException as error:  # raised below, in the patient's own thread
                results.append(error)

        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [result for result in results if isinstance(result, Response)]

    def submit(self) -> None:
        review = self.get("review", "/q/review")
        form = find_form(review.body, "/q/submit")
        fields = dict(form.fields)
        if "confirm_missing" in form.checkboxes:
            fields["confirm_missing"] = form.checkboxes["confirm_missing"]
        self.run.submission_key = fields.get("key")
        key = fields.get("request_id") or str(uuid.uuid4())
        roll = self.rng.random()
        if roll < self.settings.duplicate_submit_rate / 2:
            # A double tap: both posts leave at the same moment.
            self.stats.count("duplicate_submit")
            self.stats.count("concurrent_submit")
            for result in self.send_together("submit", form.action, fields, key):
                self.expect(result, 303, "submit (double tap)", "/q/done")
        else:
            self.expect(self.send("submit", "POST", form.action, fields, key), 303, "submit", "/q/done")
            if roll < self.settings.duplicate_submit_rate:
                self.stats.count("duplicate_submit")
                self.expect(self.send("submit", "POST", form.action, fields, key), 303, "submit again", "/q/done")
        self.run.submitted = True


# --- a run ------------------------------------------------------------------------------------

class FaultInjector(threading.Thread):
    """Injects the fault at even steps of progress (acknowledged answers)."""

    def __init__(
        self, settings: Settings, server: Server, url: str, stats: Stats, started: float, stop: threading.Event
    ) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.server = server
        self.url = url
        self.stats = stats
        self.started = started
        self.stop_event = stop
        self.events: list[FaultEvent] = []
        self.rng = random.Random(settings.seed + 1)

    def run(self) -> None:
        total = self.settings.patients * ITEMS
        for step in range(1, self.settings.fault_count + 1):
            threshold = total * step / (self.settings.fault_count + 1)
            while self.stats.acked_answers < threshold:
                if self.stop_event.wait(0.02):
                    return
            try:
                description = self.inject()
            except Exception as error:  # reported as a fault that did NOT take effect
                description = f"{self.settings.fault} FAILED, NOT injected: {error!r}"
            self.events.append(FaultEvent(time.monotonic() - self.started, description))

    def inject(self) -> str:
        fault = self.settings.fault
        if fault == "kill-worker":
            return self.server.kill_worker(self.rng)
        if fault == "reload":
            return self.server.reload()
        if fault == "db-drop":
            return f"pg_terminate_backend: {terminate_connections(self.url)} connections of the app terminated"
        raise ValueError(fault)


def run_load(settings: Settings, *, progress: Callable[[str], None] | None = None) -> Report:
    """Prepare the database, serve it with gunicorn, run the patients, check the database."""
    if settings.fault is not None and settings.fault not in FAULTS:
        raise ValueError(f"unknown fault {settings.fault!r}; one of {', '.join(FAULTS)}")
    backend = "SQLite (WAL)" if settings.database_url is None else "PostgreSQL"
    if settings.fault == "db-drop" and settings.database_url is None:
        raise ValueError("the db-drop fault needs PostgreSQL (--database URL)")
    say = progress or (lambda _message: None)
    folder = Path(tempfile.mkdtemp(prefix="pro-load-"))
    say(f"preparing {settings.patients} participants ({backend}) in {folder}")
    prepared = prepare(settings, folder)
    runs = [PatientRun(subject, token) for subject, token in prepared.patients]
    stats = Stats()
    with running_server(prepared.url, folder, settings.workers) as server:
        say(f"gunicorn pid {server.pid} on 127.0.0.1:{server.port} with workers {sorted(server.worker_pids())}")
        started = time.monotonic()
        deadline = started + settings.max_seconds
        stop = threading.Event()
        injector = FaultInjector(settings, server, prepared.url, stats, started, stop)
        if settings.fault:
            injector.start()

        def patient(index: int) -> None:
            rng = random.Random(settings.seed * 1000 + index)
            time.sleep(rng.uniform(0, 0.5))  # not all in the same millisecond
            client = PatientClient(runs[index], server.port, settings, stats, rng, deadline, stop)
            try:
                client.complete()
            except Exception as error:  # GaveUp, Unexpected, or a page the client cannot read
                runs[index].error = str(error) if isinstance(error, (GaveUp, Unexpected)) else repr(error)
                stats.note(stats.unexpected, f"{runs[index].subject}: {error}")

        pool = ThreadPoolExecutor(max_workers=max(1, settings.patients))
        try:
            for future in [pool.submit(patient, index) for index in range(len(runs))]:
                future.result()
        finally:
            # Interrupted (Ctrl-C, SIGINT): the clients stop at their next request, then the
            # server is stopped and the temporary files removed on the way out.
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            if sys.exc_info()[0] is not None and not settings.keep:
                _remove_folder(folder, prepared.url)
        seconds = time.monotonic() - started
        if settings.fault:
            injector.join(timeout=30)
        log_errors = server.log_errors()
    say("checking the database")
    checks = check_database(prepared.url, runs, stats, settings, injector.events)
    checks.append((not log_errors, f"server log without errors ({len(log_errors)} error lines)"))
    report = Report(
        settings=settings, backend=backend, seconds=seconds, responses=sum(stats.statuses.values()),
        submitted=sum(1 for run in runs if run.submitted), stats=stats, faults=injector.events, checks=checks,
        folder=folder, server_log_errors=log_errors, database_url=prepared.url, runs=runs,
    )
    if not settings.keep and not report.failures:
        _remove_folder(folder, prepared.url)
    return report


def _remove_folder(folder: Path, url: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if url.startswith("sqlite:///"):
        shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent, ignore_errors=True)


def check_database(
    url: str, runs: list[PatientRun], stats: Stats, settings: Settings, faults: list[FaultEvent]
) -> list[tuple[bool, str]]:
    """What the clients were told against what the database holds."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            owners = dict(
                session.execute(
                    select(Assessment.id, Participant.subject_code)
                    .join(Participant, Participant.id == Assessment.participant_id)
                ).tuples().all()
            )
            answer_rows = session.execute(select(Answer.assessment_id, Answer.item_id, Answer.value)).tuples().all()
            stored: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
            for assessment_id, item_id, value in answer_rows:
                stored[assessment_id][item_id].append(value)
            audited: Counter[tuple[int, str]] = Counter()
            submit_events: Counter[int] = Counter()
            for action, entity_id, after in session.execute(
                select(AuditEvent.action, AuditEvent.entity_id, AuditEvent.after).where(
                    AuditEvent.action.in_(("answer.save", "assessment.submit"))
                )
            ).tuples():
                if action == "answer.save":
                    audited[(int(entity_id or 0), json.loads(after or "{}").get("item", ""))] += 1
                else:
                    submit_events[int(entity_id or 0)] += 1
            score_counts = dict(
                session.execute(
                    select(ScaleScore.assessment_id, func.count()).group_by(ScaleScore.assessment_id)
                ).tuples().all()
            )
            assessments = {
                a.id: a for a in session.scalars(select(Assessment).where(Assessment.id.in_(
                    [run.assessment_id for run in runs if run.assessment_id is not None]
                )))
            }
            audit_checked, audit_break = verify_chain(session)
    finally:
        engine.dispose()

    lost: list[str] = []
    duplicated: list[str] = []
    unacknowledged: list[str] = []
    audit_mismatch: list[str] = []
    wrong_owner: list[str] = []
    submission_problems: list[str] = []
    acknowledged = 0
    for run in runs:
        if run.assessment_id is None:
            continue
        if owners.get(run.assessment_id) != run.subject:
            wrong_owner.append(
                f"{run.subject} answered assessment {run.assessment_id} of {owners.get(run.assessment_id)}"
            )
        last: dict[str, int] = {}
        changes: Counter[str] = Counter()
        for ack in run.acks:
            if last.get(ack.item) != ack.value:
                changes[ack.item] += 1
            last[ack.item] = ack.value
        acknowledged += len(last)
        held = stored.get(run.assessment_id, {})
        for item, value in last.items():
            values = held.get(item, [])
            if len(values) > 1:
                duplicated.append(f"{run.subject} {item}: {len(values)} rows")
            elif values != [value]:
                lost.append(f"{run.subject} {item}: acknowledged {value}, stored {values or 'nothing'}")
            if audited[(run.assessment_id, item)] != changes[item]:
                audit_mismatch.append(
                    f"{run.subject} {item}: {changes[item]} acknowledged changes, "
                    f"{audited[(run.assessment_id, item)]} answer.save events"
                )
        for item in set(held) - set(last):
            unacknowledged.append(f"{run.subject} {item}: stored {held[item]} but never acknowledged")
        if run.submitted:
            assessment = assessments.get(run.assessment_id)
            if assessment is None or assessment.status != "completed" or assessment.submitted_at is None:
                status = assessment.status if assessment is not None else "no such assessment"
                submission_problems.append(f"{run.subject}: acknowledged submission, status {status}")
            elif assessment.submission_key != run.submission_key:
                submission_problems.append(f"{run.subject}: submitted with another key")
            if score_counts.get(run.assessment_id, 0) != SCORES:
                submission_problems.append(f"{run.subject}: {score_counts.get(run.assessment_id, 0)} scores")
            if submit_events[run.assessment_id] != 1:
                submission_problems.append(f"{run.subject}: {submit_events[run.assessment_id]} submission events")

    def check(problems: list[str], message: str) -> tuple[bool, str]:
        detail = f" -- {len(problems)} problems, e.g. {'; '.join(problems[:3])}" if problems else ""
        return (not problems, message + detail)

    submitted = sum(1 for run in runs if run.submitted)
    server_errors = sum(stats.server_statuses.values())
    statuses = ", ".join(f"{count} x {status}" for status, count in sorted(stats.server_statuses.items()))
    gave_up = [f"{run.subject}: {run.error}" for run in runs if run.error]
    checks = [
        check(gave_up, f"every patient completed the flow ({submitted}/{len(runs)} submitted)"),
        check(lost, f"every acknowledged answer stored with its last acknowledged value ({acknowledged:,} answers)"),
        check(duplicated, "no answer stored twice"),
        check(unacknowledged, "nothing stored that was not acknowledged"),
        check(audit_mismatch, "each acknowledged change audited exactly once (replays add nothing)"),
        check(submission_problems, f"each acknowledged submission: one submission, one event, {SCORES} scores"),
        check(wrong_owner, "every assessment answered by its own patient"),
        (audit_break is None, f"audit chain verifies ({audit_checked:,} events)"
         + (f" -- broken at {audit_break.seq}: {audit_break.reason}" if audit_break else "")),
        (server_errors == 0, "no 5xx response" + (f" -- {server_errors}: {statuses}" if server_errors else "")),
    ]
    if settings.fault:
        ineffective = [
            event.description for event in faults
            if "NOT" in event.description or ": 0 connections" in event.description
        ]
        checks.append(check(
            ineffective, f"fault {settings.fault} injected {len(faults)} of {settings.fault_count} times and took effect"
        ))
        if len(faults) != settings.fault_count:
            checks.append((False, f"fault injected {len(faults)} times, {settings.fault_count} planned"))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--patients", type=int, default=Settings.patients)
    parser.add_argument("--database", metavar="URL", help="a dedicated PostgreSQL database (it is emptied)")
    parser.add_argument("--fault", choices=FAULTS)
    parser.add_argument("--fault-count", type=int, default=Settings.fault_count)
    parser.add_argument("--workers", type=int, default=Settings.workers)
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--max-seconds", type=float, default=Settings.max_seconds)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (database, server log)")
    args = parser.parse_args()
    if args.fault == "db-drop" and not args.database:
        parser.error("--fault db-drop needs --database (PostgreSQL)")
    settings = Settings(
        patients=args.patients, database_url=args.database, fault=args.fault, fault_count=args.fault_count,
        workers=args.workers, seed=args.seed, max_seconds=args.max_seconds, keep=args.keep,
    )
    try:
        report = run_load(settings, progress=lambda message: print(message, flush=True))
    except KeyboardInterrupt:
        print("interrupted: server stopped, temporary files removed")
        sys.exit(130)
    for line in report.lines():
        print(line)
    if report.failures:
        print(f"FAILED: {len(report.failures)} checks; server log kept in {report.folder}, "
              f"database at {make_url(report.database_url).render_as_string(hide_password=True)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
