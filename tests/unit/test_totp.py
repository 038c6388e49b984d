"""TOTP against the published test vectors (RFC 4226 Appendix D, RFC 6238 Appendix B), drift
and replay rules, and the otpauth:// URI that authenticator apps scan."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from pro_app.domain import totp

RFC_SECRET = b"12345678901234567890"  # the 20-byte ASCII secret of both RFCs (SHA-1 vectors)


@pytest.mark.parametrize(
    ("counter", "expected"),
    list(enumerate(["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"])),
)
def test_hotp_rfc4226_appendix_d(counter: int, expected: str) -> None:
    assert totp.hotp(RFC_SECRET, counter) == expected


@pytest.mark.parametrize(
    ("unix_time", "step", "expected"),
    [
        (59, 0x1, "94287082"),
        (1111111109, 0x23523EC, "07081804"),
        (1111111111, 0x23523ED, "14050471"),
        (1234567890, 0x273EF07, "89005924"),
        (2000000000, 0x3F940AA, "69279037"),
        (20000000000, 0x27BC86AA, "65353130"),
    ],
)
def test_totp_rfc6238_appendix_b_sha1(unix_time: int, step: int, expected: str) -> None:
    assert totp.time_step(unix_time) == step
    assert totp.totp(RFC_SECRET, unix_time, digits=8) == expected
    # The 6-digit code apps show is the same value truncated to its last six digits.
    assert totp.totp(RFC_SECRET, unix_time) == expected[-6:]


def test_base32_round_trip_as_people_type_it() -> None:
    secret = totp.new_secret()
    assert len(secret) == 20
    text = totp.to_base32(secret)
    assert "=" not in text and text == text.upper() and len(text) == 32
    assert totp.from_base32(totp.grouped(text).lower()) == secret
    assert totp.grouped("ABCDEFGHIJ") == "ABCD EFGH IJ"
    assert totp.new_secret() != secret


@pytest.mark.parametrize(("typed", "expected"), [
    ("123456", "123456"), (" 123 456 ", "123456"), ("123-456", "123456"),
    ("12345", None), ("1234567", None), ("12a456", None), ("١٢٣٤٥٦", None), ("", None),
])
def test_normalise_code(typed: str, expected: str | None) -> None:
    assert totp.normalise_code(typed) == expected


NOW = 1_700_000_015.0  # inside a step, 15 s after it began


def _code(offset_steps: int) -> str:
    return totp.totp(RFC_SECRET, NOW + offset_steps * totp.STEP_SECONDS)


def test_one_step_of_drift_either_way_is_accepted() -> None:
    current = totp.time_step(NOW)
    assert totp.matching_step(RFC_SECRET, _code(0), NOW) == current
    assert totp.matching_step(RFC_SECRET, _code(-1), NOW) == current - 1
    assert totp.matching_step(RFC_SECRET, _code(1), NOW) == current + 1


def test_two_steps_of_drift_are_refused() -> None:
    assert totp.matching_step(RFC_SECRET, _code(-2), NOW) is None
    assert totp.matching_step(RFC_SECRET, _code(2), NOW) is None


def test_a_used_step_is_never_accepted_again() -> None:
    current = totp.time_step(NOW)
    assert totp.matching_step(RFC_SECRET, _code(0), NOW, after_step=current) is None
    assert totp.was_replayed(RFC_SECRET, _code(0), NOW, after_step=current)
    # An earlier step is refused once a later one was used, even within the drift window.
    assert totp.matching_step(RFC_SECRET, _code(-1), NOW, after_step=current) is None
    # The next step's code is still good.
    assert totp.matching_step(RFC_SECRET, _code(1), NOW, after_step=current) == current + 1
    assert not totp.was_replayed(RFC_SECRET, _code(1), NOW, after_step=current)
    assert not totp.was_replayed(RFC_SECRET, "000000" if _code(0) != "000000" else "111111", NOW, after_step=current)


def test_a_wrong_code_matches_nothing() -> None:
    wrong = "000000" if "000000" not in {_code(-1), _code(0), _code(1)} else "999999"
    assert totp.matching_step(RFC_SECRET, wrong, NOW) is None


def test_provisioning_uri_follows_the_key_uri_format() -> None:
    uri = totp.provisioning_uri(RFC_SECRET, account="ana.lyst@example.org", issuer="Riverside PRO")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert unquote(parts.path) == "/Riverside PRO:ana.lyst@example.org"
    query = parse_qs(parts.query)
    assert query == {
        "secret": [totp.to_base32(RFC_SECRET)], "issuer": ["Riverside PRO"], "algorithm": ["SHA1"],
        "digits": ["6"], "period": ["30"],
    }
    assert " " not in uri
