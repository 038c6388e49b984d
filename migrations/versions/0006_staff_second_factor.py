"""staff second factor and per-study enforcement

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        # Sealed TOTP secret (see pro_app.services.second_factor); active once enabled_at is set.
        batch_op.add_column(sa.Column('second_factor_secret', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('second_factor_enabled_at', sa.DateTime(timezone=True), nullable=True))
        # Last accepted time step: a code is never accepted twice.
        batch_op.add_column(sa.Column('second_factor_last_step', sa.BigInteger(), nullable=True))

    with op.batch_alter_table('studies', schema=None) as batch_op:
        # Existing studies keep signing in as before until an administrator switches it on.
        batch_op.add_column(sa.Column('require_second_factor', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('require_second_factor')

    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.drop_column('second_factor_last_step')
        batch_op.drop_column('second_factor_enabled_at')
        batch_op.drop_column('second_factor_secret')
