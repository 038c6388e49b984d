"""idempotency keys for answers and submissions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per request that saved an answer or submitted an assessment; the primary key on
    # the client's request id makes a retried request unable to write twice.
    op.create_table('request_receipts',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('assessment_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.String(length=40), nullable=True),
    sa.Column('value', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('answer', 'submit')", name=op.f('ck_request_receipts_kind_valid')),
    sa.CheckConstraint("outcome IN ('saved', 'unchanged', 'submitted')", name=op.f('ck_request_receipts_outcome_valid')),
    sa.CheckConstraint(
        "(kind = 'answer' AND item_id IS NOT NULL AND value IS NOT NULL AND outcome IN ('saved', 'unchanged'))"
        " OR (kind = 'submit' AND item_id IS NULL AND value IS NULL AND outcome = 'submitted')",
        name=op.f('ck_request_receipts_payload_matches_kind'),
    ),
    sa.ForeignKeyConstraint(['assessment_id'], ['assessments.id'], name=op.f('fk_request_receipts_assessment_id_assessments'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_request_receipts_participant_id_participants'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('request_id', name=op.f('pk_request_receipts'))
    )
    with op.batch_alter_table('request_receipts', schema=None) as batch_op:
        batch_op.create_index('ix_request_receipts_assessment', ['assessment_id', 'kind'], unique=False)
        batch_op.create_index('ix_request_receipts_participant', ['participant_id'], unique=False)

    # Submissions made before receipts existed keep working as replays through
    # assessments.submission_key (unchanged); nothing to backfill.


def downgrade() -> None:
    with op.batch_alter_table('request_receipts', schema=None) as batch_op:
        batch_op.drop_index('ix_request_receipts_participant')
        batch_op.drop_index('ix_request_receipts_assessment')

    op.drop_table('request_receipts')
