"""The message catalogues are complete, consistent and compiled; nothing is left unmarked."""

from __future__ import annotations

import gettext
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from pro_app.config import DEFAULTS
from pro_app.domain.instruments import default_registry

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "translations"
TEMPLATES = ROOT / "pro_app" / "templates"
LOCALES = list(DEFAULTS["LOCALES"])
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def _catalog(locale: str) -> Catalog:
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=locale)


def _pot_ids(path: Path) -> set[str]:
    with path.open("rb") as handle:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(handle) if m.id}


def test_shipped_languages() -> None:
    assert LOCALES == ["en", "zh_Hans", "es", "ar"]
    for locale in LOCALES:
        assert (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").is_file()
        assert default_registry().text("qlq_c30", locale).source == "demo"


@pytest.mark.parametrize("locale", LOCALES)
def test_catalogue_is_complete_and_not_fuzzy(locale: str) -> None:
    catalog = _catalog(locale)
    assert not catalog.fuzzy, f"{locale}: the catalogue header is marked fuzzy"
    pot = _pot_ids(TRANSLATIONS / "messages.pot")
    ids = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}
    assert ids == pot, f"{locale}: out of date with messages.pot (run make translations)"
    for message in catalog:
        if not message.id:
            continue
        assert not message.fuzzy, f"{locale}: fuzzy entry {message.id!r}"
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert strings and all(strings), f"{locale}: untranslated {message.id!r}"


@pytest.mark.parametrize("locale", LOCALES)
def test_placeholders_match_the_source(locale: str) -> None:
    for message in _catalog(locale):
        if not message.id:
            continue
        ids = (message.id,) if isinstance(message.id, str) else tuple(message.id)
        source = set(PLACEHOLDER.findall(ids[0])) | set(PLACEHOLDER.findall(ids[-1]))
        strings = (message.string,) if isinstance(message.string, str) else tuple(message.string)
        for translated in strings:
            found = set(PLACEHOLDER.findall(translated))
            # Plural forms may leave out the count itself (e.g. Arabic's singular and dual).
            assert found - source == set(), f"{locale}: {message.id!r} adds {found - source}"
            assert source - found <= {"num"}, f"{locale}: {message.id!r} drops {source - found}"


def _compiled_messages(data: bytes) -> dict[object, str]:
    """What a compiled catalogue gives gettext, without the compiler's version stamp (a new
    Babel release writes a new ``Generated-By`` header and nothing else different)."""
    messages = dict(gettext.GNUTranslations(io.BytesIO(data))._catalog)  # type: ignore[attr-defined]
    messages[""] = re.sub(r"(?m)^Generated-By: .*\n", "", messages.get("", ""))
    return messages


@pytest.mark.parametrize("locale", LOCALES)
def test_committed_mo_equals_a_fresh_compile(locale: str) -> None:
    compiled = io.BytesIO()
    write_mo(compiled, _catalog(locale), use_fuzzy=False)
    committed = (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.mo").read_bytes()
    fresh = _compiled_messages(compiled.getvalue())
    assert len(fresh) > 100
    assert _compiled_messages(committed) == fresh, f"{locale}: messages.mo is stale (run make translations)"


def test_the_compiled_comparison_sees_a_changed_translation() -> None:
    catalog = _catalog("es")
    message = next(m for m in catalog if m.id and isinstance(m.id, str) and m.string)
    message.string = f"{message.string} (changed)"
    changed = io.BytesIO()
    write_mo(changed, catalog, use_fuzzy=False)
    committed = (TRANSLATIONS / "es" / "LC_MESSAGES" / "messages.mo").read_bytes()
    assert _compiled_messages(committed) != _compiled_messages(changed.getvalue())


def test_extraction_finds_nothing_new(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg", "-k", "N_", "-k", "_l",
         "-o", str(fresh), "--no-location", "--omit-header", "--sort-output", "."],
        cwd=ROOT, check=True, capture_output=True,
    )
    committed = _pot_ids(TRANSLATIONS / "messages.pot")
    extracted = _pot_ids(fresh)
    assert extracted - committed == set(), "new strings: run make translations"
    assert committed - extracted == set(), "stale strings in messages.pot: run make translations"


# Text between tags that is not inside {{ ... }}, {% ... %} or {# ... #} would reach users
# untranslated. Symbols and numbers-only text are fine.
_JINJA = re.compile(r"{% block body_class %}.*?{% endblock %}|{{.*?}}|{%.*?%}|{#.*?#}", re.S)
_TAG = re.compile(r"<[^>]*>", re.S)


@pytest.mark.parametrize("template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_templates_have_no_unmarked_text(template: Path) -> None:
    source = template.read_text(encoding="utf-8")
    without_code = _JINJA.sub(" ", source)
    text_nodes = _TAG.sub("\n", without_code)
    leftovers = [line.strip() for line in text_nodes.splitlines() if re.search(r"[^\W\d_]{2,}", line)]
    assert leftovers == [], f"unmarked text in {template.name}: {leftovers}"
    attributes = re.findall(r'\b(?:title|alt|placeholder|aria-label)="([^"{]*[A-Za-z]{2,}[^"]*)"', without_code)
    assert attributes == [], f"unmarked attribute text in {template.name}: {attributes}"
