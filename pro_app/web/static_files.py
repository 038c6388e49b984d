"""Static assets, sent gzip-compressed to browsers that accept it.

Patients open the questionnaire on cheap phones over poor connections, often on metered data,
and gunicorn serves pro-app directly (``make run``): nothing in front compresses for it. The
stylesheet and the question page's script are most of a page's first load and compress to
about a third (docs/performance.md, "Page weight"). Each text asset is compressed once per
worker when first asked for, again when its file changes, and kept in memory: the static
folder holds a handful of small files.

A browser that accepts gzip gets the compressed bytes with an ETag of their own (weak: the
same content in another encoding) and the file's modification time, so revalidating answers
304 as it does for the file itself. Anything else (no gzip accepted, a byte range, a file
that does not compress) is Flask's own static response, the file as it is. Both kinds of
answer to a compressible asset carry ``Vary: Accept-Encoding``, so a shared cache keeps them
apart.
"""

from __future__ import annotations

import gzip
import mimetypes
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, request
from werkzeug.security import safe_join
from werkzeug.wrappers import Response

#: Media types worth compressing; images and fonts are compressed by their own formats.
COMPRESSIBLE = frozenset({
    "text/css", "text/javascript", "application/javascript", "application/json", "image/svg+xml", "text/plain",
})
#: Highest level: compressed once per file and worker, sent many times.
LEVEL = 9


@dataclass(frozen=True)
class _Compressed:
    """One file compressed: its (modification time, size) when read, and the gzip bytes (None
    when compressing does not make it smaller)."""

    stamp: tuple[int, int]
    body: bytes | None


def register(app: Flask) -> None:
    """Serve the app's static files through :class:`CompressedStatic`."""
    app.view_functions["static"] = CompressedStatic(app, app.view_functions["static"])


class CompressedStatic:
    """The ``static`` endpoint's view: the gzip variant of a compressible file when the browser
    accepts it, else Flask's own view (``serve_file``)."""

    def __init__(self, app: Flask, serve_file: Callable[..., Any]) -> None:
        self.app = app
        self.serve_file = serve_file
        self._compressed: dict[str, _Compressed] = {}

    def __call__(self, filename: str) -> Any:
        response = self._gzip_variant(filename)
        if response is not None:
            return response
        response = self.app.make_response(self.serve_file(filename=filename))
        if response.status_code in (200, 206, 304) and _media_type(filename) in COMPRESSIBLE:
            response.vary.add("Accept-Encoding")
        return response

    def _gzip_variant(self, filename: str) -> Response | None:
        if request.accept_encodings.quality("gzip") <= 0 or "Range" in request.headers:
            return None
        media_type = _media_type(filename)
        folder = self.app.static_folder
        path = safe_join(folder, filename) if folder and media_type in COMPRESSIBLE else None
        if path is None:
            return None
        try:
            found = os.stat(path)
        except OSError:
            return None  # Flask's view answers 404
        if not stat.S_ISREG(found.st_mode):
            return None
        stamp = (found.st_mtime_ns, found.st_size)
        compressed = self._compressed.get(path)
        if compressed is None or compressed.stamp != stamp:
            compressed = self._compressed[path] = _compress(path, stamp)
        if compressed.body is None:
            return None
        response = Response(compressed.body, mimetype=media_type)
        response.headers["Content-Encoding"] = "gzip"
        response.vary.add("Accept-Encoding")
        response.set_etag(f"{found.st_mtime_ns:x}-{found.st_size:x}-gzip", weak=True)
        response.last_modified = found.st_mtime
        return response.make_conditional(request)


def _media_type(filename: str) -> str | None:
    return mimetypes.guess_type(filename)[0]


def _compress(path: str, stamp: tuple[int, int]) -> _Compressed:
    with open(path, "rb") as file:
        data = file.read()
    body = gzip.compress(data, compresslevel=LEVEL, mtime=0)
    return _Compressed(stamp, body if len(body) < len(data) else None)
