"""reminder plan and attempts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 23:52:29.356495
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reminders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('studies', schema=None) as batch_op:
        # Existing studies get the documented defaults.
        batch_op.add_column(sa.Column('remind_on_open', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('remind_hours_before_close', sa.Integer(), nullable=True, server_default=sa.text('24')))
        batch_op.add_column(sa.Column('quiet_hours_start', sa.String(length=5), nullable=False, server_default='21:00'))
        batch_op.add_column(sa.Column('quiet_hours_end', sa.String(length=5), nullable=False, server_default='08:00'))


def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('quiet_hours_end')
        batch_op.drop_column('quiet_hours_start')
        batch_op.drop_column('remind_hours_before_close')
        batch_op.drop_column('remind_on_open')

    with op.batch_alter_table('reminders', schema=None) as batch_op:
        batch_op.drop_column('attempted_at')
        batch_op.drop_column('next_attempt_at')

