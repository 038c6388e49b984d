"""seed-demo, create-user and db upgrade."""

from __future__ import annotations

import re
from pathlib import Path

from alembic.script import ScriptDirectory
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from pro_app import create_app
from pro_app.cli import main
from pro_app.db.engine import make_engine, make_session_factory
from pro_app.db.migrate import alembic_config
from pro_app.db.models import AccessLink, Assessment, Participant, StaffUser, Study
from pro_app.services.access import find_link, link_is_usable
from pro_app.services.audit import verify_chain
from tests.conftest import app_config


def _count(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_seed_demo_creates_a_usable_demo_once(runner: FlaskCliRunner, db_session: Session) -> None:
    first = runner.invoke(main, ["seed-demo"])
    assert first.exit_code == 0, first.output
    assert "Demo study created." in first.output
    for role in ("admin", "nurse", "analyst"):
        assert re.search(rf"{role}\s+\S+@demo\.invalid\s+\S{{12,}}", first.output)
    token = re.search(r"/p/(\S+)", first.output)
    assert token is not None
    link = find_link(db_session, token=token.group(1))
    assert link is not None and link_is_usable(link)
    counts = {m: _count(db_session, m) for m in (Study, Participant, Assessment, StaffUser)}
    assert counts[Study] == 1 and counts[Participant] == 4 and counts[StaffUser] == 3
    statuses = set(db_session.scalars(select(Assessment.status)))
    assert {"open", "completed", "scheduled"} <= statuses
    completed = db_session.scalars(select(Assessment).where(Assessment.status == "completed")).all()
    assert completed and all(len(a.scores) == 16 for a in completed)

    second = runner.invoke(main, ["seed-demo"])
    assert second.exit_code == 0, second.output
    assert "already present" in second.output
    assert {m: _count(db_session, m) for m in counts} == counts
    new_token = re.search(r"/p/(\S+)", second.output)
    assert new_token is not None and new_token.group(1) != token.group(1)
    db_session.expire_all()
    old = find_link(db_session, token=token.group(1))
    assert old is not None and not link_is_usable(old), "the earlier demo link is revoked"
    assert _count(db_session, AccessLink) == 2
    assert verify_chain(db_session)[1] is None


def test_create_user(runner: FlaskCliRunner, db_session: Session) -> None:
    result = runner.invoke(
        main, ["create-user", "Nurse.One@Example.org", "--role", "nurse", "--password", "a-long-enough-secret"]
    )
    assert result.exit_code == 0, result.output
    user = db_session.scalars(select(StaffUser)).one()
    assert user.email == "nurse.one@example.org" and user.role == "nurse"
    assert "a-long-enough-secret" not in user.password_hash and user.password_hash.startswith("scrypt:")


def test_create_user_rejects_bad_input(runner: FlaskCliRunner, db_session: Session) -> None:
    short = runner.invoke(main, ["create-user", "a@example.org", "--role", "nurse", "--password", "short"])
    assert short.exit_code == 1 and "at least 12 characters" in short.output
    bad_email = runner.invoke(main, ["create-user", "not-an-email", "--role", "nurse", "--password", "x" * 12])
    assert bad_email.exit_code == 1 and "valid email" in bad_email.output
    bad_role = runner.invoke(main, ["create-user", "a@example.org", "--role", "root", "--password", "x" * 12])
    assert bad_role.exit_code == 2
    runner.invoke(main, ["create-user", "a@example.org", "--role", "nurse", "--password", "x" * 12])
    dup = runner.invoke(main, ["create-user", "A@example.org", "--role", "admin", "--password", "y" * 12])
    assert dup.exit_code == 1 and "already exists" in dup.output
    assert _count(db_session, StaffUser) == 1


def test_seed_demo_can_migrate_an_empty_database_first(tmp_path: Path) -> None:
    """``make run`` migrates and seeds in one process: ``seed-demo --migrate``."""
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    app = create_app(app_config(DATABASE_URL=url))
    runner = app.test_cli_runner()
    first = runner.invoke(main, ["seed-demo", "--migrate"])
    assert first.exit_code == 0, first.output
    assert "Demo study created." in first.output
    again = runner.invoke(main, ["seed-demo", "--migrate"])  # at the latest revision already: seeds only
    assert again.exit_code == 0 and "already present" in again.output
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            assert _count(session, Study) == 1 and _count(session, StaffUser) == 3
            assert verify_chain(session)[1] is None
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == ScriptDirectory.from_config(alembic_config()).get_current_head()
    finally:
        engine.dispose()
        app.extensions["pro_db"].engine.dispose()
