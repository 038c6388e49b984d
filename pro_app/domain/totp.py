"""Time-based one-time passwords (RFC 6238 TOTP over RFC 4226 HOTP), as authenticator apps use.

The parameters are the ones every common authenticator app understands: HMAC-SHA1, a 30-second
time step counted from the Unix epoch, 6 digits. A phone's clock may be a little off, so a code
of the previous or the next step is accepted too (RFC 6238 section 5.2 recommends at most one
step of drift); anything further is refused.

A code proves possession of the secret only once: the caller remembers the last step it
accepted for an account and passes it as ``after_step``, so a code seen over a shoulder or
captured in transit cannot be used again within its 90-second life (RFC 6238 section 5.2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

STEP_SECONDS = 30
DIGITS = 6
#: Steps accepted either side of the current one (clock drift of the phone).
DRIFT_STEPS = 1
#: 160 bits, the secret length RFC 4226 section 4 recommends for HMAC-SHA1.
SECRET_BYTES = 20


def new_secret() -> bytes:
    """A fresh random secret from the operating system's cryptographic generator."""
    return secrets.token_bytes(SECRET_BYTES)


def to_base32(secret: bytes) -> str:
    """The secret as authenticator apps expect it typed: base32, upper case, without padding."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def from_base32(text: str) -> bytes:
    """Read a base32 secret as people copy it: any case, spaces and missing padding allowed."""
    cleaned = "".join(text.split()).upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def grouped(text: str, size: int = 4) -> str:
    """``ABCDEFGH...`` as ``ABCD EFGH ...``, easier to read out and type."""
    return " ".join(text[i : i + size] for i in range(0, len(text), size))


def hotp(secret: bytes, counter: int, *, digits: int = DIGITS) -> str:
    """RFC 4226 section 5.3: HMAC-SHA1 of the 8-byte big-endian counter, dynamically truncated."""
    digest = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    binary = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % 10**digits).zfill(digits)


def time_step(unix_time: float, *, step_seconds: int = STEP_SECONDS) -> int:
    """RFC 6238 section 4.2: T = floor((now - T0) / X) with T0 = 0."""
    return int(unix_time // step_seconds)


def totp(secret: bytes, unix_time: float, *, digits: int = DIGITS, step_seconds: int = STEP_SECONDS) -> str:
    """The code an authenticator app shows at ``unix_time``."""
    return hotp(secret, time_step(unix_time, step_seconds=step_seconds), digits=digits)


def normalise_code(text: str) -> str | None:
    """The digits of a typed code (spaces and dashes removed), or None when it cannot be one."""
    digits = "".join(ch for ch in text if ch not in " -\t")
    if len(digits) != DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


def matching_step(
    secret: bytes,
    code: str,
    unix_time: float,
    *,
    after_step: int | None = None,
    drift: int = DRIFT_STEPS,
) -> int | None:
    """The time step whose code equals ``code``, within ``drift`` steps of ``unix_time`` and
    later than ``after_step`` (the last step already used), or None.

    Every candidate is compared in constant time, so timing does not tell which step matched.
    """
    current = time_step(unix_time)
    found: int | None = None
    for step in range(max(current - drift, 0), current + drift + 1):
        matches = hmac.compare_digest(hotp(secret, step), code)
        if matches and found is None and (after_step is None or step > after_step):
            found = step
    return found


def was_replayed(secret: bytes, code: str, unix_time: float, *, after_step: int | None, drift: int = DRIFT_STEPS) -> bool:
    """True when ``code`` is valid now but its step was already used: the message can then say
    "wait for the next code" instead of "wrong code"."""
    if after_step is None:
        return False
    return matching_step(secret, code, unix_time, drift=drift) is not None and matching_step(
        secret, code, unix_time, after_step=after_step, drift=drift
    ) is None


def provisioning_uri(secret: bytes, *, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI of the Key Uri Format that authenticator apps scan as a QR code."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode(
        {"secret": to_base32(secret), "issuer": issuer, "algorithm": "SHA1", "digits": DIGITS, "period": STEP_SECONDS},
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"
