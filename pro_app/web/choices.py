"""Options of select and radio fields, in the form WTForms 3.3+ declares them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wtforms.fields.choices import SelectChoice


def options(pairs: Iterable[tuple[Any, Any]]) -> list[SelectChoice]:
    """``[(value, label), ...]`` as select options (labels may be lazy translations)."""
    return [SelectChoice(value, label) for value, label in pairs]
