"""Load generation and side-by-side comparison: one home for every chapter that sets paths beside each other.

A path is an :class:`Upstream` (an OpenAI-compatible ``/v1`` URL, its key, the model to ask). :class:`Client`
times one call over a keep-alive connection (the standard library's, so the client adds little noise);
:func:`sequential` sends one-token calls to several paths taking turns call by call (the order rotating with
:func:`in_turn`, so a busy spell of a shared machine falls on every path alike); :func:`throughput` and
:func:`throughputs` run closed loops, the paths in alternating slices; :func:`latency_row` and :func:`paired`
compare two paths' figures. The gateway's own cost (:mod:`.overhead`), the llm-gateway chapter's direct
against gateway (:func:`measure`) and the routing chapter's hops (:mod:`.hops`) are built on it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

import openai
import pandas as pd
import psutil

from ...percentiles import percentile

#: LiteLLM's own per-response figure: the time the proxy spent outside the upstream call, in ms.
OVERHEAD_HEADER = "x-litellm-overhead-duration-ms"
#: The percentiles the overhead table reports.
QUANTILES = (50, 90, 99)


# --------------------------------------------------------------------------- direct against the gateway (chapter 40)

def _once(client: openai.OpenAI, model: str) -> float:
    started = time.perf_counter()
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say OK."}], max_tokens=1,
                                   temperature=0)
    return time.perf_counter() - started


def measure(direct: openai.OpenAI, direct_model: str, gateway: openai.OpenAI, alias: str,
            requests: int = 10) -> pd.DataFrame:
    """Latency of ``requests`` one-token calls per path (after one warm-up each), in milliseconds."""
    _once(direct, direct_model), _once(gateway, alias)  # warm-up: connections, caches
    timings: dict[str, list[float]] = {"vLLM directly": [], "through the gateway": []}
    for _ in range(requests):
        timings["vLLM directly"].append(_once(direct, direct_model))
        timings["through the gateway"].append(_once(gateway, alias))
    rows = []
    for path, values in timings.items():
        ms = sorted(v * 1000 for v in values)
        rows.append({"path": path, "requests": len(ms), "median_ms": round(statistics.median(ms), 1),
                     "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 1), "min_ms": round(ms[0], 1)})
    table = pd.DataFrame(rows).set_index("path")
    table["added_median_ms"] = (table["median_ms"] - table.loc["vLLM directly", "median_ms"]).round(1)
    return table


# --------------------------------------------------------------------------- statistics

def summary(values: Iterable[float], quantiles: Iterable[int] = QUANTILES) -> dict[str, float | None]:
    """``{"p50": .., "p90": .., "p99": ..}`` of ``values`` (each None when there are none)."""
    values = list(values)
    return {f"p{q}": percentile(values, q) for q in quantiles}


def median_of(rows: list[Mapping[str, Any]], key: str) -> float | None:
    """The median of one figure over repeats, skipping repeats that lack it."""
    present = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(present) if present else None


# --------------------------------------------------------------------------- timing one path

@dataclass(frozen=True)
class Upstream:
    """One path to an OpenAI-compatible server: its ``/v1`` URL, the key it takes and the model name to ask."""

    url: str
    key: str = field(repr=False)
    model: str


@dataclass(frozen=True)
class Call:
    """One timed call: client wall-clock, LiteLLM's header (None when absent), time to first byte of the body."""

    wall_ms: float
    status: int
    header_ms: float | None = None
    first_byte_ms: float | None = None
    #: The answer's ``system_fingerprint`` (a non-streamed call): which revision or replica served it, when the
    #: server tells (vLLM's ``--fingerprint-value``; the routing layer sets one per replica).
    fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def _header_ms(value: str | None) -> float | None:
    """LiteLLM writes the header's number, or ``None`` when it could not tell the upstream's share."""
    try:
        return float(value) if value not in (None, "", "None") else None
    except ValueError:
        return None


def _fingerprint(body: bytes) -> str | None:
    try:
        found = json.loads(body).get("system_fingerprint")
    except (ValueError, AttributeError):
        return None
    return str(found) if found else None


def request_body(model: str, max_tokens: int = 1, stream: bool = False) -> dict[str, Any]:
    """The measured call: a short chat prompt, ``max_tokens`` answer tokens, usage reported when streamed."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say OK."}],
                            "max_tokens": max_tokens, "temperature": 0}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


class Client:
    """A keep-alive HTTP/1.1 connection to one path, timing each call (standard library: little client noise)."""

    def __init__(self, upstream: Upstream, timeout: float = 60) -> None:
        parts = urlsplit(upstream.url)
        self.upstream = upstream
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path.rstrip("/") + "/chat/completions"
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {upstream.key}"}
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(self, max_tokens: int = 1, stream: bool = False) -> Call:
        """One chat call, read to its end; a refused or broken call is a Call with its status (0: no answer)."""
        payload = json.dumps(request_body(self.upstream.model, max_tokens, stream)).encode()
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        started = time.perf_counter()
        try:
            self._conn.request("POST", self.path, payload, self.headers)
            response = self._conn.getresponse()
            first = response.read(1) if stream else b""
            first_ms = (time.perf_counter() - started) * 1000 if stream else None
            body = first + response.read()
            wall = (time.perf_counter() - started) * 1000
        except (OSError, http.client.HTTPException):
            self.close()
            return Call((time.perf_counter() - started) * 1000, 0)
        if response.status == 200 and stream and b"[DONE]" not in body:
            return Call(wall, 0, first_byte_ms=first_ms)  # the stream broke off
        return Call(wall, response.status, _header_ms(response.getheader(OVERHEAD_HEADER)), first_ms,
                    None if stream or response.status != 200 else _fingerprint(body))


def in_turn(names: list[str], i: int) -> list[str]:
    """The order of turn ``i``: ``names`` rotated by ``i``, so no path always goes first or follows the same one."""
    return names[i % len(names):] + names[:i % len(names)]


def sequential(paths: Mapping[str, Upstream], requests: int = 200, warmup: int = 20,
               stream: bool = False) -> dict[str, list[Call]]:
    """``requests`` one-token calls per path after ``warmup`` each, the paths taking turns call by call.

    The order of the turn rotates, so no path always follows the same one (a path that follows a gateway
    would otherwise always meet the gateway's after-response work).
    """
    names = list(paths)
    clients = {name: Client(upstream) for name, upstream in paths.items()}
    calls: dict[str, list[Call]] = {name: [] for name in names}
    try:
        for i in range(warmup + requests):
            for name in in_turn(names, i):
                call = clients[name].call(stream=stream)
                if i >= warmup:
                    calls[name].append(call)
    finally:
        for client in clients.values():
            client.close()
    return calls


@dataclass(frozen=True)
class Throughput:
    """A closed-loop run: completed and failed calls over the measured seconds."""

    concurrency: int
    ok: int
    errors: int
    seconds: float

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def throughput(upstream: Upstream, concurrency: int = 8, seconds: float = 10, max_tokens: int = 16,
               stream: bool = True) -> Throughput:
    """``concurrency`` clients each sending the next streamed call as soon as the last ended, for ``seconds``."""
    counts = [[0, 0] for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    deadline: list[float] = []

    def loop(slot: list[int]) -> None:
        client = Client(upstream)
        start.wait()
        try:
            while time.perf_counter() < deadline[0]:
                slot[0 if client.call(max_tokens, stream).ok else 1] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=loop, args=(slot,), daemon=True) for slot in counts]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline.append(began + seconds)
    start.wait()
    for thread in threads:
        thread.join()
    # a call that started before the deadline ends after it: divide by the time the last one took to end
    return Throughput(concurrency, sum(c[0] for c in counts), sum(c[1] for c in counts), time.perf_counter() - began)


def throughputs(paths: Mapping[str, Upstream], concurrency: int = 8, seconds: float = 10, slices: int = 4,
                max_tokens: int = 16) -> dict[str, Throughput]:
    """:func:`throughput` of every path, ``seconds`` each, in ``slices`` turns so a busy spell hits all alike."""
    totals = {name: Throughput(concurrency, 0, 0, 0.0) for name in paths}
    names = list(paths)
    for i in range(slices):
        for name in in_turn(names, i):
            part = throughput(paths[name], concurrency, seconds / slices, max_tokens)
            t = totals[name]
            totals[name] = Throughput(concurrency, t.ok + part.ok, t.errors + part.errors, t.seconds + part.seconds)
    return totals


# --------------------------------------------------------------------------- one row of the table

def load_average() -> float:
    """The machine's 1-minute load average (beside every figure: the machine may be shared)."""
    return round(os.getloadavg()[0], 2)


def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants; None when it is gone or unknown.

    CPU time, unlike wall-clock, barely depends on what else the machine runs: the figure that survives a
    shared machine (it still grows somewhat when caches are contended).
    """
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total
    except psutil.Error:
        return None


def cpu_ms_per_call(before: float | None, after: float | None, calls: int) -> float | None:
    return None if before is None or after is None or not calls else (after - before) * 1000 / calls


def latency_row(calls: Mapping[str, list[Call]], path: str = "gateway", direct: str = "direct") -> dict[str, Any]:
    """Header and wall-clock figures of ``path`` in one sequential run (ms), against the ``direct`` path.

    ``wall_added_pN`` is the difference of the two paths' percentiles (gateway pN minus direct pN), not a
    percentile of per-call differences, which would add the direct path's noise to the gateway's.
    """
    header = [c.header_ms for c in calls[path] if c.ok and c.header_ms is not None]
    errors = sum(not c.ok for c in (*calls[path], *calls[direct]))
    row: dict[str, Any] = {"requests": len(calls[path]), "errors": errors}
    for name, value in summary(header).items():
        row[f"header_{name}"] = value
    d = summary(c.wall_ms for c in calls[direct] if c.ok)
    g = summary(c.wall_ms for c in calls[path] if c.ok)
    for name in d:
        row[f"direct_{name}"] = d[name]
        row[f"gateway_{name}"] = g[name]
        row[f"wall_added_{name}"] = None if d[name] is None or g[name] is None else g[name] - d[name]
    return row


def throughput_row(direct: Throughput, gateway: Throughput) -> dict[str, Any]:
    return {"concurrency": gateway.concurrency, "direct_rps": direct.rps, "gateway_rps": gateway.rps,
            "throughput_ratio": gateway.rps / direct.rps if direct.rps else None,
            "throughput_errors": direct.errors + gateway.errors}


