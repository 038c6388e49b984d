"""licensed instrument text

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 23:23:47.293373
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('instrument_texts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instrument_code', sa.String(length=40), nullable=False),
    sa.Column('instrument_version', sa.String(length=16), nullable=False),
    sa.Column('locale', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('loaded_by', sa.String(length=80), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instrument_texts'))
    )
    with op.batch_alter_table('instrument_texts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instrument_texts_checksum'), ['checksum'], unique=False)
        batch_op.create_index('uq_instrument_texts_active', ['instrument_code', 'instrument_version', 'locale'], unique=True, sqlite_where=sa.text('active'), postgresql_where=sa.text('active'))



def downgrade() -> None:
    with op.batch_alter_table('instrument_texts', schema=None) as batch_op:
        batch_op.drop_index('uq_instrument_texts_active', sqlite_where=sa.text('active'), postgresql_where=sa.text('active'))
        batch_op.drop_index(batch_op.f('ix_instrument_texts_checksum'))

    op.drop_table('instrument_texts')
