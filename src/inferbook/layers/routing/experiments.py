"""What the routing chapter measures on the live pool: prefix affinity against round-robin, failover, the canary.

Every figure comes from the running processes: each answer names the replica that served it (its
``system_fingerprint``) and how many of its prompt tokens came from that replica's prefix cache
(``usage.prompt_tokens_details.cached_tokens``); each replica's ``vllm:prefix_cache_*`` counters and the router's
own metrics are read before and after. Nothing here is simulated.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pandas as pd
import psutil

from ... import waiting
from ...percentiles import percentile
from ...say import Say
from ...words import WORDS
from ..serving.endpoint import probe
from .local import REPLICAS, LocalRouting, RoutingError, parse_worker_gauge, router_argv, router_metrics

# ---------------------------------------------------------------------------------------------- one request


@dataclass
class Call:
    """One streamed completion: when it started, what it cost, where it went, what the cache gave."""

    group: int
    index: int
    started: float
    ttft_s: float | None = None
    e2e_s: float | None = None
    replica: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    status: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


def client_for(base: str, key: str, timeout: float = 120) -> openai.OpenAI:
    """An OpenAI client for a replica's or the router's ``/v1`` (no retries: each failure is a figure)."""
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, timeout=timeout, max_retries=0)


def stream_completion(client: openai.OpenAI, model: str, prompt: str, call: Call, max_tokens: int = 4) -> Call:
    """A streamed ``/v1/completions``; fills ``call`` from what came back (never raises)."""
    t0 = time.monotonic()
    try:
        with client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                       stream=True, stream_options={"include_usage": True}) as stream:
            for chunk in stream:
                if chunk.system_fingerprint:
                    call.replica = chunk.system_fingerprint
                if chunk.choices and call.ttft_s is None:
                    call.ttft_s = time.monotonic() - t0
                if chunk.usage:
                    call.prompt_tokens = chunk.usage.prompt_tokens
                    details = chunk.usage.prompt_tokens_details
                    call.cached_tokens = int((details.cached_tokens if details else 0) or 0)
        call.status = 200
    except openai.APIStatusError as error:
        call.status, call.error = error.status_code, str(error)[:200]
    except openai.APIError as error:
        call.error = f"{type(error).__name__}: {error}"[:200]
    call.e2e_s = time.monotonic() - t0
    return call


# ---------------------------------------------------------------------------------------------- affinity


def documents(seed: int, count: int, words: int) -> list[str]:
    """``count`` seeded documents of ``words`` plain words: long shared prefixes, each unlike the others."""
    rng = random.Random(seed)
    return [f"Document {seed}-{i}. " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(count)]


@dataclass
class PolicyRun:
    """One policy over the workload: the calls, and the counters' deltas."""

    policy: str
    calls: list[Call]
    #: replica name -> (prefix cache hits, queries) during the run, from the replica's own counters
    cache: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: the router's requests per worker during the run
    routed: dict[str, float] = field(default_factory=dict)


def replica_cache_counters(base: str, timeout: float = 5) -> tuple[float, float]:
    """(hits, queries) of a vLLM's prefix cache, in tokens (``vllm:prefix_cache_hits_total``, ``..._queries_total``)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    hits = queries = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:prefix_cache_hits_total":
                hits += sample.value
            elif sample.name == "vllm:prefix_cache_queries_total":
                queries += sample.value
    return hits, queries


def run_workload(routing: LocalRouting, base: str, metrics_port: int, policy: str, docs: list[str],
                 questions: int, say: Say) -> PolicyRun:
    """Each document's questions in turn, the documents side by side (one client each, first requests together).

    A document's follow-ups share its whole text as a prefix: the replica that saw it has its blocks cached.
    """
    key, model = routing.api_key(), routing.served_name
    before = {name: replica_cache_counters(url) for name, url in routing.replica_urls.items()}
    routed_before = parse_worker_gauge(router_metrics(metrics_port), "vllm_router_processed_requests_total")
    calls: list[Call] = []
    lock = threading.Lock()
    start = threading.Barrier(len(docs))

    def client(group: int) -> None:
        http = client_for(base, key)
        start.wait()
        for index in range(questions):
            prompt = f"{docs[group]}\n\nQuestion {index + 1}: what is word {index + 3} of the document?\nAnswer:"
            call = stream_completion(http, model, prompt, Call(group, index, time.monotonic()))
            with lock:
                calls.append(call)

    threads = [threading.Thread(target=client, args=(g,)) for g in range(len(docs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = {name: replica_cache_counters(url) for name, url in routing.replica_urls.items()}
    routed_after = parse_worker_gauge(router_metrics(metrics_port), "vllm_router_processed_requests_total")
    urls = {url: name for name, url in routing.replica_urls.items()}
    run = PolicyRun(policy, sorted(calls, key=lambda c: (c.group, c.index)),
                    {n: (after[n][0] - before[n][0], after[n][1] - before[n][1]) for n in before},
                    {urls.get(w.rstrip("/"), w): routed_after[w] - routed_before.get(w, 0) for w in routed_after})
    say(f"routing: {policy}: {sum(c.ok for c in calls)}/{len(calls)} answered")
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryRouter:
    """A second vllm-router over the same replicas with another policy, for the side-by-side run only.

    Not supervised: it lives for one measurement and is stopped (its whole process group) when the block ends, or
    when it does not come up (an ``__enter__`` that raises gets no ``__exit__``).
    """

    #: Seconds the router has to answer (it starts in a second or two).
    start_timeout_s: float = 120.0

    def __init__(self, routing: LocalRouting, policy: str, log: Path) -> None:
        self.python, self.policy = Path(routing.router_launch()[0]).parent / "python", policy
        self.routing_urls = list(routing.replica_urls.values())
        self._pick_ports()
        self.log = log
        self.routing = routing
        self.process: subprocess.Popen[bytes] | None = None

    #: Starts tried when another process took a port between :func:`free_port` and the router's bind.
    attempts: int = 3

    def __enter__(self) -> "TemporaryRouter":
        for attempt in range(1, self.attempts + 1):
            offset = self.log.stat().st_size if self.log.exists() else 0
            try:
                return self._start()
            except RoutingError:
                with open(self.log, "rb") as log:
                    log.seek(offset)
                    taken = b"Address already in use" in log.read()
                if not taken or attempt == self.attempts:
                    raise
                self._pick_ports()  # the OS's pick was taken by another process before the router bound it
        raise AssertionError("unreachable")

    def _pick_ports(self) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.argv = router_argv(self.python, list(self.routing_urls), self.policy, self.port, self.metrics_port)

    def _start(self) -> "TemporaryRouter":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        base, process = f"http://127.0.0.1:{self.port}", self.process
        policy = self.argv[self.argv.index("--policy") + 1]

        def answers() -> str | None:
            if process.poll() is not None:
                raise RoutingError(f"the {policy} router exited ({process.returncode}); see {self.log}")
            return None if probe(base, self.routing.api_key()) is not None else "no answer yet"

        try:
            waiting.wait_for(answers, timeout=self.start_timeout_s, what=f"the temporary {policy} router",
                             interval=0.3, say=lambda line: self.routing.say(f"routing: {line}"), error=RoutingError,
                             message=lambda _: f"the temporary {policy} router did not answer within "
                                               f"{self.start_timeout_s:g} s; see {self.log}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def affinity(routing: LocalRouting, seed: int = 7, groups: int = 2, questions: int = 6, words: int = 400,
             say: Say = print) -> list[PolicyRun]:
    """The same seeded workload shape through ``cache_aware`` (the layer's router) and ``round_robin`` (a
    temporary one). Each policy gets fresh documents (seed + policy), so one run's cached blocks cannot help the
    other; a warm-up call on each replica first, so neither run pays a first-request cost."""
    for url in routing.replica_urls.values():
        stream_completion(client_for(url, routing.api_key()), routing.served_name, "Warm-up.", Call(-1, 0, 0.0))
    runs = []
    say(f"routing: {groups} documents of {words} words, {questions} questions each, per policy")
    runs.append(run_workload(routing, routing.pool_base, routing.metrics_port, "cache_aware",
                             documents(seed, groups, words), questions, say))
    with TemporaryRouter(routing, "round_robin", routing.run_dir / "logs" / "routing-round-robin.log") as rr:
        runs.append(run_workload(routing, f"http://127.0.0.1:{rr.port}", rr.metrics_port, "round_robin",
                                 documents(seed + 1, groups, words), questions, say))
    return runs


def affinity_table(runs: list[PolicyRun]) -> pd.DataFrame:
    """One row per policy: where requests went, how often a document stayed on one replica, what the cache gave."""
    rows = []
    for run in runs:
        ok = [c for c in run.calls if c.ok]
        by_group: dict[int, list[str]] = {}
        for c in ok:
            by_group.setdefault(c.group, []).append(c.replica or "?")
        stayed = sum(max(r.count(x) for x in set(r)) for r in by_group.values())
        follow = [c for c in ok if c.index > 0]
        hits, queries = (sum(v[0] for v in run.cache.values()), sum(v[1] for v in run.cache.values()))
        ttft = [c.ttft_s * 1000 for c in ok if c.ttft_s is not None]
        hit = [c.ttft_s * 1000 for c in follow if c.ttft_s is not None and (c.cached_tokens or 0) > 0]
        miss = [c.ttft_s * 1000 for c in ok if c.ttft_s is not None and not c.cached_tokens]
        rows.append({
            "policy": run.policy,
            "requests": f"{len(ok)}/{len(run.calls)}",
            "split (a / b)": " / ".join(str(sum(1 for c in ok if c.replica == r)) for r in REPLICAS),
            "document on one replica": f"{100 * stayed / len(ok):.0f}%" if ok else "-",
            "prefix-cache hit rate": f"{100 * hits / queries:.1f}%" if queries else "-",
            "follow-ups with no hit (cold prefills)": sum(1 for c in follow if not c.cached_tokens),
            "TTFT p50 ms": _ms(percentile(ttft, 50)),
            "TTFT p95 ms": _ms(percentile(ttft, 95)),
            "TTFT p50 ms, hit": _ms(percentile(hit, 50)),
            "TTFT p50 ms, miss": _ms(percentile(miss, 50)),
        })
    return pd.DataFrame(rows).set_index("policy")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def calls_frame(runs: list[PolicyRun]) -> pd.DataFrame:
    """Every call of the side-by-side run, for the plot and for a reader who wants the raw data."""
    return pd.DataFrame([{"policy": r.policy, "document": c.group, "question": c.index + 1, "replica": c.replica,
                          "cached tokens": c.cached_tokens, "prompt tokens": c.prompt_tokens,
                          "TTFT ms": None if c.ttft_s is None else round(c.ttft_s * 1000)} for r in runs
                         for c in r.calls])


def plot_affinity(runs: list[PolicyRun]) -> Any:
    """TTFT of each follow-up question, per policy, marked by whether its prefix came from the cache."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.2), sharey=True)
    for ax, run in zip(axes if len(runs) > 1 else [axes], runs, strict=True):
        for cached, colour, label in ((True, "tab:green", "prefix cached"), (False, "tab:red", "cold prefill")):
            points = [(c.index + 1 + 0.1 * c.group, c.ttft_s * 1000) for c in run.calls
                      if c.ok and c.ttft_s is not None and bool(c.cached_tokens) == cached]
            if points:
                ax.scatter(*zip(*points, strict=True), color=colour, label=label, s=24)
        ax.set_title(run.policy)
        ax.set_xlabel("question of the document")
        ax.grid(alpha=0.3)
    (axes[0] if len(runs) > 1 else axes).set_ylabel("TTFT (ms)")
    (axes[0] if len(runs) > 1 else axes).legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- failover


@dataclass
class Failover:
    """A replica killed under load: what clients saw, and when the router noticed and took it back."""

    killed: str
    killed_pid: int
    calls: list[Call]
    kill_at: float
    detect_s: float | None
    restart_s: float | None
    rejoin_s: float | None
    leftovers: int

    def table(self) -> pd.DataFrame:
        after = [c for c in self.calls if c.started >= self.kill_at]
        failed = [c for c in after if not c.ok]
        in_flight = [c for c in self.calls if c.started < self.kill_at and not c.ok]
        return pd.DataFrame([
            ("replica killed (kill -9 of its server)", f"{self.killed} (pid {self.killed_pid})"),
            ("requests during the drill", len(self.calls)),
            ("failed: in flight at the kill", len(in_flight)),
            ("failed: sent after the kill", len(failed)),
            ("time to detect (router marks it unhealthy)", _s(self.detect_s)),
            ("time until its supervisor had it serving again", _s(self.restart_s)),
            ("time to rejoin (the first request it answers again)", _s(self.rejoin_s)),
            ("processes of the killed replica left unsupervised", self.leftovers),
        ], columns=["figure", "value"]).set_index("figure")


def _s(value: float | None) -> str:
    return "not within the drill" if value is None else f"{value:.1f} s"


def failover(routing: LocalRouting, clients: int = 2, before_s: float = 6, timeout_s: float = 300,
             pause_s: float = 0.5, seed: int = 11, say: Say = print) -> Failover:
    """Kill replica ``b``'s server (``kill -9``) under steady load through the router; time detect and rejoin.

    Detect: the router takes it out (its circuit breaker opens, or ``vllm_router_worker_health`` drops to 0).
    Rejoin: after its supervisor has it serving again, the first request the router sends it is answered (its
    fingerprint names it). The router's breaker moves from open to half open only when a request could go to the
    replica, so the load's prompts begin with a token of their own (a seeded hex word): no prompt shares a prefix
    with another, and ``cache_aware`` sends them to the replica whose prefix tree is smaller, as it does new
    conversations. (With one shared opening, every prompt matched replica ``a``'s tree and the breaker never got
    its trial: a run waited out its whole timeout.) The load stops once it rejoined (or at ``timeout_s``). Each
    client pauses ``pause_s`` between requests: on two cores, a load with no pause starves the restarting replica
    (its start took four minutes instead of one in a trial), which measures the machine, not the router.
    """
    key, model, base = routing.api_key(), routing.served_name, routing.pool_base
    worker = routing.replica_urls[REPLICAS[1]]
    calls: list[Call] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(group: int) -> None:
        http = client_for(base, key, timeout=60)
        opening = random.Random(seed * 1000 + group)
        index = 0
        while not stop.is_set():
            prompt = f"{opening.getrandbits(32):08x}: say one word about the number {index}."
            call = stream_completion(http, model, prompt, Call(group, index, time.monotonic()))
            with lock:
                calls.append(call)
            index += 1
            stop.wait(pause_s)

    threads = [threading.Thread(target=client, args=(g,)) for g in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(before_s)
        victim = routing.replica.facts()["pid"]
        if victim is None:
            raise RuntimeError(f"replica {REPLICAS[1]} has no serving process to kill; is the routing layer up?")
        kill_at = time.monotonic()
        psutil.Process(victim).kill()
        say(f"routing: killed {REPLICAS[1]}'s server (pid {victim}) under load")
        detect = restart = rejoin = None
        while time.monotonic() - kill_at < timeout_s:
            now = time.monotonic() - kill_at
            if detect is None and routing.worker_out(worker):
                detect = now
            if restart is None and routing.replica_healthy():
                restart = now
            if detect is not None and restart is not None:
                with lock:
                    back = [c.started + (c.e2e_s or 0) - kill_at for c in calls
                            if c.ok and c.replica == REPLICAS[1] and c.started - kill_at >= restart]
                if back:
                    rejoin = min(back)  # answered by the replica again: the router took it back
                    break
            time.sleep(0.25)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    say(f"routing: detected after {_s(detect)}, serving again after {_s(restart)}, rejoined after {_s(rejoin)}")
    return Failover(REPLICAS[1], victim, sorted(calls, key=lambda c: c.started), kill_at, detect, restart, rejoin,
                    len(routing.replica.leftovers()))


def plot_failover(result: Failover) -> Any:
    """Each request of the drill on a time line: which replica answered, which failed, and the drill's marks."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 2.6))
    lanes = {REPLICAS[0]: 1, REPLICAS[1]: 2}
    for c in result.calls:
        t = c.started - result.kill_at
        if c.ok:
            ax.scatter(t, lanes.get(c.replica or "", 0), s=10, color="tab:blue")
        else:
            ax.scatter(t, 0, s=18, color="tab:red", marker="x")
    for value, label in ((0, "kill"), (result.detect_s, "detected"), (result.rejoin_s, "rejoined")):
        if value is not None:
            ax.axvline(value, color="grey", linestyle="--")
            ax.text(value, 2.3, label, fontsize=8)
    ax.set_yticks([0, 1, 2], ["failed", REPLICAS[0], REPLICAS[1]])
    ax.set_ylim(-0.5, 2.6)
    ax.set_xlabel("seconds since the kill")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- models and canary


def model_routes(routing: LocalRouting) -> pd.DataFrame:
    """One call per routed model through the front, and one for a model with no route: who answered, or the 404."""
    key = routing.api_key()
    config = routing.front_config()
    rows = []
    for model in [*sorted(config["routes"]), "no-such-model"]:
        call = stream_completion(client_for(routing.base, key), model, "Say hello.", Call(0, 0, time.monotonic()),
                                 max_tokens=2)
        backends = config["routes"].get(model)
        rows.append({"model asked": model,
                     "route": ", ".join(f"{p} ({w})" for p, w in backends) if backends else "none",
                     "status": call.status,
                     "answered by": call.replica or ("-" if not call.ok else "(no fingerprint: llama-server)"),
                     "error": call.error[:200] if call.error else ""})
    return pd.DataFrame(rows).set_index("model asked")


@dataclass
class Canary:
    """The weighted split observed over ``calls`` requests for the chat model through the front."""

    expected: dict[str, float]
    observed: dict[str, int]
    routed: dict[str, float]
    calls: int
    failed: int

    def table(self) -> pd.DataFrame:
        rows = []
        for pool, share in self.expected.items():
            got = self.observed.get(pool, 0)
            rows.append({"pool": pool, "expected share": f"{100 * share:.0f}%",
                         "observed (answers)": f"{got} of {self.calls} ({100 * got / max(self.calls, 1):.1f}%)",
                         "front's counter": int(self.routed.get(pool, 0))})
        return pd.DataFrame(rows).set_index("pool")


def canary_split(routing: LocalRouting, calls: int = 100) -> Canary:
    """``calls`` one-token requests for the chat model through the front; each answer's fingerprint says whether
    the stable pool (replica a or b) or the canary revision served it; the front's own counters beside."""
    from .local import CANARY

    key, model = routing.api_key(), routing.served_name
    backends = routing.front_config()["routes"][model]
    total = sum(w for _, w in backends)
    expected = {pool: w / total for pool, w in backends}
    before = routing.routed()
    client = client_for(routing.base, key, timeout=60)
    pools = {REPLICAS[0]: backends[0][0], REPLICAS[1]: backends[0][0]}
    if len(backends) > 1:
        pools[CANARY] = backends[1][0]
    observed: dict[str, int] = {}
    failed = 0
    for index in range(calls):
        call = stream_completion(client, model, f"Count to {index % 7 + 1}.", Call(0, index, time.monotonic()),
                                 max_tokens=1)
        if not call.ok:
            failed += 1
            continue
        pool = pools.get(call.replica or "", call.replica or "?")
        observed[pool] = observed.get(pool, 0) + 1
    after = routing.routed()
    routed = {pool: after.get((model, pool), 0) - before.get((model, pool), 0) for pool in expected}
    return Canary(expected, observed, routed, calls, failed)
