"""The request id protocol of the patient pages: where a request's id is read from, and the
receipt sent back.

A request that writes (an answer save, a submission) names itself with a UUID, in the
``Idempotency-Key`` header or the ``request_id`` form/JSON field; the header wins when both
are sent. A request without one is accepted and taken as unique (older pages and scripts
still work); a malformed one is refused with 400 before anything is written. The rules
themselves live in :mod:`pro_app.services.questionnaire`.
"""

from __future__ import annotations

from datetime import timezone
from typing import Any

from flask import request

from pro_app.domain.errors import N_, ValidationError
from pro_app.services.questionnaire import REQUEST_ID_MAX_LENGTH, SavedAnswer, parse_request_id

HEADER = "Idempotency-Key"
#: Set on a response that repeats the stored result of an earlier identical request.
REPLAYED_HEADER = "Idempotent-Replayed"


def request_id_of(form_value: Any, *, legacy_key: Any = None) -> str | None:
    """The request id of this request (canonical UUID text), or None when it has none.

    ``legacy_key`` is the ``key`` field of review pages rendered before request ids: any text
    up to 64 characters, kept as it is so such a page still submits exactly once.
    """
    header = request.headers.get(HEADER)
    if header is not None and header.strip():
        return parse_request_id(header)
    if isinstance(form_value, str) and form_value.strip():
        return parse_request_id(form_value)
    if form_value not in (None, ""):
        return parse_request_id(str(form_value))
    if isinstance(legacy_key, str) and legacy_key.strip():
        if len(legacy_key) > REQUEST_ID_MAX_LENGTH:
            raise ValidationError(N_("The submission could not be verified. Please reload the page."), field="key")
        return legacy_key
    return None


def receipt_body(saved: SavedAnswer) -> dict[str, object]:
    """The JSON receipt of an answer save; a repeated request gets the same body."""
    instant = saved.saved_at.astimezone(timezone.utc)
    return {
        "receipt": saved.request_id,
        "item": saved.item_id,
        "value": saved.value,
        "saved_at": instant.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
