"""Run every benchmark, collect their figures into one table, write benchmarks/results.md.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/run_all.py``; ``--quick`` for a short
run with reduced sizes, ``--only web.py,scoring.py`` for some scripts). Expected duration on
the 2-core reference machine: about 12 minutes (bounded at 15), ``--quick`` about 3 (bounded
at 4); ``--max-minutes`` changes the bound. See docs/performance.md.

Every ``*.py`` under benchmarks/ is run in turn as its own process, except the helpers
(``_*.py``, this file, ``loadgen.py``, ``ceiling_app.py``); a script this file has no
settings for runs with its defaults. Scripts that know ``--json`` end their output with one
line ``{"figures": [...]}``, read here; for the others the exit status (and, for
load_patients.py, its summary lines) becomes the row. A script that fails, crashes or runs
past its time gets an ERROR row and the run goes on. Each script's time is bounded (its own
limit, and what is left of the whole run's); at the end of its time it is interrupted
(SIGINT, so it stops its servers and drops its databases), then killed.

PostgreSQL (``127.0.0.1:5432`` as user ``postgres``, or ``PRO_BENCH_POSTGRES_URL``): when it
answers, the scripts measure on it too, each in a database of its own that is dropped at the
end (``bench_dashboard``, ``bench_web``, ``bench_export``); when it does not, they measure SQLite only and the
table says so. The exit status is 1 when a script failed or timed out (figures over budget
are in the table, not in the exit status).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.md"
HELPERS = {"run_all.py", "loadgen.py", "ceiling_app.py"}
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: Seconds left to a script between SIGINT (clean up) and SIGKILL.
GRACE_SECONDS = 30


@dataclass(frozen=True)
class Settings:
    """How run_all runs one script: arguments and time limit (seconds), full and quick."""

    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    timeout: float = 300.0
    quick_timeout: float = 120.0
    json: bool = True
    #: Environment variable naming the script's PostgreSQL database, and that database's name.
    postgres_env: str | None = None
    postgres_database: str | None = None
    no_postgres_flag: str | None = None


SCRIPTS: dict[str, Settings] = {
    "scoring.py": Settings(quick=("--single-rows", "20000", "--file-rows", "10000", "--repeats", "1"),
                           timeout=240, quick_timeout=90),
    "page_weight.py": Settings(timeout=120, quick_timeout=60),
    "dashboard.py": Settings(quick=("--participants", "2000", "--runs", "10"), timeout=480, quick_timeout=120,
                             postgres_env="PRO_BENCH_DATABASE_URL", postgres_database="bench_dashboard",
                             no_postgres_flag="--no-postgres"),
    "export.py": Settings(quick=("--participants", "1000", "--no-trace"), timeout=600, quick_timeout=120,
                          postgres_env="PRO_BENCH_EXPORT_DATABASE_URL", postgres_database="bench_export",
                          no_postgres_flag="--no-postgres"),
    "web.py": Settings(quick=("--quick",), timeout=480, quick_timeout=150,
                       postgres_env="PRO_BENCH_WEB_DATABASE_URL", postgres_database="bench_web",
                       no_postgres_flag="--no-postgres"),
    "lighthouse.py": Settings(full=("--runs", "3"), timeout=240, quick_timeout=90),
    # Another benchmark's load test with data checks: no --json; its summary lines are read.
    # On SQLite (with --database it would measure PostgreSQL instead of SQLite).
    "load_patients.py": Settings(full=("--patients", "100", "--max-seconds", "240"),
                                 quick=("--patients", "12", "--max-seconds", "90"),
                                 timeout=300, quick_timeout=120, json=False),
}
#: Order of the runs: quick and independent first, the heavy ones after.
ORDER = ("scoring.py", "page_weight.py", "lighthouse.py", "web.py", "dashboard.py", "export.py", "load_patients.py")


@dataclass
class Outcome:
    script: str
    arguments: list[str]
    seconds: float = 0.0
    status: str = "not run"  # ok | failed (exit N) | timed out | skipped (...)
    figures: list[dict[str, Any]] = field(default_factory=list)
    tail: str = ""


# --- the machine ---------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def operating_system() -> str:
    name = platform.system()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{name}, kernel {platform.release()}"


def postgres_version(url: str) -> str | None:
    """The server's version, or None when it does not answer."""
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as connection:
                return str(connection.scalar(text("SHOW server_version")))
        finally:
            engine.dispose()
    except Exception:  # any failure means: not available for the benchmarks
        return None


def git_revision() -> str:
    try:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{revision or 'unknown'}{' with local changes' if dirty else ''}"


def machine(pg_version: str | None) -> dict[str, str]:
    return {
        "CPU": cpu_model(),
        "Cores": str(os.cpu_count() or "?"),
        "RAM": memory(),
        "OS": operating_system(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": pg_version or "not reachable (SQLite only)",
    }


# --- running one script ---------------------------------------------------------------------------

def scripts_to_run(only: set[str] | None) -> list[str]:
    found = sorted(path.name for path in HERE.glob("*.py")
                   if not path.name.startswith("_") and path.name not in HELPERS)
    ordered = [name for name in ORDER if name in found] + [name for name in found if name not in ORDER]
    return [name for name in ordered if only is None or name in only]


def run_script(name: str, arguments: list[str], env: dict[str, str], limit: float, echo: bool) -> Outcome:
    outcome = Outcome(name, arguments)
    lines: list[str] = []
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(HERE / name), *arguments], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
    )

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if echo and not line.startswith('{"figures"'):
                print(f"  | {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=limit)
        outcome.status = "ok" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        outcome.status = f"timed out after {limit:.0f} s"
        stop(process)
    except KeyboardInterrupt:
        stop(process)
        raise
    reader.join(timeout=10)
    outcome.seconds = time.perf_counter() - started
    outcome.tail = next((line for line in reversed(lines) if line.strip() and not line.startswith("{")), "")
    for line in reversed(lines):
        if line.startswith('{"figures"'):
            try:
                outcome.figures = list(json.loads(line)["figures"])
            except (ValueError, KeyError, TypeError):
                pass
            break
    if name == "load_patients.py":
        outcome.figures = load_patients_figures(lines, outcome.status == "ok")
    return outcome


def stop(process: subprocess.Popen[str]) -> None:
    """SIGINT to the script's process group (it stops its servers, drops its databases), then SIGKILL."""
    for signal_number, wait in ((signal.SIGINT, GRACE_SECONDS), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


WALL = re.compile(r"wall ([\d.]+) s, ([\d,]+) responses \(([\d.]+) requests/s\), (\d+) questionnaires submitted")
KIND_ROW = re.compile(r"^\s+(answer|question|submit)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")


def load_patients_figures(lines: list[str], ok: bool) -> list[dict[str, Any]]:
    """The summary of benchmarks/load_patients.py (it prints text, with data checks)."""
    figures: list[dict[str, Any]] = []
    header = next((line for line in lines if " patients, " in line and "gunicorn workers" in line), "")
    patients = header.split(" patients", 1)[0].strip() or "?"
    for line in lines:
        wall = WALL.search(line)
        if wall:
            figures.append(row(f"Patient flow load test, {patients} patients, all pages", float(wall.group(3)),
                               "req/s", note=f"{wall.group(4)} questionnaires in {wall.group(1)} s ({header.strip()})"))
        kind = KIND_ROW.match(line)
        if kind:
            figures.append(row(f"Patient flow load test, {kind.group(1)} p99", float(kind.group(5)), "ms",
                               note=f"{kind.group(2)} requests, p50 {kind.group(3)} ms"))
    figures.append(row("Patient flow load test, data checks (nothing lost or duplicated)", None, "",
                       budget="all pass", passed=ok,
                       note="" if ok else next((line.strip() for line in lines if "FAIL" in line), "")))
    return figures


def row(name: str, value: float | None, unit: str, *, budget: str = "", passed: bool | None = None,
        note: str = "") -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "ceiling": None, "ratio": None, "budget": budget,
            "pass": passed, "note": note}


# --- PostgreSQL databases of the scripts ----------------------------------------------------------

def database_url(server_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    except Exception as error:  # reported, never fatal: the figures are already in
        print(f"  could not drop the database {name}: {error}")
    finally:
        engine.dispose()


def script_arguments(name: str, settings: Settings, quick: bool, pg_server: str | None,
                     env: dict[str, str]) -> list[str]:
    arguments = list(settings.quick if quick else settings.full)
    if settings.json:
        arguments.append("--json")
    if settings.postgres_database:
        if pg_server is None:
            if settings.no_postgres_flag:
                arguments.append(settings.no_postgres_flag)
        else:
            url = database_url(pg_server, settings.postgres_database)
            if settings.postgres_env:
                env[settings.postgres_env] = url
    return arguments


# --- the table ------------------------------------------------------------------------------------

def number(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "score":
        return f"{value:g}"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if size >= 0.1 or size == 0 else f"{value:.3f}"


def result_cell(figure: dict[str, Any]) -> str:
    if figure.get("error"):
        return "ERROR"
    if figure["pass"] is None:
        return "not judged (reduced size)" if figure["budget"] else ""
    return "pass" if figure["pass"] else "FAIL"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(outcomes: list[Outcome]) -> list[str]:
    lines = ["| Script | Figure | Value | Ceiling | Ratio | Budget | Result | Notes |",
             "|---|---|---:|---:|---:|---|---|---|"]
    for outcome in outcomes:
        figures = list(outcome.figures)
        if outcome.status != "ok":
            figures.append({"name": f"{outcome.status}", "value": None, "unit": "", "ceiling": None, "ratio": None,
                            "budget": "", "pass": None, "note": outcome.tail[-200:], "error": True})
        if not figures:
            figures.append({"name": "(ran, no figures reported)", "value": None, "unit": "", "ceiling": None,
                            "ratio": None, "budget": "", "pass": None, "note": outcome.tail[-200:]})
        for figure in figures:
            value = number(figure["value"], figure["unit"])
            unit = figure["unit"]
            lines.append("| " + " | ".join(cell(part) for part in (
                outcome.script,
                str(figure["name"]),
                f"{value} {unit}".strip() if value else "",
                f"{number(figure['ceiling'], unit)} {unit}".strip() if figure.get("ceiling") is not None else "",
                f"{figure['ratio']:.0%}" if figure.get("ratio") is not None else "",
                str(figure["budget"]),
                result_cell(figure),
                str(figure.get("note", "")),
            )) + " |")
    return lines


def report(outcomes: list[Outcome], info: dict[str, str], started: datetime, seconds: float, quick: bool,
           loads: tuple[float, float]) -> str:
    failed = sum(1 for o in outcomes for f in o.figures if f.get("pass") is False)
    errors = sum(1 for o in outcomes if o.status != "ok")
    lines = [
        "# Benchmark results",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `make bench`{' (--quick: reduced sizes)' if quick else ''}, "
        f"in {seconds / 60:.1f} minutes; commit {git_revision()}. "
        f"{failed} figure(s) over budget, {errors} script(s) with errors. How to read this table: "
        "docs/performance.md.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {key} | {cell(value)} |" for key, value in info.items()]
    lines += [f"| Load average (1 min) at start / end | {loads[0]:.2f} / {loads[1]:.2f} |", "", "## Figures", ""]
    lines += table(outcomes)
    lines += ["", "## Scripts", "", "| Script | Arguments | Seconds | Status |", "|---|---|---:|---|"]
    lines += [f"| {o.script} | `{' '.join(o.arguments) or '(defaults)'}` | {o.seconds:.0f} | {cell(o.status)} |"
              for o in outcomes]
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short run, reduced sizes (about 3 minutes)")
    parser.add_argument("--only", help="comma-separated script names (e.g. web.py,scoring.py)")
    parser.add_argument("--max-minutes", type=float, help="bound on the whole run (default 15, quick 4)")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the Markdown table")
    parser.add_argument("--quiet", action="store_true", help="do not echo the scripts' own output")
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",")} if args.only else None
    unknown = sorted((only or set()) - set(scripts_to_run(None)))
    if unknown:
        parser.error(f"no such benchmark script: {', '.join(unknown)} (choose from {', '.join(scripts_to_run(None))})")
    budget = 60 * (args.max_minutes or (4.0 if args.quick else 15.0))

    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    pg_server = os.environ.get("PRO_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    pg_version = postgres_version(pg_server)
    info = machine(pg_version)
    print("Machine: " + "; ".join(f"{key} {value}" for key, value in info.items()), flush=True)
    if load_start > 0.5 * (os.cpu_count() or 1):
        print(f"NOTE: load average {load_start:.2f} at start: other work is running, the figures will be low")

    outcomes: list[Outcome] = []
    for name in scripts_to_run(only):
        settings = SCRIPTS.get(name, Settings(json=False))
        env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        arguments = script_arguments(name, settings, args.quick, pg_server if pg_version else None, env)
        left = budget - (time.perf_counter() - started)
        limit = min(settings.quick_timeout if args.quick else settings.timeout, left - GRACE_SECONDS)
        if limit < 20:
            outcomes.append(Outcome(name, arguments, status="skipped (the run's time bound was reached)"))
            print(f"== {name}: skipped, the run's time bound was reached", flush=True)
            continue
        print(f"== {name} {' '.join(arguments)}  (at most {limit:.0f} s)", flush=True)
        try:
            outcome = run_script(name, arguments, env, limit, echo=not args.quiet)
        finally:
            if pg_version and settings.postgres_database:
                drop_database(pg_server, settings.postgres_database)
        outcomes.append(outcome)
        print(f"== {name}: {outcome.status} in {outcome.seconds:.0f} s, {len(outcome.figures)} figures", flush=True)

    seconds = time.perf_counter() - started
    text = report(outcomes, info, started_at, seconds, args.quick, (load_start, os.getloadavg()[0]))
    Path(args.output).write_text(text, encoding="utf-8")
    print()
    print("\n".join(table(outcomes)))
    print(f"\nwritten to {args.output} ({seconds / 60:.1f} minutes)")
    broken = [o.script for o in outcomes if o.status != "ok" and not o.status.startswith("skipped")]
    if broken:
        print(f"scripts with errors: {', '.join(broken)}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
