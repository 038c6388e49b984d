"""Page weight of the patient pages: bytes of HTML, CSS and JS as sent, and gzip-compressed.

Budget: the question page, with everything it loads, under 20 KB transferred; no external
requests, no web fonts, no framework. ``--json`` ends the output with one JSON line of figures
for benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import gzip
import re

from _fixtures import figure, print_figures_json, temporary_app

from pro_app.extensions import database
from pro_app.services.demo import seed_demo

BUDGET = 20 * 1024


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
    pages = {"start page": "/q/", "question 1": "/q/1", "question 30": "/q/30", "review": "/q/review"}
    assets = {"app.css": "/static/css/app.css", "questionnaire.js": "/static/js/questionnaire.js"}
    print(f"{'resource':<18}{'bytes':>8}{'gzip':>8}")
    sizes: dict[str, tuple[int, int]] = {}
    loads: dict[str, list[str]] = {}  # page: the assets it references
    for name, path in {**pages, **assets}.items():
        body = client.get(path).get_data()
        sizes[name] = (len(body), len(gzip.compress(body, 6)))
        referenced = {match.decode() for match in re.findall(rb'(?:src|href)="(/static/[^"?#]+)', body)}
        loads[name] = [asset for asset, asset_path in assets.items() if asset_path in referenced]
        print(f"{name:<18}{sizes[name][0]:>8}{sizes[name][1]:>8}")
        external = re.findall(rb'(?:src|href)="(https?:)?//', body)
        assert not external, f"{name} references an external resource"
    total_raw = sizes["question 1"][0] + sizes["app.css"][0] + sizes["questionnaire.js"][0]
    total_gz = sizes["question 1"][1] + sizes["app.css"][1] + sizes["questionnaire.js"][1]
    print(f"question page total: {total_raw} bytes uncompressed, {total_gz} bytes gzip "
          f"(budget {BUDGET}; {'within' if total_raw <= BUDGET else 'OVER'} budget even uncompressed)")
    if args.json:
        # Each patient page with the assets it references; the heaviest one is the figure.
        totals = {name: (sizes[name][0] + sum(sizes[a][0] for a in loads[name]),
                         sizes[name][1] + sum(sizes[a][1] for a in loads[name])) for name in pages}
        heaviest = max(totals, key=lambda name: totals[name][0])
        raw, compressed = totals[heaviest]
        print_figures_json([
            figure("Question page + CSS + JS, uncompressed", total_raw / 1024, "KB", budget=f"< {BUDGET // 1024} KB",
                   passed=total_raw <= BUDGET, note=f"{total_gz / 1024:.1f} KB gzip-compressed"),
            figure(f"Heaviest patient page ({' + '.join([heaviest] + loads[heaviest])}), uncompressed",
                   raw / 1024, "KB", budget=f"< {BUDGET // 1024} KB", passed=raw <= BUDGET,
                   note=f"{compressed / 1024:.1f} KB gzip-compressed"),
        ])


if __name__ == "__main__":
    main()
