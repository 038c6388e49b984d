"""The access log of the real server never shows a patient's link token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pro_app.db.migrate import upgrade
from pro_app.gunicorn_logging import redact_path

ROOT = Path(__file__).resolve().parents[2]


def test_redact_path() -> None:
    assert redact_path("/p/abcDEF123_-xyz") == "/p/[token]"
    assert redact_path("/q/3") == "/q/3"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_gunicorn_access_log_redacts_tokens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.sqlite3'}"
    upgrade(url)
    port = _free_port()
    log = tmp_path / "access.log"
    env = {**os.environ, "PRO_SECRET_KEY": "log-test", "PRO_DATABASE_URL": url}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--logger-class", "pro_app.gunicorn_logging.RedactingLogger", "--access-logfile", str(log),
         "--access-logformat", '%(h)s "%(r)s" %(s)s', "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    token = "SuperSecretToken1234567890abcdefghijklmn"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/p/{token}?lang=es", timeout=5)
        except urllib.error.HTTPError as error:
            assert error.code == 404
    finally:
        server.terminate()
        server.wait(timeout=10)
    text = log.read_text(encoding="utf-8")
    assert "/p/[token]" in text and token not in text and "lang=es" not in text
