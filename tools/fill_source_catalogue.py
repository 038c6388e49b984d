"""Fill the English catalogue from the source strings (English is the source language).

Run by ``make translations`` after ``pybabel update``: every English msgstr equals its msgid,
so the English catalogue is complete like every other one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.pofile import read_po, write_po


def fill(path: Path) -> int:
    with path.open("rb") as handle:
        catalog = read_po(handle, locale="en")
    catalog.fuzzy = False
    filled = 0
    for message in catalog:
        if not message.id:
            continue
        expected = message.id if isinstance(message.id, str) else tuple(message.id)
        if message.string != expected:
            message.string = expected
            filled += 1
        message.flags.discard("fuzzy")
    with path.open("wb") as handle:
        write_po(handle, catalog, omit_header=False, width=76)
    return filled


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "translations/en/LC_MESSAGES/messages.po")
    print(f"{target}: {fill(target)} English entries filled from their source strings")
