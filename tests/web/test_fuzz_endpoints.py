"""Every endpoint x every kind of caller x arbitrary input (hypothesis property tests).

Routes are read from ``app.url_map`` and their URL variables filled by converter, so a new
route is fuzzed the day it is added (a converter this file does not know fails the inventory
test). Each example sends one to three requests as an anonymous visitor, a signed-in patient,
or a staff member of each role, with CSRF protection off, on with a valid token (so bad input
reaches the validation code), or on with a missing or forged token. Values come from real ids
of both sites, tokens, codes, emails, locales and choices, mixed with huge, negative,
non-numeric, unicode and oversized input.

Properties, checked after every request:
- never a 5xx;
- the security headers and the no-inline-code rule of ``test_security_headers``;
- no change to data the caller may not change. The clinical, participant, staff and study
  tables are read before and after each request, every row attributed to its owner (a
  participant, a staff account, the study setup, the staff outbox); each audit event to its
  actor and to what it is about. A refused request (4xx) may change nothing; an anonymous
  caller nothing; a patient only their own questionnaire; a nurse only participants of their
  own sites; an analyst only their own account and audit entries; an administrator anything.
  Bookkeeping is left out: rate-limit buckets, the audit chain head, login counters and the
  audit entries of sign-ins and lockouts.

Isolation: the world is built once per test (inside the test's rolled-back transaction) and
each example runs inside a SAVEPOINT that is rolled back at its end, so no example sees
another's data (which could hide a bug, e.g. a withdrawal that makes later writes refused).
Hypothesis's function-scoped-fixture health check is suppressed for that reason: the fixtures
hold only what is the same for every example.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask, session
from flask.testing import FlaskClient
from flask_wtf import FlaskForm
from flask_wtf.csrf import generate_csrf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from wtforms import FieldList, FormField
from wtforms.fields.core import UnboundField

from pro_app.db.models import Base
from pro_app.domain.instruments import default_registry
from pro_app.exports.formats import FORMATS
from pro_app.web.patient.context import SESSION_KEY as PATIENT_KEY
from pro_app.web.staff.guard import SESSION_KEY as STAFF_KEY
from tests.factories import STAFF_PASSWORD
from tests.web.test_security_headers import World, build_world, real_paths, response_problems, signed_in

ROLES = ("anonymous", "patient", "admin", "nurse", "analyst")
WEB = Path(__file__).resolve().parents[2] / "pro_app" / "web"
STATIC = WEB.parent / "static"
QLQ = default_registry().get("qlq_c30")

#: How many examples (each with a drawn role, sending one to three requests). About 0.2 s
#: each; the whole file stays under a minute per database. PRO_FUZZ_EXAMPLES=2000 digs deeper.
EXAMPLES = int(os.environ.get("PRO_FUZZ_EXAMPLES", "120"))
#: The same examples on every run (CI stays reproducible); a deeper run explores new ones.
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize="PRO_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- route inventory

_VARIABLE = re.compile(r"<(?:(\w+)(?:\([^>]*\))?:)?(\w+)>")
KNOWN_CONVERTERS = {"default", "string", "int", "path"}
ODD_METHODS = ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


@dataclass(frozen=True)
class Target:
    endpoint: str
    method: str
    rule: str
    variables: tuple[tuple[str, str], ...]  # (converter, name)


def inventory(app: Flask) -> list[Target]:
    """Every rule x method the app serves (HEAD and OPTIONS come from ODD_METHODS)."""
    targets = []
    for rule in app.url_map.iter_rules():
        variables = tuple((m.group(1) or "default", m.group(2)) for m in _VARIABLE.finditer(rule.rule))
        for converter, name in variables:
            assert converter in KNOWN_CONVERTERS, (
                f"{rule.rule}: no fuzz values for the <{converter}:{name}> converter; add it to url_value()"
            )
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            targets.append(Target(rule.endpoint, method, rule.rule, variables))
    return targets


# --------------------------------------------------------------------------- value pools


def _form_classes() -> Iterator[type[FlaskForm]]:
    pending = list(FlaskForm.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.__module__.startswith("pro_app."):
            yield cls


def _fields(cls: type[Any], prefix: str = "") -> Iterator[tuple[str, UnboundField]]:
    for name in dir(cls):
        unbound = getattr(cls, name, None)
        if not isinstance(unbound, UnboundField):
            continue
        if issubclass(unbound.field_class, FieldList):
            inner = unbound.args[0]
            for index in range(3):
                if isinstance(inner, UnboundField) and issubclass(inner.field_class, FormField):
                    yield from _fields(inner.args[0], f"{prefix}{name}-{index}-")
                else:
                    yield f"{prefix}{name}-{index}", inner
        elif issubclass(unbound.field_class, FormField):
            yield from _fields(unbound.args[0], f"{prefix}{name}-")
        else:
            yield f"{prefix}{name}", unbound


def form_vocabulary() -> tuple[list[str], list[str]]:
    """Field names of every form of the app, and the values of their declared choices."""
    names, choices = {"csrf_token"}, set()
    for cls in _form_classes():
        for name, unbound in _fields(cls):
            names.add(name)
            for choice in unbound.kwargs.get("choices") or []:
                value = getattr(choice, "value", None)
                choices.add(str(value if value is not None else choice[0]))
    # Fields views read by hand, and query parameters.
    for source in WEB.rglob("*.py"):
        names |= set(re.findall(r"request\.(?:form|args|values)\.get\(\"(\w+)\"", source.read_text(encoding="utf-8")))
    return sorted(names | {"enrolment", "lymphodepletion", "infusion"}), sorted(choices)


def view_forms(app: Flask) -> dict[str, set[str]]:
    """Field names each endpoint reads: the forms its view (or a helper of its module it
    calls) instantiates. Found from the source, so a new view gets its shape automatically."""
    classes = {cls.__name__: cls for cls in _form_classes()}
    shapes: dict[str, set[str]] = {}
    for endpoint, view in app.view_functions.items():
        view = inspect.unwrap(view)
        module = sys.modules.get(view.__module__)
        try:
            sources = [inspect.getsource(view)]
        except (OSError, TypeError):
            continue
        for called in set(re.findall(r"\b(\w+)\(", sources[0])):
            helper = getattr(module, called, None)
            if inspect.isfunction(helper) and helper.__module__ == view.__module__:
                sources.append(inspect.getsource(helper))
        names = {"csrf_token"}
        for source in sources:
            for form_name in re.findall(r"\b(\w+Form)\(", source):
                if form_name in classes:
                    names |= {name for name, _unbound in _fields(classes[form_name])}
            names |= set(re.findall(r"request\.(?:form|values|args)\.get\(\"(\w+)\"", source))
        shapes[endpoint] = names
    return shapes


class _FormCollector(HTMLParser):
    """Field names and values of the forms of a page, by the endpoint they post to."""

    def __init__(self, app: Flask) -> None:
        super().__init__(convert_charrefs=True)
        self.adapter = app.url_map.bind("localhost")
        self.endpoint: str | None = None
        self.fields: dict[str, set[str]] = {}
        self.values: dict[str, set[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "form":
            method = attributes.get("method", "get").upper()
            try:
                self.endpoint = self.adapter.match(attributes.get("action", "").split("?")[0], method=method)[0]
            except HTTPException:
                self.endpoint = None
        elif tag in ("input", "select", "textarea", "button") and self.endpoint and attributes.get("name"):
            self._last = attributes["name"]
            self.fields.setdefault(self.endpoint, set()).add(self._last)
            if "value" in attributes:
                self.values.setdefault(self._last, set()).add(attributes["value"])
        elif tag == "option" and self.endpoint and "value" in attributes:
            self.values.setdefault(getattr(self, "_last", ""), set()).add(attributes["value"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.endpoint = None


def crawl_forms(app: Flask, world: World) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Forms of every page an administrator and the patient can open, with their values."""
    collector = _FormCollector(app)
    for role in ("admin", "patient"):
        client = signed_in(app, world, role)
        for endpoint, method, path in real_paths(app, world):
            if method == "GET" and not endpoint.startswith("static"):
                response = client.get(path)
                if response.mimetype == "text/html":
                    collector.feed(response.get_data(as_text=True))
    return collector.fields, collector.values


def _text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=max_size)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, picked with the given weights (real values more often)."""
    return st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)]).flatmap(lambda s: s)


@dataclass
class Pools:
    ids: dict[str, list[int]]  # table -> its ids (a table is drawn first: studies are as likely as answers)
    strings: list[str]
    fields: list[str]
    shapes: dict[str, list[str]]  # endpoint -> field names it reads
    seen: dict[str, list[str]]  # field name -> values real pages offered

    def integer(self) -> st.SearchStrategy[int]:
        return weighted(
            (5, st.sampled_from(sorted(self.ids)).flatmap(lambda table: st.sampled_from(self.ids[table]))),
            (1, st.integers(0, 40)), (1, st.integers(-(10**6), 10**6)),
            (1, st.sampled_from([2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30])),
        )

    def value(self) -> st.SearchStrategy[str]:
        dates = st.datetimes(datetime(2019, 1, 1), datetime(2029, 12, 31))
        return weighted(
            (4, st.sampled_from(self.strings)), (3, self.integer().map(str)), (2, _text()),
            (1, dates.map(lambda d: d.strftime("%Y-%m-%dT%H:%M"))), (1, dates.map(lambda d: d.strftime("%Y-%m-%d"))),
            (1, st.floats().map(str)), (1, st.sampled_from(["", " ", "x" * 3000, "9" * 400])),
        )

    def field_value(self, name: str) -> st.SearchStrategy[str]:
        """A value a real page offered for this field (a valid choice, a hidden id), or any."""
        seen = self.seen.get(name) or self.seen.get(re.sub(r"-\d+-", "-0-", name))
        return weighted((3, st.sampled_from(seen)), (2, self.value())) if seen else self.value()

    def valid_value(self, name: str) -> st.SearchStrategy[str | None]:
        """What a real page would send for this field (None: a field pages leave out)."""
        seen = self.seen.get(name) or self.seen.get(re.sub(r"-\d+-", "-0-", name))
        return st.sampled_from(seen) if seen else weighted((1, st.none()), (1, self.value()))

    def json_value(self) -> st.SearchStrategy[Any]:
        leaves = st.one_of(
            st.none(), st.booleans(), self.integer(), st.floats(), st.sampled_from(self.strings), _text(20),
        )
        return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text(5), inner, max_size=3),
                            max_leaves=6)


def make_pools(app: Flask, world: World, connection: Connection) -> Pools:
    ids: dict[str, list[int]] = {}
    for table in Base.metadata.sorted_tables:
        if "id" in table.c:
            ids[table.name] = list(connection.scalars(select(table.c.id).order_by(table.c.id)))
    names, choices = form_vocabulary()
    tokens = list(world.tokens.values())
    codes = list(world.codes.values())
    strings = [
        *tokens, *(t[:-1] for t in tokens), *codes, *(f"{c[:5].lower()}-{c[5:]}" for c in codes),
        *(p.subject_code for p in (world.patient, world.other, world.completed, world.withdrawn)),
        *world.emails.values(), "Admin@H.example ", "patient.fz@patients.example", STAFF_PASSWORD,
        "another-long-passphrase-42", "short", *QLQ.score_codes, "pf2", *(item.id for item in QLQ.items), "q0", "q31",
        "en", "ar", "zh_Hans", "es", "zh-CN", "ES_mx", "xx", "EN", *FORMATS, *choices,
        "Europe/Berlin", "Asia/Shanghai", "UTC", "Not/AZone", "../../etc/passwd",
        "2026-02-30T25:61", "0001-01-01T00:00", "9999-12-31T23:59", "2026-01-01", "0000-00-00",
        "on", "y", "true", "1", "0", "-1", "next", "back", "review", "csv", "html", "score", "change",
        "/staff/", "/q/", "//evil.example/", "https://evil.example/", "javascript:alert(1)",
        "<script>alert(1)</script>", "' OR 1=1 --", "\x00", "\u202e", "\U0001f4a5", "a" * 300,
        "+4930123456", "+49 30 123", "nurse", "analyst", "admin", "tablet", "interview",
    ]
    shapes = view_forms(app)
    crawled, seen = crawl_forms(app, world)
    for endpoint, found in crawled.items():
        shapes[endpoint] = shapes.get(endpoint, set()) | found
    return Pools({name: found for name, found in ids.items() if found}, strings, names, {k: sorted(v) for k, v in shapes.items()},
                 {k: sorted(v) for k, v in seen.items() if v})


def url_value(pools: Pools, converter: str) -> st.SearchStrategy[str]:
    if converter == "int":
        return weighted((6, pools.integer().map(str)), (1, _text(6).map(lambda s: quote(s, safe="") or "x")))
    if converter == "path":
        files = sorted(str(p.relative_to(STATIC)) for p in STATIC.rglob("*") if p.is_file())
        return weighted(
            (3, st.sampled_from([*files, "../pro_app/__init__.py", "css/../js/questionnaire.js", "%2e%2e/x"])),
            (1, _text(30).map(lambda s: quote(s, safe="/") or "x")),
        )
    # A plain string: anything without a slash, including the real secrets.
    return weighted((4, st.sampled_from(pools.strings)), (2, _text(120)), (1, st.just("t" * 5000))).map(
        lambda s: quote(s, safe="") or "x"
    )


# --------------------------------------------------------------------------- requests


@dataclass
class FuzzRequest:
    method: str
    path: str
    query: dict[str, str]
    body: str  # none | form | json | raw | oversized
    form: list[tuple[str, str]] = field(default_factory=list)
    payload: Any = None
    raw: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    https: bool = False

    def describe(self) -> str:
        body = {"form": self.form, "json": self.payload, "raw": (self.content_type, self.raw[:80]),
                "oversized": "(oversized form)", "none": None}[self.body]
        return f"{self.method} {self.path} query={self.query} {self.body}={body!r:.600} headers={self.headers} https={self.https}"


@st.composite
def fuzz_requests(draw: st.DrawFn, targets: list[Target], pools: Pools) -> FuzzRequest:
    target = draw(st.sampled_from(targets))
    method = draw(weighted((9, st.just(target.method)), (1, st.sampled_from(ODD_METHODS))))
    fills = {name: draw(url_value(pools, converter)) for converter, name in target.variables}
    path = _VARIABLE.sub(lambda m: fills[m.group(2)], target.rule)
    shape = pools.shapes.get(target.endpoint) or pools.fields
    query = draw(st.dictionaries(st.sampled_from(shape) | st.sampled_from(pools.fields), pools.value(), max_size=2))
    body = draw(weighted((1, st.just("none")), (6, st.just("form")), (2, st.just("json")), (1, st.just("raw")),
                         (1, st.just("oversized"))))
    request = FuzzRequest(method, path, query, body, https=draw(st.booleans()))
    if body == "form":
        # The fields this endpoint reads with values real pages offer, then a few broken:
        # mostly-valid input is what gets past the first check to the code behind it.
        form = {name: draw(pools.valid_value(name)) for name in shape}
        for name in draw(st.lists(st.sampled_from(shape), max_size=2)):
            form[name] = draw(pools.value())
        for name in draw(st.lists(st.sampled_from(shape), max_size=1)):
            form.pop(name, None)
        request.form = [(name, value) for name, value in form.items() if value is not None]
        request.form += draw(st.lists(st.tuples(st.sampled_from(pools.fields) | _text(12), pools.value()), max_size=2))
    elif body == "json":
        keys = st.sampled_from(shape) | _text(8)
        request.payload = draw(weighted(
            (4, st.dictionaries(keys, pools.json_value(), max_size=5)),
            (3, st.fixed_dictionaries({}, optional={name: pools.integer() | pools.field_value(name) for name in shape})),
            (1, pools.json_value()),
        ))
    elif body == "raw":
        request.raw = draw(st.binary(max_size=300))
        request.content_type = draw(st.sampled_from([
            "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "multipart/form-data",
            "application/json", "text/plain", "application/json; charset=utf-16",
        ]))
    accept = draw(st.sampled_from([None, "application/json", "text/html", "*/*", "image/png"]))
    language = draw(st.sampled_from([None, "ar", "zh-CN,zh;q=0.9", "es-MX", "xx", "*", "en;q=bad"])
                    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12))
    if accept:
        request.headers["Accept"] = accept
    if language:
        request.headers["Accept-Language"] = language
    return request


# --------------------------------------------------------------------------- data snapshots

BOOKKEEPING_TABLES = {"rate_limit_buckets", "audit_chain_head", "alembic_version"}
#: Sign-in counters change on every attempt, refused or not (that is their purpose); so does
#: the last accepted second-factor time step (replay protection).
BOOKKEEPING_COLUMNS = {"staff_users": {"failed_logins", "locked_until", "last_login_at", "second_factor_last_step"}}
#: A not yet confirmed second-factor secret is set-up state of one's own account: the set-up
#: page keeps it while a wrong code is refused, so the user can try again with the same scan.
BOOKKEEPING_ACTIONS = {"staff_user.login", "staff_user.lock", "staff_user.second_factor_setup_started"}

Owner = tuple[str, int]  # ("participant", id) | ("staff", id) | ("config", 0) | ("outbox", 0) | ("audit", id)


@dataclass
class Snapshot:
    rows: dict[Owner, list[str]]
    participant_site: dict[int, int]
    assessment_participant: dict[int, int]
    alert_assessment: dict[int, int]
    staff: dict[int, tuple[str, bool, int]]  # id -> role, active, session version
    staff_sites: dict[int, set[int]]
    links: dict[int, tuple[int, bool]]  # id -> participant, usable
    audit: dict[int, tuple[str, str, str | None]]  # id -> actor, entity type, entity id


def take_snapshot(connection: Connection) -> Snapshot:
    tables = {t.name: t for t in Base.metadata.sorted_tables}
    now = datetime.now(timezone.utc)
    result = Snapshot({}, {}, {}, {}, {}, {}, {}, {})
    for row in connection.execute(select(tables["participants"].c.id, tables["participants"].c.site_id)):
        result.participant_site[row.id] = row.site_id
    for row in connection.execute(select(tables["assessments"].c.id, tables["assessments"].c.participant_id)):
        result.assessment_participant[row.id] = row.participant_id
    for row in connection.execute(select(tables["alerts"].c.id, tables["alerts"].c.assessment_id)):
        result.alert_assessment[row.id] = row.assessment_id
    users = tables["staff_users"].c
    for row in connection.execute(select(users.id, users.role, users.is_active, users.session_version)):
        result.staff[row.id] = (row.role, bool(row.is_active), row.session_version)
        result.staff_sites.setdefault(row.id, set())
    for row in connection.execute(select(tables["staff_sites"])):
        result.staff_sites.setdefault(row.staff_user_id, set()).add(row.site_id)
    links = tables["access_links"].c
    for row in connection.execute(select(links.id, links.participant_id, links.revoked_at, links.expires_at)):
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=timezone.utc)
        result.links[row.id] = (row.participant_id, row.revoked_at is None and expires > now)
    for name, table in tables.items():
        if name in BOOKKEEPING_TABLES:
            continue
        columns = [c for c in table.c if c.name not in BOOKKEEPING_COLUMNS.get(name, set())]
        for row in connection.execute(select(*columns)):
            values = dict(row._mapping)
            if name == "staff_users" and values.get("second_factor_enabled_at") is None and "second_factor_secret" in values:
                values["second_factor_secret"] = "(pending set-up)" if values["second_factor_secret"] else None
            if name == "audit_events":
                if values["action"] in BOOKKEEPING_ACTIONS:
                    continue
                result.audit[values["id"]] = (values["actor"], values["entity_type"], values["entity_id"])
            owner = _owner(name, values, result)
            result.rows.setdefault(owner, []).append(f"{name}{tuple(values.values())!r}")
    for rows in result.rows.values():
        rows.sort()
    return result


def _owner(table: str, values: Any, snapshot: Snapshot) -> Owner:
    if table == "audit_events":
        return ("audit", values["id"])
    if table == "participants":
        return ("participant", values["id"])
    if table == "staff_users":
        return ("staff", values["id"])
    if "participant_id" in values:
        return ("participant", values["participant_id"])
    if "assessment_id" in values:
        return ("participant", snapshot.assessment_participant.get(values["assessment_id"], -1))
    if "staff_user_id" in values:
        return ("staff", values["staff_user_id"])
    if table == "outbox_messages":
        return ("outbox", 0)
    return ("config", 0)  # studies, sites, arms, schedules, alert rules, instrument texts, anything new


@dataclass
class Caller:
    """Who the request's session says the caller is, checked against the database."""

    staff_id: int | None = None
    role: str | None = None
    sites: set[int] = field(default_factory=set)
    participant_id: int | None = None

    @property
    def actors(self) -> set[str]:
        found = set()
        if self.staff_id is not None:
            found.add(f"staff:{self.staff_id}")
        if self.participant_id is not None:
            found.add(f"participant:{self.participant_id}")
        return found

    def __str__(self) -> str:
        return f"staff={self.staff_id}({self.role}, sites {sorted(self.sites)}) participant={self.participant_id}"


def caller_of(client: FlaskClient, snapshot: Snapshot) -> Caller:
    with client.session_transaction() as stored:
        data = dict(stored)
    caller = Caller()
    staff = data.get(STAFF_KEY)
    if isinstance(staff, dict) and staff.get("id") in snapshot.staff:
        role, active, version = snapshot.staff[staff["id"]]
        if active and version == staff.get("v"):
            caller.staff_id, caller.role, caller.sites = staff["id"], role, snapshot.staff_sites[staff["id"]]
    patient = data.get(PATIENT_KEY)
    if isinstance(patient, dict):
        if "link" in patient and snapshot.links.get(patient["link"], (None, False))[1]:
            caller.participant_id = snapshot.links[patient["link"]][0]
        elif patient.get("participant") in snapshot.participant_site:
            caller.participant_id = patient["participant"]
    return caller


def may_change(owner: Owner, caller: Caller, before: Snapshot, after: Snapshot) -> bool:
    kind, key = owner
    if caller.role == "admin":
        return True
    if kind == "participant":
        if key == caller.participant_id:
            return True
        sites = {s.participant_site.get(key) for s in (before, after)} - {None}
        return caller.role == "nurse" and bool(sites) and sites <= caller.sites
    if kind == "staff":
        return key == caller.staff_id
    if kind == "outbox":
        return caller.participant_id is not None or caller.role == "nurse"
    if kind == "audit":
        actor, entity_type, entity_id = after.audit.get(key) or before.audit[key]
        if actor in caller.actors:
            return True
        return may_change(_audit_subject(entity_type, entity_id, after), caller, before, after)
    return False


def _audit_subject(entity_type: str, entity_id: str | None, snapshot: Snapshot) -> Owner:
    number = int(entity_id) if entity_id and entity_id.isdigit() else -1
    if entity_type == "alert":
        entity_type, number = "assessment", snapshot.alert_assessment.get(number, -1)
    if entity_type == "assessment":
        return ("participant", snapshot.assessment_participant.get(number, -1))
    if entity_type == "participant":
        return ("participant", number)
    if entity_type == "staff_user":
        return ("staff", number)
    return ("config", 0)


def forbidden_changes(before: Snapshot, after: Snapshot, caller: Caller, refused: bool) -> list[str]:
    problems = []
    for owner in sorted(set(before.rows) | set(after.rows)):
        old, new = before.rows.get(owner, []), after.rows.get(owner, [])
        if old == new:
            continue
        if refused or not may_change(owner, caller, before, after):
            gone = sorted(set(old) - set(new))[:3]
            added = sorted(set(new) - set(old))[:3]
            problems.append(f"{owner}: removed/changed {gone} added/now {added}")
    return problems


# --------------------------------------------------------------------------- the harness


class Harness:
    """The app, the world and what every example starts from (the same for all examples)."""

    def __init__(self, app: Flask, connection: Connection, world: World, cookies: dict[str, str | None]) -> None:
        self.app, self.connection, self.world, self.cookies = app, connection, world, cookies
        self.pools = make_pools(app, world, connection)
        self.targets = inventory(app)
        with app.test_request_context():
            signed = generate_csrf()
            #: (signed token for forms and headers, raw value kept in the session)
            self.csrf: tuple[str, str] = (signed, session["csrf_token"])

    def __repr__(self) -> str:
        return f"Harness(world of study {self.world.study.code})"

    @contextmanager
    def example(self) -> Iterator[None]:
        """One hypothesis example: everything it does is rolled back afterwards."""
        savepoint = self.connection.begin_nested()
        try:
            yield
        finally:
            if savepoint.is_active:
                savepoint.rollback()

    def client(self, role: str, csrf: str) -> FlaskClient:
        self.app.config["WTF_CSRF_ENABLED"] = csrf != "off"
        client = self.app.test_client()
        cookie = self.cookies[role]
        if cookie is not None:
            client.set_cookie("session", cookie)
        if csrf == "valid":
            with client.session_transaction() as stored:
                stored["csrf_token"] = self.csrf[1]
        return client

    def send(self, client: FlaskClient, request: FuzzRequest, csrf: str, role: str) -> None:
        token = {"valid": self.csrf[0], "forged": "forged." + self.csrf[0][::-1]}.get(csrf)
        headers = dict(request.headers)
        kwargs: dict[str, Any] = {}
        if token:
            headers["X-CSRFToken"] = token
        if request.body == "form":
            kwargs["data"] = MultiDict(([("csrf_token", token)] if token else []) + request.form)
        elif request.body == "oversized":
            pad = "x" * (self.app.config["MAX_CONTENT_LENGTH"] + 10)
            kwargs["data"] = {"csrf_token": token or "", "value": "1", "pad": pad}
        elif request.body == "json":
            kwargs["data"] = json.dumps(request.payload)
            kwargs["content_type"] = "application/json"
        elif request.body == "raw":
            kwargs["data"] = request.raw
            kwargs["content_type"] = request.content_type
        before = take_snapshot(self.connection)
        caller = caller_of(client, before)
        response = client.open(
            request.path, method=request.method, query_string=request.query, headers=headers,
            base_url="https://localhost" if request.https else "http://localhost", **kwargs,
        )
        after = take_snapshot(self.connection)
        where = f"[{role}, csrf {csrf}, caller {caller}] {request.describe()} -> {response.status_code}"
        event(f"{request.method} {response.status_code}")  # --hypothesis-show-statistics
        assert response.status_code < 500, where
        problems = response_problems(response, request.path, https=request.https)
        assert problems == [], f"{where}: {problems}"
        changes = forbidden_changes(before, after, caller, refused=response.status_code >= 400)
        assert changes == [], f"{where} changed data the caller may not change: {changes}"


@pytest.fixture
def harness(app: Flask, connection: Connection, db_session: Any) -> Harness:
    world = build_world(db_session, "F")
    db_session.commit()
    cookies: dict[str, str | None] = {"anonymous": None}
    for role in ROLES[1:]:
        client = signed_in(app, world, role)
        cookie = client.get_cookie("session")
        assert cookie is not None
        cookies[role] = cookie.value
    return Harness(app, connection, world, cookies)


def test_inventory_covers_every_route(app: Flask) -> None:
    """Every rule x method of the url map is a fuzz target, whatever routes exist."""
    served = {(rule.endpoint, method) for rule in app.url_map.iter_rules()
              for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    assert {(t.endpoint, t.method) for t in inventory(app)} == served
    assert len(served) >= 38


@FUZZ
@given(data=st.data())
def test_no_5xx_and_no_forbidden_change(harness: Harness, data: st.DataObject) -> None:
    """The caller's role is drawn per example, so one world serves every role."""
    role = data.draw(st.sampled_from(ROLES), label="role")
    csrf = data.draw(st.sampled_from(["off", "valid", "valid", "missing", "forged"]), label="csrf")
    steps = data.draw(st.lists(fuzz_requests(harness.targets, harness.pools), min_size=1, max_size=3), label="requests")
    with harness.example():
        client = harness.client(role, csrf)
        for step in steps:
            harness.send(client, step, csrf, role)


def test_the_change_check_catches_forbidden_changes(harness: Harness) -> None:
    """The data check itself: a nurse of site A changing a site B participant is caught,
    the same change by an administrator is not, and nothing may change on a refused request."""
    world = harness.world
    with harness.example():
        before = take_snapshot(harness.connection)
        participants = Base.metadata.tables["participants"]
        harness.connection.execute(
            participants.update().where(participants.c.id == world.other.id).values(status="withdrawn"))
        after = take_snapshot(harness.connection)
    nurse = Caller(world.staff["nurse"].id, "nurse", {world.study.sites[0].id})
    admin = Caller(world.staff["admin"].id, "admin")
    assert forbidden_changes(before, after, nurse, refused=False)
    assert not forbidden_changes(before, after, admin, refused=False)
    assert forbidden_changes(before, after, admin, refused=True)
    own_nurse = Caller(world.staff["nurse_b"].id, "nurse", {world.study.sites[1].id})
    assert not forbidden_changes(before, after, own_nurse, refused=False)


def test_inputs_that_once_crashed_are_refused(harness: Harness) -> None:
    """Found by the property test: ids beyond the database's integers, and JSON bodies that
    are not an object of plain values, reached the database driver or the form code."""
    world = harness.world
    cases: list[tuple[str, str, Any]] = [
        ("admin", f"/staff/participants/{2**31}", None), ("admin", f"/staff/participants/{10**30}", None),
        ("admin", f"/staff/admin/studies/{2**63}/alerts", None), ("nurse", f"/staff/participants/{2**64}/withdraw", {}),
        ("patient", f"/q/{2**40}", None),
    ]
    cases += [(role, path, body) for role in ("anonymous", "patient") for path in ("/q/1", "/q/answer", "/q/start")
              for body in (False, "text", [1, 2], {"value": [[]]}, {"assessment": {"id": 1}}, None)]
    with harness.example():
        for csrf, (role, path, body) in ((c, case) for c in ("off", "missing", "valid") for case in cases):
            client = harness.client(role, csrf)
            token = harness.csrf[0] if csrf == "valid" else None
            headers = {"X-CSRFToken": token} if token else {}
            if body is None and path.startswith("/q/") and role != "admin":
                response = client.post(path, data="{not json", content_type="application/json", headers=headers)
            elif body is None:
                response = client.get(path)
            else:
                response = client.post(path, json=body, headers=headers)
            assert response.status_code in (400, 401, 404), (csrf, role, path, body, response.status_code)
    assert world.patient.id
