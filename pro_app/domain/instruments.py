"""Instruments as data: the definition (structure and scoring rules) and the text per locale.

An instrument is a versioned ``definition.json`` plus one ``text/<locale>.json`` per language.
Both are validated when loaded, and a broken file fails loudly with the file, the field and the
reason (:class:`InstrumentError`), because a silently mis-read scoring rule would corrupt
every score computed afterwards. The definition says nothing about wording and the text says
nothing about scoring: a site that licenses the official wording replaces only the text.

Field paths in error messages use zero-based JSON indexes (``items[3]`` is the fourth item).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

ScaleKind = Literal["functional", "symptom", "global"]
Recall = Literal["none", "past_week"]
AlertOp = Literal["lt", "ge"]
TextSource = Literal["demo", "licensed"]

SCALE_KINDS: tuple[ScaleKind, ...] = ("functional", "symptom", "global")
RECALL_PERIODS: tuple[Recall, ...] = ("none", "past_week")
ALERT_OPS: tuple[AlertOp, ...] = ("lt", "ge")
TEXT_SOURCES: tuple[TextSource, ...] = ("demo", "licensed")

_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_LOCALE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
_Choice = TypeVar("_Choice", bound=str)


class InstrumentError(Exception):
    """A definition or text file (or an in-memory instrument) breaks the format's rules.

    ``file`` names the file (or the instrument when built in code), ``field`` the JSON path of
    the offending value (empty for the whole file) and ``reason`` what is wrong with it.
    """

    def __init__(self, file: str, field: str, reason: str) -> None:
        self.file = file
        self.field = field
        self.reason = reason
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {reason}")


class NotRegisteredError(KeyError):
    """An instrument, version or locale was asked for that the registry does not hold."""

    def __str__(self) -> str:
        # KeyError would show the repr of the message (with quotes); say it plainly.
        return str(self.args[0]) if self.args else "not registered"


# --------------------------------------------------------------------------- definition model


@dataclass(frozen=True, slots=True)
class ResponseSet:
    """The answer values of a group of items (e.g. 1-4) and which of them carry a label.

    Values are strictly increasing integers; the smallest is the scale's origin in the linear
    transformation and ``range`` (max - min) its divisor.
    """

    code: str
    values: tuple[int, ...]
    labelled: tuple[int, ...]

    @property
    def minimum(self) -> int:
        return self.values[0]

    @property
    def maximum(self) -> int:
        return self.values[-1]

    @property
    def range(self) -> int:
        return self.values[-1] - self.values[0]


@dataclass(frozen=True, slots=True)
class Item:
    """One question: ``number`` is its position on the form (1..n), ``recall`` its time frame."""

    id: str
    number: int
    response_set: str
    recall: Recall
    section: str


@dataclass(frozen=True, slots=True)
class Scale:
    """A scored scale: the mean of its answered items, linearly transformed to 0-100.

    ``min_answered`` is the missing-data rule: the scale is scored only when at least that many
    of its items are answered (the EORTC half rule gives ceil(len(items) / 2)).
    """

    code: str
    name: str
    kind: ScaleKind
    items: tuple[str, ...]
    min_answered: int


@dataclass(frozen=True, slots=True)
class SummaryScore:
    """A mean of scale scores; ``reversed`` scales enter as 100 - x so that high = good.

    With ``require_all`` the summary is missing unless every component scale is scored
    (the published rule for the QLQ-C30 summary score).
    """

    code: str
    name: str
    scales: tuple[str, ...]
    reversed: tuple[str, ...]
    require_all: bool


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Flag a score below (``lt``) or at/above (``ge``) a threshold."""

    scale: str
    op: AlertOp
    threshold: float

    @property
    def code(self) -> str:
        """Stable identifier stored with each alert, e.g. ``PF2:lt:83``."""
        return f"{self.scale}:{self.op}:{self.threshold:g}"


@dataclass(frozen=True, slots=True)
class AlertPreset:
    """A published set of alert rules; ``source`` is the citation clinicians can look up."""

    code: str
    source: str
    rules: tuple[AlertRule, ...]


@dataclass(frozen=True)
class Instrument:
    """A validated instrument definition: structure and scoring rules, no wording.

    Constructing one validates every cross-reference (see :func:`load_definition` for the
    rules), so any ``Instrument`` in memory is safe to score with.
    """

    code: str
    version: str
    title: str
    response_sets: tuple[ResponseSet, ...]
    items: tuple[Item, ...]
    scales: tuple[Scale, ...]
    summary_scores: tuple[SummaryScore, ...] = ()
    alert_presets: tuple[AlertPreset, ...] = ()
    _response_sets: dict[str, ResponseSet] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _items: dict[str, Item] = field(init=False, repr=False, compare=False, hash=False)
    _scales: dict[str, Scale] = field(init=False, repr=False, compare=False, hash=False)
    _summaries: dict[str, SummaryScore] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        _validate_instrument(self)
        # Frozen: the lookup indexes are derived once here, never mutated afterwards.
        object.__setattr__(self, "_response_sets", {r.code: r for r in self.response_sets})
        object.__setattr__(self, "_items", {i.id: i for i in self.items})
        object.__setattr__(self, "_scales", {s.code: s for s in self.scales})
        object.__setattr__(self, "_summaries", {s.code: s for s in self.summary_scores})

    def item(self, item_id: str) -> Item:
        return self._items[item_id]

    def scale(self, code: str) -> Scale:
        return self._scales[code]

    def summary(self, code: str) -> SummaryScore:
        return self._summaries[code]

    def response_set(self, code: str) -> ResponseSet:
        return self._response_sets[code]

    def alert_preset(self, code: str) -> AlertPreset:
        for preset in self.alert_presets:
            if preset.code == code:
                return preset
        raise KeyError(code)

    def scale_response_set(self, code: str) -> ResponseSet:
        """The response set shared by every item of the scale (validated to be unique)."""
        scale = self._scales[code]
        return self._response_sets[self._items[scale.items[0]].response_set]

    def scale_range(self, code: str) -> int:
        """The divisor of the linear transformation: max - min of the items' values."""
        return self.scale_response_set(code).range

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(item.id for item in self.items)

    @property
    def score_codes(self) -> tuple[str, ...]:
        """Scale codes in declared order, then summary codes: the column order of exports."""
        return tuple(s.code for s in self.scales) + tuple(s.code for s in self.summary_scores)

    @property
    def scale_kinds(self) -> dict[str, ScaleKind]:
        return {scale.code: scale.kind for scale in self.scales}


def _validate_instrument(inst: Instrument) -> None:
    """Check the cross-references the JSON schema alone cannot express."""

    def fail(where: str, reason: str) -> NoReturn:
        raise InstrumentError(inst.code or "<instrument>", where, reason)

    if not _CODE.match(inst.code):
        fail("code", f"{inst.code!r} is not a code (letters, digits, '_', starting with a letter)")
    if not inst.version:
        fail("version", "must not be empty")

    response_sets: dict[str, ResponseSet] = {}
    for i, rs in enumerate(inst.response_sets):
        where = f"response_sets[{i}]"
        if rs.code in response_sets:
            fail(f"{where}.code", f"duplicate response set {rs.code!r}")
        if len(rs.values) < 2:
            fail(f"{where}.values", "needs at least two values")
        if any(b <= a for a, b in zip(rs.values, rs.values[1:])):
            fail(f"{where}.values", "must be strictly increasing integers")
        for j, value in enumerate(rs.labelled):
            if value not in rs.values:
                fail(f"{where}.labelled[{j}]", f"{value} is not one of the values")
        if len(set(rs.labelled)) != len(rs.labelled):
            fail(f"{where}.labelled", "lists a value twice")
        response_sets[rs.code] = rs

    items: dict[str, Item] = {}
    if not inst.items:
        fail("items", "an instrument needs at least one item")
    for i, item in enumerate(inst.items):
        where = f"items[{i}]"
        if not _CODE.match(item.id):
            fail(f"{where}.id", f"{item.id!r} is not an identifier")
        if item.id in items:
            fail(f"{where}.id", f"duplicate item id {item.id!r}")
        if item.number != i + 1:
            fail(f"{where}.number", f"expected {i + 1}: items are numbered 1..n in form order")
        if item.response_set not in response_sets:
            fail(f"{where}.response_set", f"unknown response set {item.response_set!r}")
        if item.recall not in RECALL_PERIODS:
            fail(f"{where}.recall", f"must be one of {', '.join(RECALL_PERIODS)}")
        if not item.section:
            fail(f"{where}.section", "must not be empty")
        items[item.id] = item

    score_codes: set[str] = set()
    for i, scale in enumerate(inst.scales):
        where = f"scales[{i}]"
        if not _CODE.match(scale.code):
            fail(f"{where}.code", f"{scale.code!r} is not a code")
        if scale.code in score_codes:
            fail(f"{where}.code", f"duplicate score code {scale.code!r}")
        score_codes.add(scale.code)
        if scale.kind not in SCALE_KINDS:
            fail(f"{where}.kind", f"must be one of {', '.join(SCALE_KINDS)}")
        if not scale.items:
            fail(f"{where}.items", "a scale needs at least one item")
        shared: str | None = None
        for j, item_id in enumerate(scale.items):
            if item_id not in items:
                fail(f"{where}.items[{j}]", f"unknown item {item_id!r}")
            if item_id in scale.items[:j]:
                fail(f"{where}.items[{j}]", f"item {item_id!r} listed twice")
            set_code = items[item_id].response_set
            if shared is not None and set_code != shared:
                fail(
                    f"{where}.items[{j}]",
                    f"item {item_id!r} uses response set {set_code!r} but the scale's other "
                    f"items use {shared!r}; a scale's range must be unambiguous",
                )
            shared = set_code
        if not 1 <= scale.min_answered <= len(scale.items):
            fail(f"{where}.min_answered", f"must be between 1 and {len(scale.items)}")

    scale_codes = {scale.code for scale in inst.scales}
    for i, summary in enumerate(inst.summary_scores):
        where = f"summary_scores[{i}]"
        if not _CODE.match(summary.code):
            fail(f"{where}.code", f"{summary.code!r} is not a code")
        if summary.code in score_codes:
            fail(f"{where}.code", f"duplicate score code {summary.code!r}")
        score_codes.add(summary.code)
        if not summary.scales:
            fail(f"{where}.scales", "a summary needs at least one scale")
        for j, code in enumerate(summary.scales):
            if code not in scale_codes:
                fail(f"{where}.scales[{j}]", f"unknown scale {code!r}")
            if code in summary.scales[:j]:
                fail(f"{where}.scales[{j}]", f"scale {code!r} listed twice")
        for j, code in enumerate(summary.reversed):
            if code not in summary.scales:
                fail(f"{where}.reversed[{j}]", f"{code!r} is not one of the summary's scales")

    preset_codes: set[str] = set()
    for i, preset in enumerate(inst.alert_presets):
        where = f"alert_presets[{i}]"
        if not _CODE.match(preset.code):
            fail(f"{where}.code", f"{preset.code!r} is not a code")
        if preset.code in preset_codes:
            fail(f"{where}.code", f"duplicate alert preset {preset.code!r}")
        preset_codes.add(preset.code)
        for j, rule in enumerate(preset.rules):
            if rule.scale not in score_codes:
                fail(f"{where}.rules[{j}].scale", f"unknown scale {rule.scale!r}")
            if rule.op not in ALERT_OPS:
                fail(f"{where}.rules[{j}].op", f"must be one of {', '.join(ALERT_OPS)}")
            if not math.isfinite(rule.threshold):
                fail(f"{where}.rules[{j}].threshold", "must be a finite number")


# --------------------------------------------------------------------------- text model


@dataclass(frozen=True)
class InstrumentText:
    """The wording of one instrument version in one locale.

    ``source`` is ``demo`` for the project's own neutral wording and ``licensed`` for official
    text loaded by a site under licence; staff views and exports say which one was shown.
    ``checksum`` (sha256 of the canonical JSON) is recorded with every assessment so the exact
    text a patient saw can be proven later. Treat the dicts as read-only.
    """

    instrument: str
    version: str
    locale: str
    source: TextSource
    title: str
    instructions: str
    sections: dict[str, str]
    recall: dict[str, str]
    items: dict[str, str]
    response_labels: dict[str, dict[int, str]]
    checksum: str


def text_checksum(obj: object) -> str:
    """sha256 hex of the canonical JSON form, independent of key order and whitespace."""
    canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------- JSON reading


class _Node:
    """A JSON object being read field by field, remembering its path for error messages."""

    def __init__(self, value: object, file: str, path: str) -> None:
        if not isinstance(value, dict):
            raise InstrumentError(file, path, f"expected an object, got {_json_type(value)}")
        for key in value:
            if not isinstance(key, str):
                where = f"{path}.{key}" if path else str(key)
                raise InstrumentError(file, where, "object keys must be strings (as in JSON)")
        self.data: dict[str, object] = value
        self.file = file
        self.path = path
        self._read: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, reason: str) -> InstrumentError:
        return InstrumentError(self.file, self.at(key), reason)

    def raw(self, key: str) -> object:
        self._read.add(key)
        if key not in self.data:
            raise InstrumentError(self.file, self.at(key), "required field is missing")
        return self.data[key]

    def optional(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, *, allow_empty: bool = False) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_json_type(value)}")
        if not allow_empty and not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def choice(self, key: str, choices: tuple[_Choice, ...]) -> _Choice:
        value = self.string(key)
        if value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def integer(self, key: str) -> int:
        return _integer(self.raw(key), self.file, self.at(key))

    def number(self, key: str) -> float:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number, got {_json_type(value)}")
        return float(value)

    def boolean(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_json_type(value)}")
        return value

    def array(self, key: str) -> list[object]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.fail(key, f"expected an array, got {_json_type(value)}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        out = []
        for i, value in enumerate(self.array(key)):
            if not isinstance(value, str) or not value:
                where = f"{self.at(key)}[{i}]"
                raise InstrumentError(self.file, where, "expected a non-empty string")
            out.append(value)
        return tuple(out)

    def integers(self, key: str) -> tuple[int, ...]:
        return tuple(
            _integer(value, self.file, f"{self.at(key)}[{i}]")
            for i, value in enumerate(self.array(key))
        )

    def objects(self, key: str) -> list[_Node]:
        return [
            _Node(value, self.file, f"{self.at(key)}[{i}]")
            for i, value in enumerate(self.array(key))
        ]

    def child(self, key: str) -> _Node:
        return _Node(self.raw(key), self.file, self.at(key))

    def finish(self) -> None:
        """Reject unknown fields: a misspelt optional field must not be silently ignored."""
        for key in self.data:
            if key not in self._read:
                raise self.fail(key, "unknown field")


def _integer(value: object, file: str, where: str) -> int:
    # JSON true/false are ints to Python; a boolean where a number belongs is a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InstrumentError(file, where, f"expected an integer, got {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


def _read_json(path: Path, file_label: str) -> object:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InstrumentError(file_label, "", f"cannot read file ({exc.strerror or exc})") from exc
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InstrumentError(file_label, "", "not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        raise InstrumentError(file_label, "", reason) from exc


# --------------------------------------------------------------------------- definition loading


def load_definition(path: Path | str, *, file_label: str | None = None) -> Instrument:
    """Read and validate a ``definition.json``.

    Rules enforced: codes are identifiers; response-set values strictly increasing with the
    labelled ones among them; item ids unique and numbered 1..n in order; every reference
    (item -> response set, scale -> items, summary -> scales, alert rule -> score) resolves;
    the items of a scale share one response set (so its range is unambiguous);
    ``min_answered`` is within 1..len(items); reversed scales belong to their summary; alert
    operators are ``lt``/``ge``; and no field is unknown or of the wrong JSON type.
    """
    path = Path(path)
    label = file_label or path.name
    return parse_definition(_read_json(path, label), file_label=label)


def parse_definition(obj: object, *, file_label: str = "definition.json") -> Instrument:
    """Validate an already parsed definition object (see :func:`load_definition`)."""
    root = _Node(obj, file_label, "")
    code = root.string("code")
    version = root.string("version")
    title = root.string("title")
    response_sets = tuple(_parse_response_set(node) for node in root.objects("response_sets"))
    items = tuple(_parse_item(node) for node in root.objects("items"))
    scales = tuple(_parse_scale(node) for node in root.objects("scales"))
    summaries = (
        tuple(_parse_summary(node) for node in root.objects("summary_scores"))
        if root.optional("summary_scores")
        else ()
    )
    presets = (
        tuple(_parse_preset(node) for node in root.objects("alert_presets"))
        if root.optional("alert_presets")
        else ()
    )
    root.finish()
    try:
        return Instrument(code, version, title, response_sets, items, scales, summaries, presets)
    except InstrumentError as exc:
        raise InstrumentError(file_label, exc.field, exc.reason) from None


def _parse_response_set(node: _Node) -> ResponseSet:
    result = ResponseSet(node.string("code"), node.integers("values"), node.integers("labelled"))
    node.finish()
    return result


def _parse_item(node: _Node) -> Item:
    result = Item(
        id=node.string("id"),
        number=node.integer("number"),
        response_set=node.string("response_set"),
        recall=node.choice("recall", RECALL_PERIODS),
        section=node.string("section"),
    )
    node.finish()
    return result


def _parse_scale(node: _Node) -> Scale:
    result = Scale(
        code=node.string("code"),
        name=node.string("name"),
        kind=node.choice("kind", SCALE_KINDS),
        items=node.strings("items"),
        min_answered=node.integer("min_answered"),
    )
    node.finish()
    return result


def _parse_summary(node: _Node) -> SummaryScore:
    result = SummaryScore(
        code=node.string("code"),
        name=node.string("name"),
        scales=node.strings("scales"),
        reversed=node.strings("reversed"),
        require_all=node.boolean("require_all"),
    )
    node.finish()
    return result


def _parse_preset(node: _Node) -> AlertPreset:
    rules = []
    for rule_node in node.objects("rules"):
        rules.append(
            AlertRule(
                scale=rule_node.string("scale"),
                op=rule_node.choice("op", ALERT_OPS),
                threshold=rule_node.number("threshold"),
            )
        )
        rule_node.finish()
    result = AlertPreset(code=node.string("code"), source=node.string("source"), rules=tuple(rules))
    node.finish()
    return result


# --------------------------------------------------------------------------- text loading


def load_text(
    path_or_mapping: Path | str | Mapping[str, object],
    instrument: Instrument,
    *,
    file_label: str | None = None,
) -> InstrumentText:
    """Read and validate the wording of ``instrument`` in one locale.

    Rules enforced: instrument code and version match the definition; ``source`` is ``demo``
    or ``licensed``; the locale looks like a locale (``en``, ``pt_BR``, ``zh-Hant``); every item
    has non-empty text and no unknown item is present; each response set has a label for
    exactly its labelled values; section headers exist for exactly the sections the items use;
    recall texts exist for exactly the recall periods (other than ``none``) the items use.
    A mapping (e.g. a site's licensed text held in the database) is validated the same way.
    """
    if isinstance(path_or_mapping, Mapping):
        obj: object = dict(path_or_mapping)
        label = file_label or "<text>"
    else:
        path = Path(path_or_mapping)
        label = file_label or path.name
        obj = _read_json(path, label)
    return _parse_text(obj, instrument, label)


def _parse_text(obj: object, inst: Instrument, file_label: str) -> InstrumentText:
    root = _Node(obj, file_label, "")
    code = root.string("instrument")
    if code != inst.code:
        raise root.fail("instrument", f"{code!r} does not match the definition ({inst.code!r})")
    version = root.string("version")
    if version != inst.version:
        raise root.fail("version", f"{version!r} does not match the definition ({inst.version!r})")
    locale = root.string("locale")
    if not _LOCALE.match(locale):
        raise root.fail("locale", f"{locale!r} is not a locale code such as 'en' or 'pt_BR'")
    source = root.choice("source", TEXT_SOURCES)
    title = root.string("title")
    instructions = root.string("instructions")

    used_sections = {item.section for item in inst.items}
    sections = _text_map(root.child("sections"), used_sections, "section", allow_empty=True)
    used_recalls = {item.recall for item in inst.items} - {"none"}
    recall = _text_map(root.child("recall"), used_recalls, "recall period", allow_empty=False)
    items = _text_map(root.child("items"), set(inst.item_ids), "item", allow_empty=False)
    # Keep the items in form order whatever the file's order, so callers can iterate it.
    items = {item_id: items[item_id] for item_id in inst.item_ids}

    labels_node = root.child("response_labels")
    response_labels: dict[str, dict[int, str]] = {}
    for rs in inst.response_sets:
        response_labels[rs.code] = _labels(labels_node, rs)
    for key in labels_node.data:
        if key not in response_labels:
            raise labels_node.fail(key, "unknown response set")
    root.finish()
    return InstrumentText(
        instrument=code,
        version=version,
        locale=locale,
        source=source,
        title=title,
        instructions=instructions,
        sections=sections,
        recall=recall,
        items=items,
        response_labels=response_labels,
        checksum=text_checksum(obj),
    )


def _text_map(
    node: _Node, expected: AbstractSet[str], what: str, *, allow_empty: bool
) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in node.data:
        if key not in expected:
            raise node.fail(key, f"unknown {what}")
        out[key] = node.string(key, allow_empty=allow_empty)
    missing = sorted(expected - out.keys())
    if missing:
        raise node.fail(missing[0], f"text for this {what} is missing")
    return out


def _labels(parent: _Node, rs: ResponseSet) -> dict[int, str]:
    if not parent.optional(rs.code):
        if not rs.labelled:
            return {}
        raise parent.fail(rs.code, "labels for this response set are missing")
    node = parent.child(rs.code)
    labels: dict[int, str] = {}
    for key in node.data:
        value = int(key) if re.fullmatch(r"-?\d+", key) else None
        if value is None or value not in rs.labelled:
            allowed = ", ".join(str(v) for v in rs.labelled) or "none"
            raise node.fail(key, f"no label allowed for this value (labelled values: {allowed})")
        labels[value] = node.string(key)
    for value in rs.labelled:
        if value not in labels:
            raise node.fail(str(value), "label is missing")
    return {value: labels[value] for value in rs.labelled}


# --------------------------------------------------------------------------- registry


class InstrumentRegistry:
    """Every instrument definition and text found in a directory, validated at start.

    Layout: ``<directory>/<code>/definition.json`` and ``<directory>/<code>/text/<locale>.json``.
    The folder name must equal the definition's code and the file name the text's locale, so
    what a file is called and what it says cannot drift apart. Folders starting with ``_`` or
    ``.`` (e.g. ``__pycache__``) are skipped.
    """

    def __init__(self, instruments: Iterable[Instrument], texts: Iterable[InstrumentText] = ()):
        self._instruments: dict[str, Instrument] = {}
        for inst in instruments:
            if inst.code in self._instruments:
                raise ValueError(f"instrument {inst.code!r} registered twice")
            self._instruments[inst.code] = inst
        self._texts: dict[str, dict[str, InstrumentText]] = {code: {} for code in self._instruments}
        for text in texts:
            owner = self.get(text.instrument, text.version)
            self._texts[owner.code][text.locale] = text

    @classmethod
    def load(cls, directory: Path | str) -> InstrumentRegistry:
        directory = Path(directory)
        if not directory.is_dir():
            raise InstrumentError(str(directory), "", "instrument directory does not exist")
        instruments: list[Instrument] = []
        texts: list[InstrumentText] = []
        for folder in sorted(directory.iterdir()):
            if not folder.is_dir() or folder.name.startswith(("_", ".")):
                continue
            label = f"{folder.name}/definition.json"
            inst = load_definition(folder / "definition.json", file_label=label)
            if inst.code != folder.name:
                reason = f"{inst.code!r} does not match the folder name"
                raise InstrumentError(label, "code", reason)
            instruments.append(inst)
            text_dir = folder / "text"
            if text_dir.is_dir():
                for text_file in sorted(text_dir.glob("*.json")):
                    text_label = f"{folder.name}/text/{text_file.name}"
                    text = load_text(text_file, inst, file_label=text_label)
                    if text.locale != text_file.stem:
                        reason = f"{text.locale!r} does not match the file name"
                        raise InstrumentError(text_label, "locale", reason)
                    texts.append(text)
        return cls(instruments, texts)

    def get(self, code: str, version: str | None = None) -> Instrument:
        """The instrument ``code``; with ``version``, only if that exact version is held."""
        inst = self._instruments.get(code)
        if inst is None:
            known = ", ".join(sorted(self._instruments)) or "none"
            raise NotRegisteredError(f"unknown instrument {code!r} (available: {known})")
        if version is not None and inst.version != version:
            raise NotRegisteredError(
                f"instrument {code!r} version {version!r} is not available (have {inst.version!r})"
            )
        return inst

    def text(self, code: str, locale: str) -> InstrumentText:
        texts = self._texts.get(self.get(code).code, {})
        if locale not in texts:
            known = ", ".join(sorted(texts)) or "none"
            raise NotRegisteredError(f"no {locale!r} text for {code!r} (available: {known})")
        return texts[locale]

    def locales(self, code: str) -> tuple[str, ...]:
        return tuple(sorted(self._texts[self.get(code).code]))

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._instruments.values())

    def __len__(self) -> int:
        return len(self._instruments)

    def __contains__(self, code: object) -> bool:
        return code in self._instruments


@functools.lru_cache(maxsize=1)
def default_registry() -> InstrumentRegistry:
    """The instruments shipped in ``pro_app/instruments`` (loaded once per process)."""
    return InstrumentRegistry.load(Path(__file__).resolve().parent.parent / "instruments")
