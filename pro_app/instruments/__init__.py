"""Instrument data: one folder per instrument with ``definition.json`` and ``text/<locale>.json``.

This is a data package, not code: the files are loaded and validated by
:mod:`pro_app.domain.instruments` (see ``docs/scoring.md`` for the format).
"""

from pathlib import Path

INSTRUMENTS_DIR = Path(__file__).parent
