"""What an export row knows about one assessment: the plain data every export format writes.

Built by ``services/exports.py`` from the database and consumed by the writers in
``pro_app/exports`` (which never touch the database).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

V = TypeVar("V")


class PackedValues(Mapping[str, V]):
    """An assessment's values as stored in its result row: one line of comma-separated text
    in a fixed key order (an empty field = no value), decoded into a mapping on first use.

    Writers that lay values out in the same order can copy :attr:`text` as it is (the wide
    CSV does: the stored text is exactly what it would write); everyone else reads it as a
    plain mapping. Build it only from text whose fields match ``order`` (the reader checks).
    """

    __slots__ = ("order", "text", "_decode", "_values")

    def __init__(self, order: tuple[str, ...], text: str, decode: Callable[[tuple[str, ...], str], dict[str, V]]) -> None:
        self.order = order
        self.text = text
        self._decode = decode
        self._values: dict[str, V] | None = None

    def _mapping(self) -> dict[str, V]:
        if self._values is None:
            self._values = self._decode(self.order, self.text)
        return self._values

    def __getitem__(self, key: str) -> V:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __contains__(self, key: object) -> bool:
        return key in self._mapping()

    def __repr__(self) -> str:
        return f"PackedValues({self._mapping()!r})"


@dataclass(slots=True)
class AssessmentRecord:
    """One assessment with its context, answers and scores.

    Instants are UTC-aware; ``timezone`` is the participant's, for local times. ``answers`` maps
    item id to value (absent = not answered); ``scores`` maps score code to value (None = not
    scorable), both empty for an assessment without answers or scores.

    Records are read, never changed: the exporters build them and the writers format them.
    The class is not ``frozen`` only because a frozen dataclass sets each of its 28 fields
    through ``object.__setattr__``, which made building the records 15% of a wide export's
    work.
    """

    assessment_id: int
    study: str
    site: str
    arm: str | None
    subject_code: str
    participant_id: int
    timezone: str
    timepoint_code: str
    timepoint_label: str
    occurrence: int
    visit_number: int
    planned_at: datetime
    window_opens_at: datetime
    window_closes_at: datetime
    started_at: datetime | None
    submitted_at: datetime | None
    status: str
    mode: str | None
    locale: str | None
    instrument_code: str
    instrument_version: str
    text_source: str | None
    text_checksum: str | None
    anchors: dict[str, datetime] = field(default_factory=dict)
    answers: Mapping[str, int] = field(default_factory=dict)
    answered_at: dict[str, datetime] = field(default_factory=dict)
    scores: Mapping[str, float | None] = field(default_factory=dict)
    scoring_algorithm: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True, slots=True)
class ExportFilters:
    """Which assessments an export holds. ``None`` means no restriction."""

    study: str
    site_ids: tuple[int, ...] | None = None
    arm_codes: tuple[str, ...] | None = None
    timepoint_codes: tuple[str, ...] | None = None
    planned_from: datetime | None = None
    planned_to: datetime | None = None
    include_incomplete: bool = False

    def describe(self) -> dict[str, object]:
        """The filters as plain values, for the audit trail."""
        return {
            "study": self.study,
            "sites": list(self.site_ids) if self.site_ids is not None else None,
            "arms": list(self.arm_codes) if self.arm_codes is not None else None,
            "timepoints": list(self.timepoint_codes) if self.timepoint_codes is not None else None,
            "from": self.planned_from.isoformat() if self.planned_from else None,
            "to": self.planned_to.isoformat() if self.planned_to else None,
            "include_incomplete": self.include_incomplete,
        }
