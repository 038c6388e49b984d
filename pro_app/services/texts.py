"""Which wording of an instrument is shown: a site's licensed text, else our demo text.

The EORTC owns the official QLQ-C30 wording and its translations; pro-app ships only its own
demonstration wording. A site holding a licence loads the official text per locale with
``pro-app instruments load-text``: it is validated against the definition exactly like the
shipped files, stored with its checksum, audited, and from then on takes precedence over the
demo wording for that locale in every questionnaire started. A questionnaire already started
keeps the wording it recorded (:func:`text_started_with`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.orm import Session

from pro_app.db.models import InstrumentTextRecord
from pro_app.db.models.base import table_of
from pro_app.domain.errors import N_, ValidationError
from pro_app.domain.instruments import (
    Instrument,
    InstrumentError,
    InstrumentText,
    NotRegisteredError,
    default_registry,
    load_text,
)
from pro_app.services.audit import record_event

# Wordings by checksum, licensed (parsed from the database) and demo: the content behind a
# checksum never changes.
_PARSED: dict[str, InstrumentText] = {}


def load_licensed_text(
    session: Session,
    *,
    instrument_code: str,
    locale: str,
    path: Path,
    supported_locales: Sequence[str],
    actor: str,
) -> InstrumentTextRecord:
    """Validate a licensed text file and make it the active wording for its locale.

    Refused, with the file, field and reason, when the instrument or locale is unknown, the
    file is not UTF-8 JSON, or it does not match the definition (every item, every label).
    """
    if locale not in supported_locales:
        raise ValidationError(
            N_("Unknown locale %(locale)s (offered: %(offered)s)."),
            field="locale", locale=locale, offered=", ".join(supported_locales),
        )
    try:
        instrument = default_registry().get(instrument_code)
    except NotRegisteredError:
        raise ValidationError(N_("Unknown instrument %(code)s."), field="instrument", code=instrument_code) from None
    try:
        text = load_text(path, instrument, file_label=path.name)
    except InstrumentError as error:
        # Names the file, field and reason; operators read it in English, as the file format is.
        raise ValidationError("%(problem)s", field="file", problem=str(error)) from None
    if text.locale != locale:
        raise ValidationError(
            N_("%(file)s: locale: the file is for %(found)s, not %(locale)s."),
            field="file", file=path.name, found=text.locale, locale=locale,
        )
    if text.source != "licensed":
        raise ValidationError(
            N_("%(file)s: source: a loaded text must say \"licensed\" (found %(found)s)."),
            field="file", file=path.name, found=text.source,
        )
    previous = active_record(session, instrument, locale)
    session.execute(
        update(InstrumentTextRecord)
        .where(
            InstrumentTextRecord.instrument_code == instrument.code,
            InstrumentTextRecord.instrument_version == instrument.version,
            InstrumentTextRecord.locale == locale,
            InstrumentTextRecord.active.is_(True),
        )
        .values(active=False)
    )
    session.flush()
    record = InstrumentTextRecord(
        instrument_code=instrument.code,
        instrument_version=instrument.version,
        locale=locale,
        source=text.source,
        content=json.dumps(_as_json(path), ensure_ascii=False, sort_keys=True),
        checksum=text.checksum,
        active=True,
        loaded_by=actor,
    )
    session.add(record)
    session.flush()
    record_event(
        session,
        actor=actor,
        action="instrument_text.load",
        entity_type="instrument_text",
        entity_id=record.id,
        before=None if previous is None else {"checksum": previous.checksum},
        after={"instrument": instrument.code, "version": instrument.version, "locale": locale, "checksum": text.checksum},
    )
    return record


def _as_json(path: Path) -> object:
    return json.loads(path.read_bytes().decode("utf-8"))


def active_record(session: Session, instrument: Instrument, locale: str) -> InstrumentTextRecord | None:
    return session.scalars(
        select(InstrumentTextRecord).where(
            InstrumentTextRecord.instrument_code == instrument.code,
            InstrumentTextRecord.instrument_version == instrument.version,
            InstrumentTextRecord.locale == locale,
            InstrumentTextRecord.active.is_(True),
        )
    ).one_or_none()


# Asked whenever a questionnaire is started (which wording to show), so built once, as a plain
# Core statement. Not cached beyond the statement: a text loaded by any process must show on
# the next questionnaire started in every process. (A started questionnaire's pages show the
# wording it recorded: text_started_with.)
_TEXT_RECORDS = table_of(InstrumentTextRecord)
_ACTIVE_LICENSED = select(_TEXT_RECORDS.c.checksum, _TEXT_RECORDS.c.id).where(
    _TEXT_RECORDS.c.instrument_code == bindparam("code"),
    _TEXT_RECORDS.c.instrument_version == bindparam("version"),
    _TEXT_RECORDS.c.locale == bindparam("locale"),
    _TEXT_RECORDS.c.active.is_(True),
)


def _licensed_text(session: Session, instrument: Instrument, locale: str) -> InstrumentText | None:
    row = session.connection().execute(
        _ACTIVE_LICENSED, {"code": instrument.code, "version": instrument.version, "locale": locale}
    ).first()
    if row is None:
        return None
    checksum, record_id = row
    if checksum not in _PARSED:
        record = session.get(InstrumentTextRecord, record_id)
        assert record is not None
        _PARSED[checksum] = load_text(json.loads(record.content), instrument, file_label=f"database text {record_id}")
    return _PARSED[checksum]


_LICENSED_BY_CHECKSUM = select(_TEXT_RECORDS.c.content, _TEXT_RECORDS.c.id).where(
    _TEXT_RECORDS.c.instrument_code == bindparam("code"),
    _TEXT_RECORDS.c.instrument_version == bindparam("version"),
    _TEXT_RECORDS.c.locale == bindparam("locale"),
    _TEXT_RECORDS.c.checksum == bindparam("checksum"),
)


def text_started_with(
    connection: Connection, instrument: Instrument, locale: str, checksum: str
) -> InstrumentText | None:
    """The wording with ``checksum`` (the one a questionnaire recorded when it was started):
    the demo text of ``locale``, or a licensed text loaded for it, still active or replaced
    since. None when there is none any more (a release changed the demo wording of ``locale``).

    Found without a statement once this process has seen it."""
    known = _PARSED.get(checksum)
    if known is not None:
        return known
    try:
        demo: InstrumentText | None = default_registry().text(instrument.code, locale)
    except NotRegisteredError:
        demo = None
    if demo is not None and demo.checksum == checksum and (demo.instrument, demo.version) == (instrument.code, instrument.version):
        _PARSED[checksum] = demo
        return demo
    row = connection.execute(
        _LICENSED_BY_CHECKSUM,
        {"code": instrument.code, "version": instrument.version, "locale": locale, "checksum": checksum},
    ).first()
    if row is None:
        return None
    content, record_id = row
    _PARSED[checksum] = load_text(json.loads(content), instrument, file_label=f"database text {record_id}")
    return _PARSED[checksum]


def text_for(session: Session, instrument: Instrument, locales: Sequence[str]) -> InstrumentText:
    """The wording to show: for the first locale that has any, licensed text before demo text."""
    registry = default_registry()
    for locale in locales:
        licensed = _licensed_text(session, instrument, locale)
        if licensed is not None:
            return licensed
        try:
            return registry.text(instrument.code, locale)
        except NotRegisteredError:
            continue
    raise NotRegisteredError(f"no text for {instrument.code} in {', '.join(locales)}")


@dataclass(frozen=True)
class TextStatus:
    instrument: str
    version: str
    locale: str
    source: str
    checksum: str
    loaded_by: str | None
    loaded_at: datetime | None


def text_status(session: Session, locales: Sequence[str]) -> list[TextStatus]:
    """Per instrument and offered locale: which wording is active now."""
    statuses = []
    for instrument in default_registry():
        for locale in locales:
            record = active_record(session, instrument, locale)
            if record is not None:
                statuses.append(TextStatus(instrument.code, instrument.version, locale, record.source,
                                           record.checksum, record.loaded_by, record.loaded_at))
                continue
            try:
                demo = default_registry().text(instrument.code, locale)
            except NotRegisteredError:
                statuses.append(TextStatus(instrument.code, instrument.version, locale, "missing", "", None, None))
                continue
            statuses.append(TextStatus(instrument.code, instrument.version, locale, demo.source, demo.checksum, None, None))
    return statuses
