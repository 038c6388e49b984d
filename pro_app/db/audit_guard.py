"""The audit guard: a transaction that changes audited data must also append an audit event.

Every change to clinical, participant, schedule, alert-rule, staff or instrument-text data is
meant to go through :func:`pro_app.services.audit.record_event` in the same transaction. The
guard checks that promise mechanically instead of by reading code: SQLAlchemy session events
note which tables a transaction inserted into, updated or deleted from (unit-of-work flushes
and bulk ``insert()``/``update()``/``delete()`` statements alike), and before the transaction
commits the guard asks whether it also appended an :class:`~pro_app.db.models.AuditEvent`.

The check is per transaction, not per row: it proves that no committed write path is silent,
while the tests of each service assert *which* event it writes (actor, action, entity,
before/after). Raw SQL text sent through a session is not inspected; the application sends
none for writes.

Modes (``AUDIT_GUARD`` setting, or :func:`session_info` for a session factory):

``raise``
    An unaudited commit fails with :class:`UnauditedWrite`. The test suite runs in this mode,
    so every write path any test exercises is checked.
``log``
    The commit goes ahead and a warning names the tables (never values). The production
    default: a forgotten audit call must reach the operators, but must not turn a patient's
    saved answer or a nurse's enrolment into an error page.
``off``
    No checking (sessions created without the setting, e.g. by migrations and benchmarks).

Which tables are audited, and why the others are exempt, is stated once, below. A table that
is in neither list counts as audited, and a test fails until it is classified.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction

from pro_app.db.models import AuditEvent

logger = logging.getLogger(__name__)

#: Key in ``Session.info`` holding the guard mode of that session.
INFO_KEY = "pro_app_audit_guard"
_STATE_KEY = "pro_app_audit_guard_state"


class GuardMode(StrEnum):
    OFF = "off"
    LOG = "log"
    RAISE = "raise"


#: Tables of trial data: every insert, update or delete needs an audit event in its transaction.
AUDITED_TABLES: Mapping[str, str] = {
    "studies": "study set-up and its settings (worsening-alert and reminder plans)",
    "sites": "study set-up",
    "arms": "study set-up (dose groups)",
    "schedule_templates": "schedules",
    "timepoints": "schedules",
    "study_alert_rules": "alert rules",
    "participants": "enrolment, contact details, status and withdrawal",
    "anchor_events": "protocol dates (anchors) and re-anchoring",
    "access_links": "issuing and revoking patients' personal links",
    "assessments": "questionnaire state, mode, wording shown, submission",
    "answers": "clinical data: the patient's answers and staff corrections",
    "scale_scores": "clinical data: scores",
    "assessment_results": "clinical data: a scored assessment's answers and scores in one row, written with the scores",
    "alerts": "clinical data: alerts and their acknowledgement",
    "staff_users": "staff accounts: creation, role, activation, passwords, sessions ended",
    "staff_sites": "which sites a staff account may see",
    "instrument_texts": "licensed instrument wording",
}

#: Tables written without an audit event, each with the reason.
EXEMPT_TABLES: Mapping[str, str] = {
    "audit_events": "the audit trail itself",
    "audit_chain_head": "the chain's head pointer, moved by every appended event",
    "rate_limit_buckets": "throttling counters of sign-in and manual-code attempts; no trial data, written on every guess",
    "outbox_messages": "delivery bookkeeping of staff notifications; the alert that caused each one is audited",
    "reminders": "delivery bookkeeping of reminder messages (planned, attempts, sent, cancelled); the personal "
                 "link a message carries is audited when it is issued",
    "alembic_version": "schema version, written by migrations only",
    "request_receipts": "idempotency bookkeeping of patients' requests (which request id did which write); the "
                        "answer or submission a receipt describes is audited in the same transaction",
}

#: Columns of audited tables that are session bookkeeping: an update touching only these
#: needs no event.
EXEMPT_COLUMNS: Mapping[str, Mapping[str, str]] = {
    "staff_users": {
        "failed_logins": "counted on each failed sign-in; the lockout it leads to is audited",
    },
    "access_links": {
        "last_used_at": "session bookkeeping of a patient's link",
    },
}


class UnauditedWrite(RuntimeError):
    """A transaction changed audited data without appending an audit event."""


def session_info(mode: GuardMode | str) -> dict[str, str]:
    """``info`` for :func:`~pro_app.db.engine.make_session_factory`: sessions guarded in ``mode``."""
    return {INFO_KEY: parse_mode(mode).value}


def parse_mode(value: GuardMode | str | None) -> GuardMode:
    if value is None or value == "":
        return GuardMode.OFF
    try:
        return GuardMode(str(value).strip().lower())
    except ValueError:
        raise ValueError(
            f"AUDIT_GUARD must be one of {', '.join(m.value for m in GuardMode)}, got {value!r}"
        ) from None


def _mode(session: Session) -> GuardMode:
    return GuardMode(session.info.get(INFO_KEY, GuardMode.OFF.value))


@dataclass
class _TransactionWrites:
    """What the current (outermost) transaction of one session has written so far.

    A SAVEPOINT that is rolled back takes its writes and events with it, so the state at its
    start is kept (by transaction) and restored if it is rolled back.
    """

    tables: set[str] = field(default_factory=set)
    audited: bool = False
    savepoints: dict[int, tuple[frozenset[str], bool]] = field(default_factory=dict)


def _state(session: Session) -> _TransactionWrites:
    state = session.info.get(_STATE_KEY)
    if state is None:
        state = session.info[_STATE_KEY] = _TransactionWrites()
    return state


def _needs_audit(table: str) -> bool:
    return table not in EXEMPT_TABLES


def _changed_tables(target: Any) -> set[str]:
    """Tables an updated object really changes, ignoring bookkeeping-only updates."""
    state = inspect(target)
    changed = {attr.key for attr in state.attrs if attr.history.has_changes()}
    if not changed:
        return set()
    tables = {table.name for table in state.mapper.tables}
    return {
        name for name in tables
        if not changed <= set(EXEMPT_COLUMNS.get(name, {}))
    }


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _flush_context: UOWTransaction) -> None:
    # after_flush still sees the pre-flush new/dirty/deleted sets and attribute history.
    if _mode(session) is GuardMode.OFF:
        return
    state = _state(session)
    for target in session.new:
        if isinstance(target, AuditEvent):
            state.audited = True
        state.tables.update(t.name for t in inspect(target).mapper.tables)
    for target in session.deleted:
        state.tables.update(t.name for t in inspect(target).mapper.tables)
    for target in session.dirty:
        state.tables.update(_changed_tables(target))


def _dml_table(statement: Any) -> str | None:
    table = getattr(statement, "table", None)
    if table is None:  # select(Entity).from_statement(update(...))
        table = getattr(getattr(statement, "element", None), "table", None)
    return getattr(table, "name", None)


@event.listens_for(Session, "do_orm_execute")
def _note_statement(execute_state: ORMExecuteState) -> Any:
    """Bulk statements bypass the flush: note the table they write, when they write rows."""
    session = execute_state.session
    if _mode(session) is GuardMode.OFF or not (
        execute_state.is_insert or execute_state.is_update or execute_state.is_delete
    ):
        return None
    table = _dml_table(execute_state.statement) or "(unknown table)"
    if execute_state.is_insert or table == AuditEvent.__tablename__ or not _needs_audit(table):
        note_write(session, table, insert=execute_state.is_insert)
        return None
    # UPDATE and DELETE report reliably how many rows they touched: one that matched nothing
    # (revoking links when there are none) changed nothing and needs no event.
    result = execute_state.invoke_statement()
    note_write(session, table, insert=False, rows=getattr(result, "rowcount", 1))
    return result


def note_write(session: Session, table: str, *, insert: bool, rows: int = 1) -> None:
    """Note a statement's write to ``table`` in the session's transaction: the statements sent
    through the session are noted by a hook, those run on the driver's cursor
    (:class:`pro_app.db.direct.DirectWrite`) call this. ``rows``: how many an UPDATE or DELETE
    touched (none: nothing changed, no event needed)."""
    if _mode(session) is GuardMode.OFF:
        return
    if table == AuditEvent.__tablename__ and insert:
        _state(session).audited = True
    elif _needs_audit(table) and (insert or rows):
        _state(session).tables.add(table)


def unaudited_tables(session: Session) -> set[str]:
    """Audited tables the session's current transaction wrote, if it appended no event."""
    state = session.info.get(_STATE_KEY)
    if state is None or state.audited:
        return set()
    return {table for table in state.tables if _needs_audit(table)}


@event.listens_for(Session, "before_commit")
def _check_before_commit(session: Session) -> None:
    mode = _mode(session)
    if mode is GuardMode.OFF or session.in_nested_transaction():
        return
    session.flush()  # commit flushes after this event: count what is still pending
    missing = unaudited_tables(session)
    if not missing:
        return
    tables = ", ".join(sorted(missing))
    if mode is GuardMode.RAISE:
        raise UnauditedWrite(f"a transaction changed {tables} without an audit event")
    logger.warning("audit guard: a transaction changed %s without an audit event", tables)


@event.listens_for(Session, "after_transaction_create")
def _note_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested and _mode(session) is not GuardMode.OFF:
        state = _state(session)
        state.savepoints[id(transaction)] = (frozenset(state.tables), state.audited)


@event.listens_for(Session, "after_soft_rollback")
def _undo_savepoint(session: Session, previous_transaction: SessionTransaction) -> None:
    state = session.info.get(_STATE_KEY)
    if state is None or not previous_transaction.nested:
        return
    snapshot = state.savepoints.pop(id(previous_transaction), None)
    if snapshot is not None:
        tables, state.audited = snapshot
        state.tables = set(tables)


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_STATE_KEY, None)
