"""Export writers: each turns assessment records into one file format analysts' tools read.

Writers import only ``pro_app.domain``; they never touch the database. Each writes to a
binary stream and returns the number of data rows (or resources) written. Formats made of
several files (SDTM data + variable list, REDCap dictionary + records) write a ZIP archive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

from pro_app.domain.instruments import Instrument, InstrumentText
from pro_app.domain.records import AssessmentRecord, ExportFilters


@dataclass(frozen=True)
class ExportContext:
    instrument: Instrument
    #: Wording per locale (for response texts, item texts and the data dictionary); must hold
    #: at least the study's default locale, conventionally "en".
    texts: Mapping[str, InstrumentText]
    filters: ExportFilters
    generated_at: datetime
    app_version: str = "pro-app"
    extra: Mapping[str, object] = field(default_factory=dict)


Writer = Callable[[Iterable[AssessmentRecord], BinaryIO, ExportContext], int]


@dataclass(frozen=True)
class ExportFormat:
    name: str
    media_type: str
    extension: str
    writer: Writer
    description: str
