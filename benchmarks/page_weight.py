"""Page weight of the patient pages: each page with the stylesheet and script it loads, in every language.

Budget: every patient page, with everything it loads, under 20 KB transferred; no external
requests, no web fonts, no framework. Weighed: the code sign-in page, the questionnaire's start
page, each of its questions, the review and the thank-you page, in each language the app
offers (the wording and the pages' own texts differ in length, and Arabic letters take two
bytes each in UTF-8). Each page's HTML as the app sends it, and each asset it references as
sent to a browser that accepts gzip (every browser does; pro_app.web.static_files) and, for
comparison, as the file itself. ``--json`` ends the output with one JSON line of figures for
benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from _fixtures import figure, print_figures_json, temporary_app
from flask.testing import FlaskClient

from pro_app.extensions import database
from pro_app.services.demo import seed_demo

BUDGET = 20 * 1024
BROWSER = {"Accept-Encoding": "gzip, deflate, br"}


@dataclass(frozen=True)
class Weighed:
    language: str
    page: str
    html: int
    assets: tuple[str, ...]
    transferred: int  # the HTML and its assets as a browser receives them
    uncompressed: int  # the HTML and its assets' files

    @property
    def loads(self) -> str:
        return " + ".join([self.page, *self.assets])


def assets_of(body: bytes) -> list[str]:
    external = re.findall(rb'(?:src|href)="(https?:)?//', body)
    assert not external, "a patient page references an external resource"
    return sorted({match.decode() for match in re.findall(rb'(?:src|href)="(/static/[^"?#]+)', body)})


def weigh_language(client: FlaskClient, signed_out: FlaskClient, language: str,
                   asset_sizes: dict[str, tuple[int, int]]) -> list[Weighed]:
    """Every patient page in ``language``: ``client`` is the demo patient's, with the
    questionnaire started; ``signed_out`` opens the code sign-in page."""
    for browser in (client, signed_out):
        chosen = browser.post("/language", data={"lang": language, "next": "/q/"})
        assert chosen.status_code == 303, f"choosing {language}: {chosen.status_code}"
    pages = {"code sign-in page": (signed_out, "/start"), "start page": (client, "/q/")}
    pages.update({f"question {n}": (client, f"/q/{n}") for n in range(1, 31)})
    pages.update({"review": (client, "/q/review"), "thank-you page": (client, "/q/done")})
    weighed = []
    for name, (browser, path) in pages.items():
        response = browser.get(path, headers=BROWSER)
        assert response.status_code == 200, f"{path} in {language}: {response.status_code}"
        assert "Content-Encoding" not in response.headers, "pages are weighed as sent, uncompressed"
        body = response.get_data()
        assert f'lang="{language.replace("_", "-")}"'.encode() in body, f"{path} is not in {language}"
        assets = assets_of(body)
        for asset in assets:
            if asset not in asset_sizes:
                sent = client.get(asset, headers=BROWSER)
                plain = client.get(asset)
                assert sent.status_code == plain.status_code == 200, asset
                asset_sizes[asset] = (len(sent.get_data()), len(plain.get_data()))
        weighed.append(Weighed(
            language, name, len(body), tuple(asset.rsplit("/", 1)[-1] for asset in assets),
            len(body) + sum(asset_sizes[a][0] for a in assets), len(body) + sum(asset_sizes[a][1] for a in assets),
        ))
    return weighed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()
    app = temporary_app(WTF_CSRF_ENABLED=False)
    with app.app_context():
        info = seed_demo(database.session)
        database.session.commit()
    client = app.test_client()
    client.get(f"/p/{info.patient_token}")
    start = client.get("/q/").get_data(as_text=True)
    assessment = re.search(r'name="assessment"[^>]*value="(\d+)"', start)
    assert assessment, "no open assessment in the demo"
    client.post("/q/start", data={"assessment": assessment.group(1)})
    asset_sizes: dict[str, tuple[int, int]] = {}
    weighed: list[Weighed] = []
    for language in app.config["LOCALES"]:
        weighed += weigh_language(client, app.test_client(), language, asset_sizes)

    print(f"{'asset':<28}{'sent':>8}{'file':>8}")
    for asset, (sent, plain) in sorted(asset_sizes.items()):
        print(f"{asset:<28}{sent:>8}{plain:>8}")
    print(f"\n{'language':<10}{'heaviest page':<18}{'HTML':>7}{'transferred':>13}{'uncompressed':>14}")
    for language in app.config["LOCALES"]:
        own = [w for w in weighed if w.language == language]
        top = max(own, key=lambda w: w.transferred)
        print(f"{language:<10}{top.page:<18}{top.html:>7}{top.transferred:>13}{max(w.uncompressed for w in own):>14}")
    heaviest = max(weighed, key=lambda w: (w.transferred, w.uncompressed))
    largest = max(weighed, key=lambda w: w.uncompressed)
    over = [w for w in weighed if w.transferred > BUDGET]
    languages = len(app.config["LOCALES"])
    print(f"\n{len(weighed)} pages ({len(weighed) // languages} in each of {languages} languages); heaviest as "
          f"transferred: {heaviest.loads} ({heaviest.language}) {heaviest.transferred} bytes, budget {BUDGET}"
          f"{'' if not over else f'; {len(over)} over budget'}")
    if args.json:
        print_figures_json([
            figure(f"Heaviest patient page as transferred ({heaviest.loads}, {heaviest.language})",
                   heaviest.transferred / 1024, "KB", budget=f"< {BUDGET // 1024} KB", passed=not over,
                   note=f"{len(weighed)} pages in {languages} languages; HTML as sent, CSS and JS gzip-compressed; "
                        f"uncompressed {heaviest.uncompressed / 1024:.1f} KB"),
            figure(f"Heaviest patient page uncompressed ({largest.loads}, {largest.language})",
                   largest.uncompressed / 1024, "KB",
                   note="what a client that does not accept gzip receives"),
        ])


if __name__ == "__main__":
    main()
