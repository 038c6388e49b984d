"""Static assets are sent gzip-compressed to browsers that accept it, the file itself otherwise.

No database is involved: the app here is built on a SQLite file that is never opened.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pro_app import create_app
from tests.conftest import app_config

STATIC = Path(__file__).resolve().parents[2] / "pro_app" / "static"
ASSETS = sorted(p for p in STATIC.rglob("*") if p.suffix in (".css", ".js"))
BROWSER = {"Accept-Encoding": "gzip, deflate, br"}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(app_config(DATABASE_URL=f"sqlite:///{tmp_path / 'unused.sqlite3'}"))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def own_static(app: Flask, tmp_path: Path) -> Path:
    """The app serving a static folder of the test's own."""
    folder = tmp_path / "static"
    folder.mkdir()
    app.static_folder = str(folder)
    return folder


def path_of(asset: Path) -> str:
    return f"/static/{asset.relative_to(STATIC).as_posix()}"


def test_the_stylesheets_and_scripts_are_sent_compressed_to_a_browser(client: FlaskClient) -> None:
    assert {asset.name for asset in ASSETS} >= {"app.css", "staff.css", "questionnaire.js"}
    for asset in ASSETS:
        response = client.get(path_of(asset), headers=BROWSER)
        assert response.status_code == 200, asset
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(response.data) == asset.read_bytes(), "the same bytes, compressed"
        assert int(response.headers["Content-Length"]) == len(response.data) < asset.stat().st_size
        assert "Accept-Encoding" in response.vary
        assert response.mimetype == ("text/css" if asset.suffix == ".css" else "text/javascript")
        assert response.headers["ETag"].startswith('W/"'), "the same content in another encoding: a weak tag"
        assert "max-age" in response.headers["Cache-Control"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("accepted", [None, "identity", "gzip;q=0", "br", "deflate", "gzip;q=abc", ";;;", "g" * 5000])
def test_without_gzip_accepted_the_file_is_sent_as_it_is(client: FlaskClient, accepted: str | None) -> None:
    asset = STATIC / "css" / "app.css"
    response = client.get(path_of(asset), headers={} if accepted is None else {"Accept-Encoding": accepted})
    assert response.status_code == 200
    assert "Content-Encoding" not in response.headers
    assert response.data == asset.read_bytes()
    assert "Accept-Encoding" in response.vary, "a shared cache must keep the two answers apart"
    assert "max-age" in response.headers["Cache-Control"]


@pytest.mark.parametrize("accepted", ["GZIP", "*", "deflate;q=0.5, gzip;q=0.2", "*;q=0, gzip"])
def test_gzip_accepted_in_any_spelling_is_used(client: FlaskClient, accepted: str) -> None:
    response = client.get(path_of(STATIC / "css" / "app.css"), headers={"Accept-Encoding": accepted})
    assert response.status_code == 200 and response.headers["Content-Encoding"] == "gzip"


def test_a_compressed_asset_is_revalidated_with_its_own_tag_or_date(client: FlaskClient) -> None:
    path = path_of(STATIC / "js" / "questionnaire.js")
    first = client.get(path, headers=BROWSER)
    again = client.get(path, headers={**BROWSER, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert "max-age" in again.headers["Cache-Control"] and "Accept-Encoding" in again.vary
    dated = client.get(path, headers={**BROWSER, "If-Modified-Since": first.headers["Last-Modified"]})
    assert dated.status_code == 304
    # The plain file's tag names another representation: the compressed one is sent in full.
    plain = client.get(path)
    other = client.get(path, headers={**BROWSER, "If-None-Match": plain.headers["ETag"]})
    assert other.status_code == 200 and other.headers["Content-Encoding"] == "gzip"
    assert other.headers["ETag"] != plain.headers["ETag"]


def test_a_byte_range_is_answered_from_the_file_itself(client: FlaskClient) -> None:
    asset = STATIC / "css" / "app.css"
    response = client.get(path_of(asset), headers={**BROWSER, "Range": "bytes=0-9"})
    assert response.status_code == 206
    assert "Content-Encoding" not in response.headers
    assert response.data == asset.read_bytes()[:10]


def test_head_gives_the_compressed_length_without_a_body(client: FlaskClient) -> None:
    path = path_of(STATIC / "js" / "questionnaire.js")
    full = client.get(path, headers=BROWSER)
    head = client.head(path, headers=BROWSER)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Encoding"] == "gzip"
    assert head.headers["Content-Length"] == full.headers["Content-Length"]


def test_an_asset_changed_on_disk_is_compressed_again(client: FlaskClient, own_static: Path) -> None:
    asset = own_static / "site.css"
    asset.write_text("body { color: black; }\n" * 40)
    first = client.get("/static/site.css", headers=BROWSER)
    assert gzip.decompress(first.data) == asset.read_bytes()
    asset.write_text("body { color: navy; }\n" * 50)
    later = os.stat(asset).st_mtime_ns + 2_000_000_000  # a later modification time, as an edit leaves
    os.utime(asset, ns=(later, later))
    second = client.get("/static/site.css", headers=BROWSER)
    assert gzip.decompress(second.data) == asset.read_bytes()
    assert second.headers["ETag"] != first.headers["ETag"]


def test_files_that_do_not_gain_are_sent_as_they_are(client: FlaskClient, own_static: Path) -> None:
    (own_static / "tiny.css").write_text("a{}")  # gzip's own header is longer than this
    (own_static / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 2000)  # compressed by its format
    tiny = client.get("/static/tiny.css", headers=BROWSER)
    assert tiny.status_code == 200 and tiny.data == b"a{}" and "Content-Encoding" not in tiny.headers
    image = client.get("/static/logo.png", headers=BROWSER)
    assert image.status_code == 200 and "Content-Encoding" not in image.headers
    assert "Accept-Encoding" not in image.vary


@pytest.mark.parametrize("path", ["/static/css/missing.css", "/static/../config.py", "/static/%2e%2e/config.py",
                                  "/static/css", "/static/css/"])
def test_missing_and_outside_files_are_not_found(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers=BROWSER)
    assert response.status_code == 404
    assert "Content-Encoding" not in response.headers
    assert "no-store" in response.headers["Cache-Control"]
