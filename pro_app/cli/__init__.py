"""The ``pro-app`` command: the Flask CLI group of this application.

Each command owns its transaction: it commits once at the end, or rolls back on error.
"""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from pro_app import create_app
from pro_app.cli import audit, backup, db, demo, export, instruments, participants, scores, tick, users
from pro_app.cli.score import score_command


def _make_app() -> object:
    return create_app()


@click.group(cls=FlaskGroup, create_app=_make_app, add_version_option=False, load_dotenv=False)
def main() -> None:
    """pro-app: patient-reported outcomes for clinical trials."""


main.add_command(db.db_group)
main.add_command(demo.seed_demo_command)
main.add_command(users.create_user_command)
main.add_command(users.reset_second_factor_command)
main.add_command(audit.audit_group)
main.add_command(score_command)
main.add_command(scores.rescore_command)
main.add_command(instruments.instruments_group)
main.add_command(participants.participants_group)
main.add_command(tick.tick_command)
main.add_command(tick.worker_command)
main.add_command(export.export_command)
main.add_command(backup.backup_command)
