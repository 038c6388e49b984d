"""The staff password rules: length and the list of common passwords (no database needed)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from pro_app.domain.errors import ValidationError
from pro_app.services import staff
from pro_app.services.demo import DEMO_USERS

DATA = Path(staff.__file__).resolve().parent.parent / "data"


def test_the_shipped_list_is_the_expected_file_with_its_attribution() -> None:
    with gzip.open(DATA / "common-passwords.txt.gz", "rt", encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    assert len(lines) > 19_000
    assert all(line == line.lower() for line in lines)
    notice = (DATA / "README.md").read_text(encoding="utf-8")
    assert "Django Software Foundation" in notice and "BSD" in notice and "Redistributions" in notice


def test_the_list_is_loaded_once_as_a_frozenset() -> None:
    first = staff.common_passwords()
    assert isinstance(first, frozenset) and "password" in first
    assert staff.common_passwords() is first


@pytest.mark.parametrize("password", ["qwerty123456", "QWERTY123456", "  1q2w3e4r5t6y  ", "Q1W2E3R4T5Y6"])
def test_common_passwords_are_refused_in_any_case(password: str) -> None:
    with pytest.raises(ValidationError) as refused:
        staff.validate_password(password)
    assert refused.value.field == "password"
    assert "most commonly used" in refused.value.message


def test_length_is_checked_first() -> None:
    with pytest.raises(ValidationError, match="at least 12 characters"):
        staff.validate_password("password")


@pytest.mark.parametrize("password", ["qwerty123456!", "a-long-enough-secret", "correct-horse-battery"])
def test_uncommon_passwords_pass(password: str) -> None:
    staff.validate_password(password)


def test_the_demo_passwords_pass_the_rules() -> None:
    for _role, _email, password in DEMO_USERS:
        staff.validate_password(password)
