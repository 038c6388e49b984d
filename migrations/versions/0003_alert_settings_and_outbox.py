"""alert settings and outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 23:26:28.436132
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "Open now" (opens <= now < closes) is answered inside this index once it holds both ends.
    with op.batch_alter_table('assessments', schema=None) as batch_op:
        batch_op.drop_index('ix_assessments_status_closes')
        batch_op.create_index('ix_assessments_status_closes', ['status', 'window_closes_at', 'window_opens_at'], unique=False)
    op.create_table('outbox_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=8), nullable=False),
    sa.Column('recipient', sa.String(length=254), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages'))
    )
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_messages_status_created', ['status', 'created_at'], unique=False)

    op.create_table('study_alert_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('scale_code', sa.String(length=40), nullable=False),
    sa.Column('op', sa.String(length=4), nullable=False),
    sa.Column('threshold', sa.Double(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=300), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_study_alert_rules_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_alert_rules')),
    sa.UniqueConstraint('study_id', 'scale_code', name=op.f('uq_study_alert_rules_study_id_scale_code'))
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        # Existing studies keep the documented default: alert on a 10-point worsening.
        batch_op.add_column(sa.Column('worsening_alert_points', sa.Double(), nullable=True, server_default=sa.text('10')))



def downgrade() -> None:
    with op.batch_alter_table('assessments', schema=None) as batch_op:
        batch_op.drop_index('ix_assessments_status_closes')
        batch_op.create_index('ix_assessments_status_closes', ['status', 'window_closes_at'], unique=False)
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('worsening_alert_points')

    op.drop_table('study_alert_rules')
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_messages_status_created')

    op.drop_table('outbox_messages')
