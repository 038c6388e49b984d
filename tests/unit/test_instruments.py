"""Instrument definitions and texts: the shipped QLQ-C30 data and the loud validation."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pro_app.domain.instruments import (
    AlertRule,
    Instrument,
    InstrumentError,
    InstrumentRegistry,
    NotRegisteredError,
    default_registry,
    load_definition,
    load_text,
    parse_definition,
    text_checksum,
)

SHIPPED = Path(__file__).resolve().parents[2] / "pro_app" / "instruments"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "instruments"
C30_DEFINITION = json.loads((SHIPPED / "qlq_c30" / "definition.json").read_text())
C30_TEXT = json.loads((SHIPPED / "qlq_c30" / "text" / "en.json").read_text())


@pytest.fixture(scope="module")
def c30() -> Instrument:
    return default_registry().get("qlq_c30")


# --------------------------------------------------------------------------- shipped QLQ-C30


EXPECTED_SCALES = {
    "QL2": ("global", [29, 30]),
    "PF2": ("functional", [1, 2, 3, 4, 5]),
    "RF2": ("functional", [6, 7]),
    "EF": ("functional", [21, 22, 23, 24]),
    "CF": ("functional", [20, 25]),
    "SF": ("functional", [26, 27]),
    "FA": ("symptom", [10, 12, 18]),
    "NV": ("symptom", [14, 15]),
    "PA": ("symptom", [9, 19]),
    "DY": ("symptom", [8]),
    "SL": ("symptom", [11]),
    "AP": ("symptom", [13]),
    "CO": ("symptom", [16]),
    "DI": ("symptom", [17]),
    "FI": ("symptom", [28]),
}


def test_qlq_c30_structure(c30: Instrument) -> None:
    assert (c30.code, c30.version) == ("qlq_c30", "3.0")
    assert c30.item_ids == tuple(f"q{n}" for n in range(1, 31))
    assert [c30.item(f"q{n}").response_set for n in (1, 28, 29, 30)] == [
        "four_point", "four_point", "seven_point", "seven_point"
    ]
    assert {c30.item(f"q{n}").recall for n in range(1, 6)} == {"none"}
    assert {c30.item(f"q{n}").recall for n in range(6, 31)} == {"past_week"}
    assert c30.response_set("four_point").labelled == (1, 2, 3, 4)
    assert c30.response_set("seven_point").labelled == (1, 7)


def test_qlq_c30_scales_in_order_with_half_rule(c30: Instrument) -> None:
    assert [s.code for s in c30.scales] == list(EXPECTED_SCALES)
    for scale in c30.scales:
        kind, numbers = EXPECTED_SCALES[scale.code]
        assert scale.kind == kind
        assert scale.items == tuple(f"q{n}" for n in numbers)
        assert scale.min_answered == -(-len(numbers) // 2)
    assert c30.scale_range("QL2") == 6
    assert c30.scale_range("PF2") == 3
    assert c30.score_codes == tuple(EXPECTED_SCALES) + ("C30SUM",)


def test_qlq_c30_giesinger_thresholds(c30: Instrument) -> None:
    preset = c30.alert_preset("giesinger_2020_thresholds")
    assert "J Clin Epidemiol 2020;118:1-8" in preset.source
    assert {(r.scale, r.op, r.threshold) for r in preset.rules} == {
        ("PF2", "lt", 83), ("RF2", "lt", 58), ("EF", "lt", 71), ("CF", "lt", 75),
        ("SF", "lt", 58), ("FA", "ge", 39), ("NV", "ge", 8), ("PA", "ge", 25),
        ("DY", "ge", 17), ("SL", "ge", 50), ("AP", "ge", 50), ("CO", "ge", 50),
        ("DI", "ge", 17), ("FI", "ge", 17),
    }
    assert AlertRule("PF2", "lt", 83.0).code == "PF2:lt:83"


def test_shipped_english_text_is_our_own_demo_wording(c30: Instrument) -> None:
    text = default_registry().text("qlq_c30", "en")
    assert text.source == "demo"
    assert list(text.items) == list(c30.item_ids)
    assert all(wording.strip() for wording in text.items.values())
    assert len(set(text.items.values())) == 30
    assert set(text.response_labels["four_point"]) == {1, 2, 3, 4}
    # Items 29-30: only the end points carry words; 2-6 are shown as bare numbers.
    assert set(text.response_labels["seven_point"]) == {1, 7}
    assert text.recall.keys() == {"past_week"}
    assert text.checksum == text_checksum(C30_TEXT)


def test_every_shipped_text_is_demo_wording() -> None:
    registry = default_registry()
    for instrument in registry:
        for locale in registry.locales(instrument.code):
            assert registry.text(instrument.code, locale).source == "demo"


def test_default_registry_is_loaded_once() -> None:
    assert default_registry() is default_registry()
    assert "qlq_c30" in default_registry()


# --------------------------------------------------------------------------- checksum


def test_checksum_ignores_formatting_and_key_order_but_not_wording(c30: Instrument) -> None:
    reordered = dict(reversed(list(C30_TEXT.items())))
    assert load_text(reordered, c30).checksum == load_text(C30_TEXT, c30).checksum
    changed = copy.deepcopy(C30_TEXT)
    changed["items"]["q1"] += " "
    assert load_text(changed, c30).checksum != load_text(C30_TEXT, c30).checksum


def test_checksum_is_sha256_of_canonical_json() -> None:
    assert text_checksum({"b": "é", "a": [1, 2]}) == (
        __import__("hashlib").sha256('{"a":[1,2],"b":"é"}'.encode()).hexdigest()
    )


# --------------------------------------------------------------------------- definition errors

Mutation = Callable[[dict[str, Any]], object]


def _set(path: str, value: object) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = value

    return mutate


def _delete(key: str) -> Mutation:
    return lambda obj: obj.pop(key)


BROKEN_DEFINITIONS: list[tuple[str, Mutation, str, str]] = [
    ("missing code", _delete("code"), "code", "required field is missing"),
    ("version not a string", _set("version", 3.0), "version", "expected a string"),
    ("empty title", _set("title", " "), "title", "must not be empty"),
    ("unknown field", _set("colour", "red"), "colour", "unknown field"),
    ("items not an array", _set("items", {}), "items", "expected an array"),
    ("item not an object", _set("items.2", "q3"), "items[2]", "expected an object"),
    ("bad code", _set("code", "qlq c30"), "code", "is not a code"),
    ("duplicate response set", _set("response_sets.1.code", "four_point"),
     "response_sets[1].code", "duplicate response set"),
    ("values not increasing", _set("response_sets.0.values", [1, 3, 2, 4]),
     "response_sets[0].values", "strictly increasing"),
    ("value not an integer", _set("response_sets.0.values", [1, 2, 3, 4.5]),
     "response_sets[0].values[3]", "expected an integer"),
    ("boolean value", _set("response_sets.0.values", [True, 2, 3, 4]),
     "response_sets[0].values[0]", "expected an integer"),
    ("labelled outside values", _set("response_sets.1.labelled", [1, 8]),
     "response_sets[1].labelled[1]", "8 is not one of the values"),
    ("duplicate item id", _set("items.3.id", "q3"), "items[3].id", "duplicate item id 'q3'"),
    ("item number out of order", _set("items.3.number", 5), "items[3].number", "expected 4"),
    ("unknown response set", _set("items.3.response_set", "x"),
     "items[3].response_set", "unknown response set 'x'"),
    ("unknown recall", _set("items.6.recall", "past_month"), "items[6].recall", "is not one of"),
    ("unknown item in scale", _set("scales.1.items.0", "q99"),
     "scales[1].items[0]", "unknown item 'q99'"),
    ("item twice in scale", _set("scales.1.items.1", "q1"), "scales[1].items[1]", "listed twice"),
    ("mixed response sets", _set("scales.0.items", ["q28", "q29"]),
     "scales[0].items[1]", "range must be unambiguous"),
    ("min_answered zero", _set("scales.1.min_answered", 0),
     "scales[1].min_answered", "between 1 and 5"),
    ("min_answered too large", _set("scales.1.min_answered", 6),
     "scales[1].min_answered", "between 1 and 5"),
    ("unknown kind", _set("scales.1.kind", "physical"), "scales[1].kind", "is not one of"),
    ("duplicate scale", _set("scales.2.code", "PF2"), "scales[2].code", "duplicate score code"),
    ("summary unknown scale", _set("summary_scores.0.scales.0", "XX"),
     "summary_scores[0].scales[0]", "unknown scale 'XX'"),
    ("reversed not in summary", _set("summary_scores.0.reversed.0", "FI"),
     "summary_scores[0].reversed[0]", "not one of the summary's scales"),
    ("require_all not boolean", _set("summary_scores.0.require_all", "yes"),
     "summary_scores[0].require_all", "expected true or false"),
    ("summary code clashes", _set("summary_scores.0.code", "QL2"),
     "summary_scores[0].code", "duplicate score code"),
    ("alert unknown scale", _set("alert_presets.0.rules.0.scale", "XX"),
     "alert_presets[0].rules[0].scale", "unknown scale 'XX'"),
    ("alert bad op", _set("alert_presets.0.rules.0.op", "le"),
     "alert_presets[0].rules[0].op", "is not one of lt, ge"),
    ("alert threshold string", _set("alert_presets.0.rules.0.threshold", "83"),
     "alert_presets[0].rules[0].threshold", "expected a number"),
]


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [case[1:] for case in BROKEN_DEFINITIONS],
    ids=[case[0] for case in BROKEN_DEFINITIONS],
)
def test_broken_definition_names_file_field_and_reason(
    tmp_path: Path, mutate: Mutation, field: str, reason: str
) -> None:
    broken = copy.deepcopy(C30_DEFINITION)
    mutate(broken)
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(InstrumentError) as caught:
        load_definition(path)
    error = caught.value
    assert (error.file, error.field) == ("definition.json", field)
    assert reason in error.reason
    assert str(error) == f"definition.json: {field}: {error.reason}"


def test_error_message_format() -> None:
    broken = copy.deepcopy(C30_DEFINITION)
    broken["items"][3]["response_set"] = "x"
    with pytest.raises(InstrumentError) as caught:
        parse_definition(broken)
    assert str(caught.value) == "definition.json: items[3].response_set: unknown response set 'x'"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"code": "qlq_c30",', "not valid JSON (line 1"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[1, 2]", "expected an object, got an array"),
    ],
)
def test_unreadable_definition_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "definition.json"
    path.write_bytes(content)
    with pytest.raises(InstrumentError, match="^definition.json: ") as caught:
        load_definition(path)
    assert reason in caught.value.reason


def test_missing_definition_file(tmp_path: Path) -> None:
    with pytest.raises(InstrumentError, match="cannot read file"):
        load_definition(tmp_path / "definition.json")


def test_instrument_built_in_code_is_validated_too(c30: Instrument) -> None:
    with pytest.raises(InstrumentError, match="scales\\[0\\].min_answered"):
        Instrument(
            "demo", "1", "Demo", c30.response_sets, c30.items,
            (c30.scales[0].__class__("X", "X", "symptom", ("q1",), 2),),
        )


# --------------------------------------------------------------------------- text errors


BROKEN_TEXTS: list[tuple[str, Mutation, str, str]] = [
    ("missing item", lambda t: t["items"].pop("q7"), "items.q7", "text for this item is missing"),
    ("empty item", _set("items.q7", "  "), "items.q7", "must not be empty"),
    ("unknown item", _set("items.q31", "Extra?"), "items.q31", "unknown item"),
    ("extra label", _set("response_labels.seven_point.4", "Middling"),
     "response_labels.seven_point.4", "no label allowed for this value"),
    ("missing label", lambda t: t["response_labels"]["four_point"].pop("3"),
     "response_labels.four_point.3", "label is missing"),
    ("label set missing", lambda t: t["response_labels"].pop("seven_point"),
     "response_labels.seven_point", "labels for this response set are missing"),
    ("unknown label set", _set("response_labels.eleven_point", {}),
     "response_labels.eleven_point", "unknown response set"),
    ("wrong source", _set("source", "official"), "source", "is not one of demo, licensed"),
    ("bad locale", _set("locale", "English"), "locale", "is not a locale code"),
    ("other instrument", _set("instrument", "qlq_c15"), "instrument", "does not match"),
    ("other version", _set("version", "2.0"), "version", "does not match"),
    ("missing recall", _set("recall", {}), "recall.past_week", "missing"),
    ("unknown section", _set("sections.extra", "More"), "sections.extra", "unknown section"),
    ("unknown field", _set("notes", "x"), "notes", "unknown field"),
]


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [case[1:] for case in BROKEN_TEXTS],
    ids=[case[0] for case in BROKEN_TEXTS],
)
def test_broken_text_names_file_field_and_reason(
    c30: Instrument, mutate: Mutation, field: str, reason: str
) -> None:
    broken = copy.deepcopy(C30_TEXT)
    mutate(broken)
    with pytest.raises(InstrumentError) as caught:
        load_text(broken, c30, file_label="qlq_c30/text/en.json")
    assert (caught.value.file, caught.value.field) == ("qlq_c30/text/en.json", field)
    assert reason in caught.value.reason


def test_text_mapping_with_non_string_keys_is_refused(c30: Instrument) -> None:
    broken = copy.deepcopy(C30_TEXT)
    broken["response_labels"]["seven_point"] = {1: "Worst", 7: "Best"}
    with pytest.raises(InstrumentError, match="response_labels.seven_point.1: object keys"):
        load_text(broken, c30)


def test_licensed_text_is_accepted(c30: Instrument) -> None:
    licensed = dict(copy.deepcopy(C30_TEXT), source="licensed", locale="pt_BR")
    text = load_text(licensed, c30)
    assert (text.source, text.locale) == ("licensed", "pt_BR")


# --------------------------------------------------------------------------- registry


@pytest.fixture()
def instruments_dir(tmp_path: Path) -> Path:
    root = tmp_path / "instruments"
    shutil.copytree(SHIPPED / "qlq_c30", root / "qlq_c30")
    shutil.copytree(FIXTURES / "tiny", root / "tiny")
    (root / "__pycache__").mkdir()
    return root


def test_registry_loads_every_instrument_and_locale(instruments_dir: Path) -> None:
    registry = InstrumentRegistry.load(instruments_dir)
    assert sorted(i.code for i in registry) == ["qlq_c30", "tiny"]
    assert len(registry) == 2
    assert registry.get("tiny", "1.0").title.startswith("Tiny")
    assert "en" in registry.locales("qlq_c30")
    assert registry.locales("tiny") == ("en",)
    assert registry.text("tiny", "en").items["t1"]


def test_registry_lookups_fail_clearly(instruments_dir: Path) -> None:
    registry = InstrumentRegistry.load(instruments_dir)
    with pytest.raises(NotRegisteredError, match="unknown instrument 'qlq_c15'") as caught:
        registry.get("qlq_c15")
    assert isinstance(caught.value, KeyError)
    assert str(caught.value).endswith("(available: qlq_c30, tiny)")
    with pytest.raises(NotRegisteredError, match="version '2.0' is not available"):
        registry.get("qlq_c30", "2.0")
    with pytest.raises(NotRegisteredError, match="no 'de' text for 'qlq_c30'"):
        registry.text("qlq_c30", "de")


def test_registry_fails_loudly_on_a_broken_text(instruments_dir: Path) -> None:
    (instruments_dir / "tiny" / "text" / "fr.json").write_text("{")
    with pytest.raises(InstrumentError, match="^tiny/text/fr.json: not valid JSON"):
        InstrumentRegistry.load(instruments_dir)


def test_registry_requires_locale_to_match_file_name(instruments_dir: Path) -> None:
    shutil.copy(instruments_dir / "tiny" / "text" / "en.json", instruments_dir / "tiny" / "text" / "de.json")
    with pytest.raises(InstrumentError, match="^tiny/text/de.json: locale: 'en' does not match"):
        InstrumentRegistry.load(instruments_dir)


def test_registry_requires_code_to_match_folder(instruments_dir: Path) -> None:
    (instruments_dir / "tiny").rename(instruments_dir / "small")
    with pytest.raises(InstrumentError, match="^small/definition.json: code: 'tiny' does not match"):
        InstrumentRegistry.load(instruments_dir)


def test_registry_requires_a_definition_in_each_folder(instruments_dir: Path) -> None:
    (instruments_dir / "empty").mkdir()
    with pytest.raises(InstrumentError, match="^empty/definition.json: cannot read file"):
        InstrumentRegistry.load(instruments_dir)


def test_registry_requires_the_directory(tmp_path: Path) -> None:
    with pytest.raises(InstrumentError, match="does not exist"):
        InstrumentRegistry.load(tmp_path / "nowhere")
