"""A small closed-loop HTTP load generator: N connections, each sending its next request as
soon as the previous answer has been read, for a bounded time, on the loopback only.

Run as its own process (``benchmarks/web.py`` does, so that the client's CPU time is not the
server's): ``.venv/bin/python benchmarks/loadgen.py --port 8000 --path /healthz --seconds 3``
or ``--spec FILE`` for per-connection request lists (JSON, see :class:`Spec`). With ``--json``
the last line printed is the result as one JSON object (:func:`run` returns the same dict).

Why not a library: the standard library only (asyncio streams, one event loop), so it runs
wherever the benchmarks run. It speaks the little HTTP/1.1 that is needed: keep-alive
connections, reopened whenever the server closes them (gunicorn's sync workers, as ``make
run`` uses, close after each response: the reconnection is part of the measured latency, as
it is for a phone), ``Content-Length`` and chunked bodies.

Placeholders in a request's path, headers and body are filled in for every request sent:
``{uuid}`` a new UUID (a fresh request id, so idempotent endpoints really write), ``{v}`` 1
or 2, alternating with each pass over the connection's list (so a saved answer really
changes), ``{n}`` the connection's request counter.

Latency is measured from the moment the request is about to be written (or the connection
opened) until the whole response body has been read; the requests completing inside the
measuring window (after ``--warmup``) are counted, whenever they started. The window ends at ``--seconds`` or, for lists
that are not cycled (one submission per prepared questionnaire), when every connection has
sent its list. ``answered`` counts every response read, the warm-up's included: all the server
did during the run (``benchmarks/web.py`` divides the workers' CPU time by it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Only the loopback is ever a target.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
READ_TIMEOUT = 30.0
#: Longest response body kept (first bytes only) for a failed request, for the report.
SAMPLE_BYTES = 300


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass(frozen=True)
class Spec:
    """What each connection sends. ``connections[i % len(connections)]`` is the list of
    connection i; ``cycle`` False: each list is sent once (then the connection stops).

    JSON form: ``{"cycle": true, "expect": [200], "connections": [[{"method": "GET",
    "path": "/q/1", "headers": {"Cookie": "..."}, "body": null}, ...], ...]}``.
    """

    connections: list[list[Request]]
    cycle: bool = True
    expect: tuple[int, ...] = (200,)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        lists = [[Request(r["method"], r["path"], dict(r.get("headers") or {}), r.get("body")) for r in one]
                 for one in data["connections"]]
        if not lists or not all(lists):
            raise ValueError("a spec needs at least one non-empty request list")
        return cls(lists, bool(data.get("cycle", True)), tuple(int(s) for s in data.get("expect", [200])))

    def to_json(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            "expect": list(self.expect),
            "connections": [[{"method": r.method, "path": r.path, "headers": r.headers, "body": r.body} for r in one]
                            for one in self.connections],
        }


class _Results:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.transport: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.bytes = 0
        self.answered = 0  # every response read, warm-up included (what the server did for the run)
        self.last_completion = 0.0


def _fill(text: str, counter: int, round_: int) -> str:
    if "{" not in text:
        return text
    return (text.replace("{uuid}", str(uuid.uuid4())).replace("{v}", str(1 + round_ % 2))
            .replace("{n}", str(counter)))


def _encode(request: Request, host: str, counter: int, round_: int) -> bytes:
    body = _fill(request.body, counter, round_).encode() if request.body is not None else b""
    lines = [f"{request.method} {_fill(request.path, counter, round_)} HTTP/1.1", f"Host: {host}",
             "Connection: keep-alive", "User-Agent: pro-app-loadgen"]
    lines += [f"{name}: {_fill(value, counter, round_)}" for name, value in request.headers.items()]
    if request.body is not None or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, server closes the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    closes = headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are sent by our servers
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        body = await reader.read()
        closes = True
    return status, body, closes


async def _connection(
    index: int, requests: list[Request], spec: Spec, host: str, port: int,
    measure_from: float, stop_at: float, results: _Results,
) -> None:
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    counter = 0
    try:
        while time.perf_counter() < stop_at:
            position = counter % len(requests)
            round_ = counter // len(requests)
            if round_ and not spec.cycle:
                break
            request = requests[position]
            payload = _encode(request, host, counter, round_)
            counter += 1
            started = time.perf_counter()
            try:
                if stream is None:
                    stream = await asyncio.wait_for(asyncio.open_connection(host, port), READ_TIMEOUT)
                stream[1].write(payload)
                status, body, closes = await asyncio.wait_for(_read_response(stream[0]), READ_TIMEOUT)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                    ValueError) as error:
                if stream is not None:
                    stream[1].close()
                stream = None
                if measure_from <= time.perf_counter() <= stop_at:
                    results.transport[type(error).__name__] += 1
                continue
            finished = time.perf_counter()
            results.answered += 1
            if closes:
                stream[1].close()
                stream = None
            if not measure_from <= finished <= stop_at:
                continue
            results.latencies.append(finished - started)
            results.statuses[status] += 1
            results.bytes += len(body)
            results.last_completion = max(results.last_completion, finished)
            if status not in spec.expect and len(results.unexpected) < 5:
                results.unexpected.append(
                    f"{request.method} {request.path} -> {status}: {body[:SAMPLE_BYTES].decode('utf-8', 'replace')}"
                )
    finally:
        if stream is not None:
            stream[1].close()


def latency_summary(ordered_ms: list[float]) -> dict[str, float]:
    """Mean, percentiles and maximum (ms) of an ascending list of latencies in ms: the
    ``latency_ms`` of a result, and of several runs' latencies pooled (``benchmarks/web.py``)."""
    count = len(ordered_ms)
    return {
        "mean": round(sum(ordered_ms) / count, 2) if count else 0.0,
        "p50": round(_percentile(ordered_ms, 50), 2),
        "p90": round(_percentile(ordered_ms, 90), 2),
        "p95": round(_percentile(ordered_ms, 95), 2),
        "p99": round(_percentile(ordered_ms, 99), 2),
        "max": round(ordered_ms[-1], 2) if ordered_ms else 0.0,
    }


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


async def _run(spec: Spec, host: str, port: int, connections: int, seconds: float, warmup: float,
               latencies: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + seconds
    results = _Results()
    tasks = [
        asyncio.create_task(_connection(i, spec.connections[i % len(spec.connections)], spec, host, port,
                                        measure_from, stop_at, results))
        for i in range(connections)
    ]
    await asyncio.gather(*tasks)
    # Lists sent once may all be done before the time is up: the window ends with the last answer.
    end = stop_at if spec.cycle or results.last_completion == 0 else min(stop_at, results.last_completion)
    window = max(end - measure_from, 1e-9)
    ordered_ms = [1000 * value for value in sorted(results.latencies)]
    count = len(ordered_ms)
    bad_status = sum(n for status, n in results.statuses.items() if status not in spec.expect)
    transport = sum(results.transport.values())
    figures: dict[str, Any] = {
        "connections": connections,
        "seconds": round(window, 3),
        "requests": count,
        "answered": results.answered,
        "rps": round(count / window, 1),
        "errors": bad_status + transport,
        "statuses": {str(status): n for status, n in sorted(results.statuses.items())},
        "transport_errors": dict(results.transport),
        "unexpected": results.unexpected,
        "bytes_per_response": round(results.bytes / count) if count else 0,
        "latency_ms": latency_summary(ordered_ms),
    }
    if latencies:  # each request's, so that several runs' can be pooled (benchmarks/web.py does)
        figures["latencies_ms"] = [round(value, 3) for value in ordered_ms]
    return figures


def run(spec: Spec, *, port: int, host: str = "127.0.0.1", connections: int = 32, seconds: float = 10.0,
        warmup: float = 1.0, latencies: bool = False) -> dict[str, Any]:
    """Load ``host:port`` as described and return the figures (see the module docstring); with
    ``latencies``, also every measured request's latency (``latencies_ms``, ascending)."""
    if host not in LOOPBACK:
        raise ValueError(f"the load generator only targets the loopback, not {host!r}")
    if connections < 1 or seconds <= 0 or warmup < 0:
        raise ValueError("connections must be >= 1, seconds > 0 and warmup >= 0")
    return asyncio.run(_run(spec, host, port, connections, seconds, warmup, latencies))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", choices=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--path", help="GET this path on every connection")
    target.add_argument("--spec", help="JSON file with per-connection request lists")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measuring window")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--latencies", action="store_true",
                        help="with --json: also every measured request's latency in ms (latencies_ms)")
    args = parser.parse_args(argv)
    if args.spec:
        with open(args.spec, encoding="utf-8") as handle:
            spec = Spec.from_json(json.load(handle))
    else:
        spec = Spec([[Request("GET", args.path)]])
    result = run(spec, port=args.port, host=args.host, connections=args.connections, seconds=args.seconds,
                 warmup=args.warmup, latencies=args.latencies)
    if args.json:
        print(json.dumps(result))
    else:
        latency = result["latency_ms"]
        print(f"{result['requests']:,} requests in {result['seconds']:.1f} s = {result['rps']:,.1f}/s over "
              f"{result['connections']} connections; {result['errors']} errors; latency ms p50 {latency['p50']} "
              f"p90 {latency['p90']} p99 {latency['p99']} max {latency['max']}; statuses {result['statuses']}")
        for line in result["unexpected"]:
            print("  unexpected:", line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
