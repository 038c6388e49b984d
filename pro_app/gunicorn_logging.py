"""Gunicorn access logging that never writes a patient's personal link.

The link token is the key to a questionnaire; it travels in the path ``/p/<token>``. Access
log lines show ``/p/[token]`` instead, and query strings are never logged.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

_TOKEN_PATH = re.compile(r"^/p/[^/?\s]+")


def redact_path(path: str) -> str:
    return _TOKEN_PATH.sub("/p/[token]", path)


class RedactingLogger(Logger):  # type: ignore[misc]
    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        path = redact_path(atoms.get("U", ""))
        atoms["U"] = path
        atoms["q"] = ""
        atoms["r"] = f"{atoms.get('m', '')} {path} {atoms.get('H', '')}"
        return atoms
