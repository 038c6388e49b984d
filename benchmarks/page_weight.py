"""Page weight of the patient pages: bytes of HTML, CSS and JS as sent, and gzip-compressed.

Budget: the question page, with everything it loads, under 20 KB transferred; no external
requests, no web fonts, no framework.
"""

from __future__ import annotations

import gzip
import re

from _fixtures import temporary_app

from pro_app.extensions import database
from pro_app.services.demo import seed_demo

BUDGET = 20 * 1024


def main() -> None:
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
    for name, path in {**pages, **assets}.items():
        body = client.get(path).get_data()
        sizes[name] = (len(body), len(gzip.compress(body, 6)))
        print(f"{name:<18}{sizes[name][0]:>8}{sizes[name][1]:>8}")
        external = re.findall(rb'(?:src|href)="(https?:)?//', body)
        assert not external, f"{name} references an external resource"
    total_raw = sizes["question 1"][0] + sizes["app.css"][0] + sizes["questionnaire.js"][0]
    total_gz = sizes["question 1"][1] + sizes["app.css"][1] + sizes["questionnaire.js"][1]
    print(f"question page total: {total_raw} bytes uncompressed, {total_gz} bytes gzip "
          f"(budget {BUDGET}; {'within' if total_raw <= BUDGET else 'OVER'} budget even uncompressed)")


if __name__ == "__main__":
    main()
