"""`pro-app participants link`."""

from __future__ import annotations

import re

from flask.testing import FlaskCliRunner
from sqlalchemy.orm import Session

from pro_app.cli import main
from pro_app.services.access import find_link, link_is_usable
from pro_app.services.participants import withdraw_participant
from tests.factories import enrol, make_study


def test_link_prints_a_fresh_working_link(runner: FlaskCliRunner, db_session: Session) -> None:
    study = make_study(db_session, "CLI-1")
    participant = enrol(db_session, study, "P-77")
    db_session.commit()
    first = runner.invoke(main, ["participants", "link", "p-77"])
    assert first.exit_code == 0, first.output
    token = re.search(r"http://localhost/p/(\S+)", first.output)
    assert token and "Personal code:" in first.output
    second = runner.invoke(main, ["participants", "link", "P-77", "--study", "CLI-1"])
    token2 = re.search(r"/p/(\S+)", second.output)
    assert token2 and token2.group(1) != token.group(1)
    db_session.expire_all()
    assert not link_is_usable(find_link(db_session, token=token.group(1)))  # type: ignore[arg-type]
    assert link_is_usable(find_link(db_session, token=token2.group(1)))  # type: ignore[arg-type]
    assert find_link(db_session, token=token2.group(1)).participant_id == participant.id  # type: ignore[union-attr]


def test_link_refuses_unknown_ambiguous_and_withdrawn(runner: FlaskCliRunner, db_session: Session) -> None:
    first = make_study(db_session, "CLI-A")
    second = make_study(db_session, "CLI-B")
    enrol(db_session, first, "DUP-1")
    enrol(db_session, second, "DUP-1")
    gone = enrol(db_session, first, "GONE-1")
    withdraw_participant(db_session, gone, reason="moved away", actor="test")
    db_session.commit()
    unknown = runner.invoke(main, ["participants", "link", "NOPE-1"])
    assert unknown.exit_code == 1 and "No participant NOPE-1" in unknown.output
    ambiguous = runner.invoke(main, ["participants", "link", "DUP-1"])
    assert ambiguous.exit_code == 1 and "--study" in ambiguous.output
    assert runner.invoke(main, ["participants", "link", "DUP-1", "--study", "CLI-B"]).exit_code == 0
    withdrawn = runner.invoke(main, ["participants", "link", "GONE-1"])
    assert withdrawn.exit_code == 1 and "withdrawn" in withdrawn.output
