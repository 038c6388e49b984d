"""The audit trail: every change to clinical, participant, schedule, user or instrument data
goes through :func:`record_event`.

Each event stores a SHA-256 hash over its own content and the previous event's hash, so an
edited, deleted or re-ordered event breaks the chain and :func:`verify_chain` names it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, bindparam, event, insert, select, text
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session, SessionTransaction

from pro_app.db.direct import DirectRead, DirectWrite
from pro_app.db.models import AuditChainHead, AuditEvent
from pro_app.db.models.base import table_of
from pro_app.db.types import utcnow

GENESIS_HASH = "0" * 64
_HEAD_ID = 1


def _canonical(value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _hashed_fields(
    occurred_at: datetime,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str | None,
    before: str | None,
    after: str | None,
    reason: str | None,
) -> str:
    """The JSON of an event's fields between its sequence number and its previous hash, as
    they stand in its hashed content (without the list's brackets)."""
    return json.dumps(
        [occurred_at.isoformat(timespec="microseconds"), actor, action, entity_type, entity_id, before, after, reason],
        ensure_ascii=False,
        separators=(",", ":"),
    )[1:-1]


def _hashed_content(seq: int, fields: str, prev_hash: str) -> str:
    """What an event's hash covers: the JSON list ``[seq, occurred_at, actor, action,
    entity_type, entity_id, before, after, reason, prev_hash]`` (compact, not ASCII-escaped).
    ``seq`` is a JSON number and ``prev_hash`` a string of hex digits, so the list is ``fields``
    between the two written out as they are: :func:`append_at_head_sql` builds the same text in SQL."""
    return f'[{seq},{fields},"{prev_hash}"]'


def _event_hash(*, seq: int, prev_hash: str, **fields: Any) -> str:
    """The hash of an event: ``fields`` are its hashed fields by name (those of
    :func:`_hashed_fields`)."""
    return hashlib.sha256(_hashed_content(seq, _hashed_fields(**fields), prev_hash).encode("utf-8")).hexdigest()


# Appending is on every audited write (each answer a patient saves), so its two statements
# are built once: Core statements on the tables, with the ORM's unit of work left out. The
# insert moves the head: a database trigger (migration 0009) does, in the same statement, and
# refuses an event whose sequence number and previous hash do not extend the head.
_HEAD = table_of(AuditChainHead)
_READ_HEAD = select(_HEAD.c.last_seq, _HEAD.c.last_hash).where(_HEAD.c.id == _HEAD_ID).with_for_update()
#: SQLite: read by an audited write's transaction that has not read the head with a statement
#: of its own (the answer save has): run on the driver's cursor.
_HEAD_READ = DirectRead(_READ_HEAD)
#: The head's row and columns, for a statement that reads the head with other rows (see the
#: ``head`` argument of :func:`record_event`).
CHAIN_HEAD = _HEAD
CHAIN_HEAD_ID = _HEAD_ID
_EVENTS = table_of(AuditEvent)
_APPEND = DirectWrite(insert(_EVENTS))  # on the driver's cursor: see pro_app.db.direct
_HASHED_FIELDS = ("occurred_at", "actor", "action", "entity_type", "entity_id", "before", "after", "reason")


def append_at_head_sql(source: str | None = None) -> str:
    """PostgreSQL: the SQL appending an event at the chain's head in one statement, which
    locks the head's row, numbers the event after it and hashes it in SQL (``sha256``,
    PostgreSQL 11 and later) over the content :func:`_hashed_content` describes; its bind
    parameters are :func:`event_parameters`' (``fields`` made in Python), typed by
    :data:`EVENT_BIND_PARAMETERS`. It returns the event's ``seq`` and ``hash``. Reading the head
    first would cost a round trip more with the lock already held, and every audited write of
    every session waits for that lock. The trigger of migration 0009 moves the head, as for
    any event.

    ``source``: the name of a ``WITH`` query of the same statement (a write's ``RETURNING``);
    the event is appended for each row it gives, so not at all when it gives none."""
    rows = f"{source} CROSS JOIN " if source else ""
    return (
        f"INSERT INTO {_EVENTS.name} (seq, {', '.join(_HASHED_FIELDS)}, prev_hash, hash) "
        f"SELECT head.last_seq + 1, {', '.join(':' + name for name in _HASHED_FIELDS)}, head.last_hash, "
        "encode(sha256(convert_to("
        "'[' || (head.last_seq + 1) || ',' || :fields || ',\"' || head.last_hash || '\"]', 'UTF8')), 'hex') "
        f"FROM {rows}{_HEAD.name} AS head WHERE head.id = {_HEAD_ID} FOR UPDATE OF head "
        "RETURNING seq, hash"
    )


#: The typed bind parameters of :func:`append_at_head_sql`.
EVENT_BIND_PARAMETERS = (
    *(bindparam(name, type_=_EVENTS.c[name].type) for name in _HASHED_FIELDS),
    bindparam("fields", type_=Text()),
)
_APPEND_AT_HEAD = DirectWrite(
    text(append_at_head_sql()).bindparams(*EVENT_BIND_PARAMETERS), table=_EVENTS.name, insert=True, returns_rows=True,
)
#: ``Session.info`` key of the head this transaction's last event made: the head's row stays
#: this transaction's until it ends (locked on PostgreSQL, the whole database on SQLite), so a
#: transaction appending several events (a submission: its scores, alerts and notifications)
#: reads the head once. Forgotten when the transaction ends and when any savepoint rolls back.
_HEAD_MADE = "pro_app_audit_head_made"


@event.listens_for(Session, "after_soft_rollback")
def _forget_head_after_rollback(session: Session, _previous: SessionTransaction) -> None:
    session.info.pop(_HEAD_MADE, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_head_after_transaction(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_HEAD_MADE, None)


def record_event(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: object = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    reason: str | None = None,
    head: tuple[int, str] | None = None,
) -> int:
    """Append one event to the chain (written, not committed: the caller owns the
    transaction) and return its sequence number.

    ``actor`` names who acted: ``staff:<id>``, ``participant:<id>``, ``cli`` or ``system``.
    The chain's head row is read with a row lock (PostgreSQL; SQLite's writer holds the whole
    database), so concurrent transactions extend the chain one after another; inserting the
    event moves the head (a trigger). On PostgreSQL the head is read, locked and extended by
    the event's insert itself (:func:`append_at_head_sql`). ``head`` is the head's (last_seq,
    last_hash) when the caller read it already, inside this transaction and holding SQLite's
    write lock, with no event appended since: the statement reading it is spared, as it is for
    the second and later events of a transaction. Were it stale, the database would refuse the
    event.
    """
    session.flush()  # pending ORM changes reach the database before the event describing them
    if head is None:
        head = session.info.get(_HEAD_MADE)
    connection = session.connection()
    parameters = event_parameters(actor=actor, action=action, entity_type=entity_type, entity_id=entity_id,
                                  before=before, after=after, reason=reason)
    if head is None and connection.dialect.name == "postgresql":  # the head read by the insert
        appended = _APPEND_AT_HEAD.execute(session, parameters, connection=connection).first()
        if appended is None:
            raise NoResultFound("the audit chain has no head row (the migrations make it)")
        seq, digest = appended
    else:
        if head is None:
            read = _HEAD_READ.one(connection, {})  # made by the migrations, never removed
            head = (read.last_seq, read.last_hash)
        last_seq, last_hash = head
        seq = last_seq + 1
        hashed = parameters.pop("fields")
        digest = hashlib.sha256(_hashed_content(seq, hashed, last_hash).encode("utf-8")).hexdigest()
        _APPEND.execute(session, {**parameters, "seq": seq, "prev_hash": last_hash, "hash": digest},
                        connection=connection)
    note_appended(session, seq, digest)
    return int(seq)


def event_parameters(
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: object = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The bind parameters of :func:`append_at_head_sql` for one event (arguments as for
    :func:`record_event`). The time is taken now, before the head's lock is waited for: when
    two transactions append at once, ``seq`` orders the chain, and their times may be a moment
    out of that order."""
    fields: dict[str, Any] = {
        "occurred_at": utcnow(),
        "actor": actor,
        "action": action,
        "entity_type": entity_type,
        "entity_id": None if entity_id is None else str(entity_id),
        "before": _canonical(before),
        "after": _canonical(after),
        "reason": reason,
    }
    fields["fields"] = _hashed_fields(*(fields[name] for name in _HASHED_FIELDS))
    return fields


def note_appended(session: Session, seq: int, digest: str) -> None:
    """Record that this transaction's last event, appended by a statement of the caller's
    (:func:`append_at_head_sql`), made the head ``(seq, digest)``: later events of the
    transaction extend it without reading it."""
    session.info[_HEAD_MADE] = (seq, digest)


@dataclass(frozen=True)
class ChainBreak:
    """The first event at which the chain no longer verifies, and why."""

    seq: int
    reason: str


def _events_in_order(session: Session, batch: int = 1000) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify_chain(session: Session) -> tuple[int, ChainBreak | None]:
    """Walk the whole chain; return how many events verified and the first break, if any."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for event in _events_in_order(session):
        if event.seq != expected_seq:
            return checked, ChainBreak(expected_seq, f"event {expected_seq} is missing")
        if event.prev_hash != expected_prev:
            return checked, ChainBreak(event.seq, "its previous-hash link does not match")
        recomputed = _event_hash(
            seq=event.seq,
            occurred_at=event.occurred_at,
            actor=event.actor,
            action=event.action,
            entity_type=event.entity_type,
            entity_id=event.entity_id,
            before=event.before,
            after=event.after,
            reason=event.reason,
            prev_hash=event.prev_hash,
        )
        if recomputed != event.hash:
            return checked, ChainBreak(event.seq, "its content does not match its hash")
        expected_prev = event.hash
        expected_seq += 1
        checked += 1
    head = session.get(AuditChainHead, _HEAD_ID)
    if head is not None and (head.last_seq != checked or head.last_hash != expected_prev):
        return checked, ChainBreak(
            checked + 1, f"the chain head records {head.last_seq} events but {checked} were found"
        )
    return checked, None
