"""The append-only audit trail, hash-chained so that any edit or deletion is detectable."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, mapped_column

from pro_app.db.models.base import Base
from pro_app.db.types import UTCDateTime, utcnow


class AuditEvent(Base):
    """Who did what to which record, when, the state before and after, and why.

    ``seq`` numbers events without gaps; ``hash`` covers the event's content and the
    previous event's hash. Rows are never updated or deleted (enforced in the ORM and by
    database triggers).
    """

    __tablename__ = "audit_events"
    #: A record's history reads its events by entity, in chain order.
    __table_args__ = (Index("ix_audit_events_entity", "entity_type", "entity_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(80))
    entity_type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str | None] = mapped_column(String(40))
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The single row holding the chain's last sequence number and hash.

    Appending locks this row (``SELECT ... FOR UPDATE`` on PostgreSQL), so concurrent
    transactions extend the chain one after another instead of forking it.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class AuditTrailIsAppendOnly(RuntimeError):
    """Raised when code tries to change or delete an audit event."""


@event.listens_for(AuditEvent, "before_update")
def _refuse_update(_mapper: object, _connection: object, target: AuditEvent) -> None:
    raise AuditTrailIsAppendOnly(f"audit event {target.seq} cannot be changed")


@event.listens_for(AuditEvent, "before_delete")
def _refuse_delete(_mapper: object, _connection: object, target: AuditEvent) -> None:
    raise AuditTrailIsAppendOnly(f"audit event {target.seq} cannot be deleted")


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes(execute_state: ORMExecuteState) -> None:
    """``update(AuditEvent)`` / ``delete(AuditEvent)`` skip the mapper events above: refuse
    them in the ORM too, before the database's triggers would."""
    if not (execute_state.is_update or execute_state.is_delete):
        return
    statement = execute_state.statement
    table = getattr(statement, "table", None)
    if table is None:  # select(Entity).from_statement(update(...))
        table = getattr(getattr(statement, "element", None), "table", None)
    if getattr(table, "name", None) == AuditEvent.__tablename__:
        raise AuditTrailIsAppendOnly("audit events are append-only: bulk changes are refused")
