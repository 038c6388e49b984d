"""audit history index; the trail refuses TRUNCATE too

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 02:00:00
"""

from __future__ import annotations

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# Row triggers (0001) refuse UPDATE and DELETE; PostgreSQL's TRUNCATE fires no row trigger, so
# a statement trigger refuses it with the same function. (SQLite has no TRUNCATE, and its
# "DELETE without WHERE" shortcut is not taken on a table with triggers.)
_PG_TRUNCATE_TRIGGER = """
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()
"""


def upgrade() -> None:
    # A record's history page reads its events by (entity_type, entity_id).
    op.create_index('ix_audit_events_entity', 'audit_events', ['entity_type', 'entity_id', 'seq'])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_TRUNCATE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
    op.drop_index('ix_audit_events_entity', table_name='audit_events')
