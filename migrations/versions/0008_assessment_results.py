"""assessment results

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 02:30:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_CHUNK = 1000


def upgrade() -> None:
    op.create_table(
        'assessment_results',
        sa.Column('assessment_id', sa.Integer(), nullable=False),
        sa.Column('answers', sa.Text(), nullable=False),
        sa.Column('scores', sa.Text(), nullable=False),
        sa.Column('algorithm_version', sa.String(length=64), nullable=False),
        sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['assessment_id'], ['assessments.id'], name=op.f('fk_assessment_results_assessment_id_assessments'), ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('assessment_id', name=op.f('pk_assessment_results')),
    )
    _backfill()


def _backfill() -> None:
    """A result row for every assessment that has scores, from its stored answers and scores,
    in the format ``services.scores.store_scores`` writes. Assessments of an instrument this
    version of the app does not know are left without one (exports then read their rows)."""
    from pro_app.domain.instruments import NotRegisteredError, default_registry

    registry = default_registry()
    bind = op.get_bind()
    scored = bind.execute(sa.text(
        'SELECT a.id, a.instrument_code, a.instrument_version FROM assessments a '
        'WHERE EXISTS (SELECT 1 FROM scale_scores s WHERE s.assessment_id = a.id) ORDER BY a.id'
    )).all()
    for start in range(0, len(scored), _CHUNK):
        chunk = scored[start:start + _CHUNK]
        ids = [row[0] for row in chunk]
        answers: dict[int, dict[str, int]] = {}
        for assessment_id, item_id, value in bind.execute(
            sa.text('SELECT assessment_id, item_id, value FROM answers WHERE assessment_id IN :ids')
            .bindparams(sa.bindparam('ids', expanding=True)), {'ids': ids}
        ):
            answers.setdefault(assessment_id, {})[item_id] = value
        scores: dict[int, dict[str, tuple[float | None, str, Any]]] = {}
        for assessment_id, code, value, version, computed_at in bind.execute(
            sa.text('SELECT assessment_id, scale_code, value, algorithm_version, computed_at FROM scale_scores '
                    'WHERE assessment_id IN :ids').bindparams(sa.bindparam('ids', expanding=True)), {'ids': ids}
        ):
            scores.setdefault(assessment_id, {})[code] = (value, version, computed_at)
        rows = []
        for assessment_id, code, version in chunk:
            try:
                instrument = registry.get(code, version)
            except NotRegisteredError:
                continue
            given = answers.get(assessment_id, {})
            stored = scores[assessment_id]
            rows.append({
                'assessment_id': assessment_id,
                'answers': ','.join(str(given[item]) if item in given else '' for item in instrument.item_ids),
                'scores': ','.join(
                    '' if stored.get(score, (None,))[0] is None else repr(float(stored[score][0]))  # type: ignore[arg-type]
                    for score in instrument.score_codes
                ),
                'algorithm_version': max(entry[1] for entry in stored.values()),
                'computed_at': max(entry[2] for entry in stored.values()),
            })
        if rows:
            bind.execute(sa.text(
                'INSERT INTO assessment_results (assessment_id, answers, scores, algorithm_version, computed_at) '
                'VALUES (:assessment_id, :answers, :scores, :algorithm_version, :computed_at)'
            ), rows)


def downgrade() -> None:
    op.drop_table('assessment_results')
