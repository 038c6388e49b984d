"""A record's history, read from the audit trail: what happened to a participant or one of
their questionnaires, who did it, when, what changed and why.

Events are found by entity with the ``ix_audit_events_entity`` index:

- ``participant/<id>``: enrolment, personal links issued and revoked, protocol dates changed,
  withdrawal;
- ``assessment/<id>``: started, mode and hand-over, each answer saved, each correction,
  submission, scores stored or changed, alerts raised;
- ``alert/<id>``: acknowledgement, re-checks after a correction.

Newest first, like the rest of the staff pages: the latest change is what a nurse looks for.

The trail is shown to staff, so nothing secret or directly identifying is shown from an
event's before/after: values under keys that name contact details or secrets are masked, and
email addresses and phone numbers are masked wherever they appear in a value. (The services
keep such values out of the trail in the first place; this is the second line of defence.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pro_app.db.models import Alert, Assessment, AuditEvent, Participant, StaffUser
from pro_app.domain.instruments import NotRegisteredError, default_registry

MASK = "•••"
#: Keys whose values are never shown (contact details, secrets and their hashes).
SECRET_KEYS = frozenset({
    "email", "phone", "contact_email", "contact_phone", "recipient", "to", "token", "token_hash", "code_hash",
    "manual_code", "password", "password_hash", "secret", "second_factor_secret",
})
_EMAIL = re.compile(r"[^@\s\"',;<>]+@[^@\s\"',;<>]+\.[^@\s\"',;<>]+")
#: International numbers (the only format the enrolment form accepts); "+" after a digit is a
#: time-zone offset, not a phone number.
_PHONE = re.compile(r"(?<![\w+])\+[1-9][0-9 ()./-]{5,}[0-9]")
#: Ids are few per participant, but keep each IN list well below every database's limit.
_CHUNK = 500


@dataclass(frozen=True)
class Change:
    field: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class Actor:
    """Who acted: ``kind`` is staff, participant, system or other."""

    kind: str
    name: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    occurred_at: datetime
    actor: Actor
    action: str
    entity_type: str
    entity_id: str | None
    #: The questionnaire the event concerns (directly or through one of its alerts).
    assessment_id: int | None
    assessment_label: str | None
    #: The question an answer event concerns: its id and number.
    item: str | None
    item_number: int | None
    changes: tuple[Change, ...]
    reason: str | None


def participant_history(session: Session, participant: Participant) -> list[HistoryEntry]:
    """Every event about the participant, their questionnaires and their alerts, newest first."""
    assessments = list(session.scalars(select(Assessment).where(Assessment.participant_id == participant.id)))
    return _history(session, [("participant", [participant.id])], assessments)


def assessment_history(session: Session, assessment: Assessment) -> list[HistoryEntry]:
    """Every event about one questionnaire and its alerts, newest first."""
    return _history(session, [], [assessment])


def _history(
    session: Session, entities: list[tuple[str, Sequence[int]]], assessments: Sequence[Assessment]
) -> list[HistoryEntry]:
    by_id = {a.id: a for a in assessments}
    alert_of: dict[int, int] = {}
    for chunk in _chunks(list(by_id)):
        alert_of.update(session.execute(
            select(Alert.id, Alert.assessment_id).where(Alert.assessment_id.in_(chunk))
        ).tuples().all())
    entities = [*entities, ("assessment", list(by_id)), ("alert", list(alert_of))]
    events: dict[int, AuditEvent] = {}
    for entity_type, ids in entities:
        for chunk in _chunks(ids):
            for event in session.scalars(select(AuditEvent).where(
                AuditEvent.entity_type == entity_type, AuditEvent.entity_id.in_([str(i) for i in chunk])
            )):
                events[event.seq] = event
    actors = _actors(session, (e.actor for e in events.values()))
    entries = []
    for event in sorted(events.values(), key=lambda e: e.seq, reverse=True):
        assessment = _assessment_of(event, by_id, alert_of)
        entries.append(_entry(event, actors, assessment))
    return entries


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _assessment_of(event: AuditEvent, by_id: Mapping[int, Assessment], alert_of: Mapping[int, int]) -> Assessment | None:
    if event.entity_id is None or not event.entity_id.isdigit():
        return None
    entity_id = int(event.entity_id)
    if event.entity_type == "assessment":
        return by_id.get(entity_id)
    if event.entity_type == "alert" and entity_id in alert_of:
        return by_id.get(alert_of[entity_id])
    return None


def _actors(session: Session, actors: Iterable[str]) -> dict[str, Actor]:
    known: dict[str, Actor] = {}
    staff_ids = set()
    for actor in set(actors):
        kind, _, ident = actor.partition(":")
        if kind == "staff" and ident.isdigit():
            staff_ids.add(int(ident))
        elif kind == "participant":
            known[actor] = Actor("participant")
        elif actor == "system":
            known[actor] = Actor("system")
        else:
            known[actor] = Actor("other", name=actor)
    for user_id, email, role in session.execute(
        select(StaffUser.id, StaffUser.email, StaffUser.role).where(StaffUser.id.in_(staff_ids))
    ).tuples():
        known[f"staff:{user_id}"] = Actor("staff", name=email, role=role)
    return known


def _entry(event: AuditEvent, actors: Mapping[str, Actor], assessment: Assessment | None) -> HistoryEntry:
    before = _decode(event.before)
    after = _decode(event.after)
    item = after.get("item") or before.get("item")
    item_id = item if isinstance(item, str) else None
    return HistoryEntry(
        seq=event.seq,
        occurred_at=event.occurred_at,
        actor=actors.get(event.actor) or Actor("staff", name=event.actor),
        action=event.action,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        assessment_id=None if assessment is None else assessment.id,
        assessment_label=None if assessment is None else assessment.timepoint_label,
        item=item_id,
        item_number=_item_number(assessment, item_id),
        changes=tuple(_changes(before, after)),
        reason=event.reason,
    )


def _decode(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"value": raw}
    return value if isinstance(value, dict) else {"value": value}


def _item_number(assessment: Assessment | None, item_id: str | None) -> int | None:
    if assessment is None or item_id is None:
        return None
    try:
        return default_registry().get(assessment.instrument_code, assessment.instrument_version).item(item_id).number
    except (KeyError, NotRegisteredError):
        return None


def _changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> Iterable[Change]:
    keys = list(before) + [key for key in after if key not in before]
    for key in keys:
        if key == "item":
            continue
        old = _shown(key, before[key]) if key in before else None
        new = _shown(key, after[key]) if key in after else None
        yield Change(key, old, new)


def _shown(key: str, value: Any) -> str | None:
    """A value as text for the page, with contact details and secrets masked."""
    value = masked(key, value)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


def masked(key: str, value: Any) -> Any:
    """``value`` with secrets and contact details replaced by :data:`MASK` (recursively)."""
    if value is None or isinstance(value, bool):  # "has an email address: yes" reveals nothing
        return value
    if key.lower() in SECRET_KEYS:
        return MASK
    if isinstance(value, Mapping):
        return {k: masked(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(key, v) for v in value]
    if isinstance(value, str):
        return _PHONE.sub(MASK, _EMAIL.sub(MASK, value))
    return value
