"""Gunicorn logging that never writes a patient's personal link.

The link token is the key to a questionnaire; it travels in the path ``/p/<token>``. Access
log lines show ``/p/[token]`` instead, wherever the path appears: the request line, the
``Referer`` (a page opened from the link), the raw URI and any other request header or
environment value a log format may name. Query strings are never logged. Gunicorn's error
log quotes the URI of a request that failed; its messages are redacted the same way.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

_TOKEN_PATH = re.compile(r"^/p/[^/?\s]+")
#: ``/p/<token>`` anywhere in a text (a full URL in a Referer, a URI in a message).
_TOKEN_ANYWHERE = re.compile(r"/p/[^/?#\s\"']+")
_QUERY = re.compile(r"\?[^\s\"']*")


def redact_path(path: str) -> str:
    return _TOKEN_PATH.sub("/p/[token]", path)


def redact_text(text: str) -> str:
    """Tokens in personal-link paths replaced, query strings dropped, anywhere in ``text``."""
    return _QUERY.sub("", _TOKEN_ANYWHERE.sub("/p/[token]", text))


def _redact(value: Any) -> Any:
    return redact_text(value) if isinstance(value, str) else value


class RedactingLogger(Logger):  # type: ignore[misc]
    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        atoms = {key: _redact(value) for key, value in atoms.items()}
        path = redact_path(atoms.get("U", ""))
        atoms["U"] = path
        atoms["q"] = ""
        atoms["r"] = f"{atoms.get('m', '')} {path} {atoms.get('H', '')}"
        return atoms

    # The error log: gunicorn quotes the request URI when a request fails.
    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().critical(_redact(msg), *map(_redact, args), **kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().error(_redact(msg), *map(_redact, args), **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().warning(_redact(msg), *map(_redact, args), **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().info(_redact(msg), *map(_redact, args), **kwargs)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().debug(_redact(msg), *map(_redact, args), **kwargs)

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().exception(_redact(msg), *map(_redact, args), **kwargs)

    def log(self, lvl: Any, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().log(lvl, _redact(msg), *map(_redact, args), **kwargs)
