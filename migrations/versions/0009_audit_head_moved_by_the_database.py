"""the audit chain's head is moved by the database, by each appended event

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 04:20:00
"""

from __future__ import annotations

from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# Every audited write (each answer a patient saves) appended its event and then moved the
# chain's head with a statement of its own. A trigger now moves the head with the insert, in
# the same statement (a round trip less on PostgreSQL, where the head's row lock serialises
# every audited write until it commits), and refuses an event that does not extend the chain:
# its sequence number must follow the head's and its previous hash must be the head's hash.
_PG_FUNCTION = """
CREATE FUNCTION audit_events_extend_head() RETURNS trigger AS $$
BEGIN
    UPDATE audit_chain_head SET last_seq = NEW.seq, last_hash = NEW.hash
    WHERE id = 1 AND last_seq = NEW.seq - 1 AND last_hash = NEW.prev_hash;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'an audit event must extend the chain head';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""
_PG_TRIGGER = """
CREATE TRIGGER audit_events_extend_head AFTER INSERT ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_extend_head()
"""
_SQLITE_TRIGGER = """
CREATE TRIGGER audit_events_extend_head AFTER INSERT ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'an audit event must extend the chain head') WHERE NOT EXISTS (
        SELECT 1 FROM audit_chain_head WHERE id = 1 AND last_seq = NEW.seq - 1 AND last_hash = NEW.prev_hash
    );
    UPDATE audit_chain_head SET last_seq = NEW.seq, last_hash = NEW.hash WHERE id = 1;
END
"""
# The head row exists from now on (the trigger only moves it): on a database without one,
# it is made from the last event, or as the genesis of an empty trail.
_HEAD_FROM_LAST_EVENT = """
INSERT INTO audit_chain_head (id, last_seq, last_hash)
SELECT 1, seq, hash FROM audit_events
WHERE NOT EXISTS (SELECT 1 FROM audit_chain_head WHERE id = 1)
ORDER BY seq DESC LIMIT 1
"""
_GENESIS_HEAD = f"""
INSERT INTO audit_chain_head (id, last_seq, last_hash)
SELECT 1, 0, '{"0" * 64}'
WHERE NOT EXISTS (SELECT 1 FROM audit_chain_head WHERE id = 1)
"""


def upgrade() -> None:
    op.execute(_HEAD_FROM_LAST_EVENT)
    op.execute(_GENESIS_HEAD)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    # The head row stays: the application before this revision reads and moves it.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_extend_head ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_extend_head()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_events_extend_head")
