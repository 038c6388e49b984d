"""Lighthouse on the patient's question page: performance and accessibility scores (budget: 100).

Run: ``.venv/bin/python benchmarks/lighthouse.py`` (``--runs 3`` for the median of three).
Needs Lighthouse from npm (``npm ci`` installs it: package.json) and Debian's Chromium at
``CHROME_PATH`` (default ``/usr/bin/chromium``); ``make bench`` sets both up.

The app is served by gunicorn exactly as ``make run`` serves it (benchmarks/web.py reads the
command from ``make -n run``), on a temporary SQLite file with the demo study. The demo
patient's link is opened and the questionnaire started over HTTP; Lighthouse then loads
``/q/1`` with that session cookie (``--extra-headers``), headless, with its default mobile
settings (Moto G-class screen, simulated slow 4G and 4x CPU slowdown). The scores depend on
the machine's CPU: on a busy machine the performance score drops. A run that Lighthouse could
not record ("Please run Lighthouse again", ``TRACE_RECORDING_ERRORS``) is run again, at most
twice; the figures' notes say so.

``--json`` ends the output with one JSON line of figures for benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _fixtures import figure, print_figures_json, temporary_sqlite_url
from web import Browser, app_environment, open_questionnaire, serving

from pro_app.db.engine import make_engine, make_session_factory
from pro_app.services.demo import seed_demo

ROOT = Path(__file__).resolve().parent.parent
LIGHTHOUSE = ROOT / "node_modules" / ".bin" / "lighthouse"
CHROME_FLAGS = "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run"
#: Audits shown with the scores (Lighthouse ids).
METRICS = ("first-contentful-paint", "largest-contentful-paint", "total-blocking-time", "cumulative-layout-shift",
           "speed-index", "total-byte-weight")


#: Lighthouse's codes for "Something went wrong with recording the trace over your page load.
#: Please run Lighthouse again": the recording failed, not the page. Such a run is run again, at
#: most ``RETRIES`` times (and the figures say how many were).
TRACE_RECORDING_ERRORS = ("NO_TRACING_STARTED", "NO_RESOURCE_REQUEST", "NO_NAVSTART", "NO_DCL", "NO_FMP")
RETRIES = 2


class TraceNotRecorded(RuntimeError):
    """Lighthouse could not record the trace of a page load (see TRACE_RECORDING_ERRORS)."""


def run_lighthouse(url: str, cookie: str, folder: Path, number: int) -> dict[str, Any]:
    headers = folder / "headers.json"
    headers.write_text(json.dumps({"Cookie": cookie}), encoding="utf-8")
    report = folder / f"report-{number}.json"
    env = {**os.environ, "CHROME_PATH": os.environ.get("CHROME_PATH", "/usr/bin/chromium")}
    command = [
        str(LIGHTHOUSE), url, "--quiet", "--output=json", f"--output-path={report}",
        "--only-categories=performance,accessibility", "--form-factor=mobile",
        f"--chrome-flags={CHROME_FLAGS}", f"--extra-headers={headers}", "--max-wait-for-load=30000",
    ]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or not report.exists():
        output = (done.stderr or done.stdout).strip()
        failure = TraceNotRecorded if any(f"({code})" in output for code in TRACE_RECORDING_ERRORS) else RuntimeError
        raise failure(f"lighthouse failed ({done.returncode}): {output[-800:]}")
    result: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    categories = result["categories"]
    audits = result["audits"]
    failing = sorted(
        audit_id for audit_id in (ref["id"] for ref in categories["accessibility"]["auditRefs"])
        if audits[audit_id].get("score") is not None and audits[audit_id]["score"] < 1
        and audits[audit_id].get("scoreDisplayMode") not in ("notApplicable", "manual", "informative")
    )
    error = result.get("runtimeError")
    if error:
        failure = TraceNotRecorded if error.get("code") in TRACE_RECORDING_ERRORS else RuntimeError
        raise failure(f"lighthouse runtime error: {error}")
    final_url = result.get("finalDisplayedUrl") or result.get("finalUrl", "")
    return {
        "performance": round(100 * (categories["performance"]["score"] or 0)),
        "accessibility": round(100 * (categories["accessibility"]["score"] or 0)),
        "metrics": {name: audits[name].get("numericValue") for name in METRICS if name in audits},
        "displayed": {name: audits[name].get("displayValue", "") for name in METRICS if name in audits},
        "failing_accessibility": failing,
        "final_url": final_url,
    }


def measured_run(url: str, cookie: str, folder: Path, number: int) -> tuple[dict[str, Any], int]:
    """One run's summary, and how many times it was run again because Lighthouse could not
    record its trace. Any other failure, or the trace's after ``RETRIES`` more tries, is raised."""
    for again in range(RETRIES + 1):
        try:
            return summary(run_lighthouse(url, cookie, folder, number)), again
        except TraceNotRecorded as error:
            if again == RETRIES:
                raise
            print(f"run {number + 1}: {str(error)[-200:]}; running it again", flush=True)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=1, help="Lighthouse runs; the median scores are reported")
    parser.add_argument("--keep", action="store_true", help="keep the reports and the server log")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()
    if not LIGHTHOUSE.exists():
        raise SystemExit(f"Lighthouse is not installed ({LIGHTHOUSE} missing): run `npm ci` (make bench does)")

    folder = Path(tempfile.mkdtemp(prefix="pro-bench-lighthouse-"))
    database_url = temporary_sqlite_url()
    try:
        engine = make_engine(database_url)
        try:
            with make_session_factory(engine)() as session:
                token = seed_demo(session).patient_token
                session.commit()
        finally:
            engine.dispose()
        with serving("pro-app-lighthouse", "wsgi:app", app_environment(database_url), folder) as server:
            patient = Browser(server.port)
            open_questionnaire(patient, token)
            page = f"http://127.0.0.1:{server.port}/q/1"
            measured = [measured_run(page, patient.cookie_header(), folder, n) for n in range(args.runs)]
            runs = [run for run, _again in measured]
            retried = sum(again for _run, again in measured)
    finally:
        shutil.rmtree(Path(database_url.removeprefix("sqlite:///")).parent, ignore_errors=True)
        if args.keep:
            print(f"kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    for number, run in enumerate(runs, 1):
        shown = ", ".join(f"{name} {value}" for name, value in run["displayed"].items() if value)
        print(f"run {number}: performance {run['performance']}, accessibility {run['accessibility']} ({shown})")
        if run["final_url"] and not run["final_url"].endswith("/q/1"):
            print(f"  WARNING: Lighthouse ended on {run['final_url']}, not the question page")
        if run["failing_accessibility"]:
            print(f"  accessibility audits not passed: {', '.join(run['failing_accessibility'])}")
    performance = statistics.median(run["performance"] for run in runs)
    accessibility = statistics.median(run["accessibility"] for run in runs)
    on_page = all(run["final_url"].endswith("/q/1") for run in runs)
    print(f"question page, median of {len(runs)}: performance {performance:g}, accessibility {accessibility:g} "
          f"(budget 100 each)")
    if args.json:
        metrics = runs[len(runs) // 2]["metrics"]
        failing = sorted({audit for run in runs for audit in run["failing_accessibility"]})
        print_figures_json([
            figure("Lighthouse performance, question page (mobile)", performance, "score", budget="100",
                   passed=performance >= 100 and on_page,
                   note=f"median of {len(runs)}; LCP {metrics.get('largest-contentful-paint', 0):.0f} ms, "
                        f"TBT {metrics.get('total-blocking-time', 0):.0f} ms, "
                        f"CLS {metrics.get('cumulative-layout-shift', 0):.3f}"
                        + (f"; {retried} run(s) run again (Lighthouse did not record the trace)" if retried else "")),
            figure("Lighthouse accessibility, question page (mobile)", accessibility, "score", budget="100",
                   passed=accessibility >= 100 and on_page,
                   note=("not passed: " + ", ".join(failing)) if failing else ""),
            figure("Lighthouse total byte weight, question page", (metrics.get("total-byte-weight") or 0) / 1024, "KB",
                   note="as transferred by gunicorn (CSS and JS gzip-compressed, HTML as it is), headers included"),
        ])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
