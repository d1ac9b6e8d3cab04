"""Fault drills on the local stack: break one part on purpose, watch what a client sees, time the recovery.

Each drill kills or stops one process of a running stack (vLLM, the LiteLLM proxy, its Postgres ledger) the
way a crash or an outage would, and returns a :class:`Drill` row: what should happen, what did, how long the
stack took to serve again, and whether anything was lost (keys, spend, processes left behind). Nothing here
restarts a server by hand: recovery is the supervisor's (a crash) or one ``inferbook up`` (an outage).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import openai
import pandas as pd
import psutil

from ... import smoke, waiting
from ...errors import InferbookError
from ...paths import Layout
from ...process import ServerProcess
from ...profile import Profile
from ...say import Say
from ...targets import kind_of
from ..llm_gateway import LocalGateway
from ..llm_gateway.admin import Admin
from ..llm_gateway.enforcement import call_status
from ..llm_gateway.manifests import serving_alias
from ..routing import LocalRouting
from ..serving import LocalServing
from ..serving.endpoint import probe

#: A virtual key the gateway has never issued (the shape of a real one).
UNKNOWN_KEY = "sk-not-a-real-key-" + "0" * 22


@dataclass
class Drill:
    """One fault and its outcome: a row of the chapter's table."""

    fault: str
    expected: str
    observed: str
    recovery_s: float | None
    data_lost: str
    passed: bool


def wait_until(condition: Callable[[], bool], timeout: float, what: str, say: Say, poll: float = 1.0) -> float:
    """Seconds until ``condition()`` holds (a readiness poll); an error naming ``what`` after ``timeout``."""
    return waiting.wait_for(waiting.until(condition), timeout=timeout, what=what,
                            say=lambda line: say(f"resilience: {line}"), interval=poll, progress_every=15,
                            message=lambda _: f"{what} did not happen within {timeout:.0f} s")


def server_of(process: ServerProcess) -> psutil.Process:
    """The server itself: the supervised reaper's child (vLLM's API server, the proxy, the postmaster's runner)."""
    pid = process.supervisor.live_pid(process.program)
    if pid is None:
        raise InferbookError(f"{process.layer} is not running under supervision. Fix: inferbook up")
    children = psutil.Process(pid).children()
    if not children:
        raise InferbookError(f"{process.layer}'s supervisor has no server process yet; wait for it, then retry")
    return children[0]


def family(proc: psutil.Process) -> list[psutil.Process]:
    """A process and all its descendants (an API server and its engine and workers)."""
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def survivors(procs: list[psutil.Process], grace: float = 20.0) -> list[psutil.Process]:
    """The processes of ``procs`` still alive after ``grace`` seconds: orphans, if their server is gone."""
    _, alive = psutil.wait_procs(procs, timeout=grace)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@dataclass
class Stack:
    """A running local stack and a fresh drill key (its value in memory only, never shown)."""

    profile: Profile
    layout: Layout
    serving: LocalServing
    gateway: LocalGateway
    key: str = field(repr=False)
    say: Say = print
    #: The routing layer when the profile enables it: the gateway's calls then go through its front and router.
    routing: LocalRouting | None = None

    @classmethod
    def open(cls, profile: Profile, layout: Layout, say: Say = print) -> "Stack":
        """The profile's running local stack, with a new virtual key for the drills (the previous one revoked)."""
        if not kind_of(profile).local_processes:
            raise InferbookError(f"the fault drills run on the local stack; profile {profile.name} targets a "
                                 "cluster. Fix: run the resilience chapter with a local profile")
        serving = LocalServing(profile, layout, say=say)
        gateway = LocalGateway(profile, layout, say=say)
        routing = LocalRouting(profile, layout, say=say) if "routing" in profile.features else None
        for layer in (serving, *([routing] if routing else []), gateway):
            if not layer.healthy() and layer.process.supervised():  # being (re)started: give it its time
                wait_until(layer.healthy, 600, f"{layer.layer} to finish starting", say, poll=2)
            problem = layer.diagnosis()
            if problem:
                raise InferbookError(problem)
        if routing is not None and not routing.healthy():
            raise InferbookError(routing.diagnosis() or "the routing layer does not serve. Fix: inferbook up")
        admin = gateway_admin(gateway)
        alias = f"{profile.data['tenants']['team']}-resilience"
        if alias in {k["alias"] for k in admin.keys()}:
            admin.revoke(alias)
        key = admin.create_key(alias, [serving_alias(profile)], max_budget=5.0)
        return cls(profile, layout, serving, gateway, key, say, routing)

    def replicas(self) -> dict[str, ServerProcess]:
        """Every vLLM that answers the drills' model, by base URL: vLLM itself, and with routing on the pool's
        second replica and the canary."""
        found = {self.serving.base: self.serving.process}
        if self.routing is not None:
            found.update({r.base: r.process for r in self.routing.replicas})
        return found

    def streaming_replica(self, timeout: float = 30, ended: threading.Event | None = None) -> str:
        """The base URL of the replica running a request now (``vllm:num_requests_running`` above 0): the one a
        stream in flight went to, whichever the router chose. ``ended`` is set when the stream is over: then no
        replica will ever report it, and the wait stops with that reason instead of timing out. The timeout is
        generous because a replica busy generating on a 2-core machine can be slow to answer ``/metrics``."""
        found: list[str] = []

        def running() -> str | None:
            if ended is not None and ended.is_set():
                raise InferbookError("the drill's stream ended before any replica reported it running (it failed "
                                     "or finished at once): check `inferbook status` and the gateway's log")
            for base in self.replicas():
                try:
                    if smoke.metric_total(base, "vllm:num_requests_running") > 0:
                        found.append(base)
                        return None
                except (OSError, ValueError):
                    continue
            return "no replica reports a running request"

        waiting.wait_for(running, timeout=timeout, what="the replica running the drill's stream", say=self.say,
                         interval=0.2,
                         message=lambda _: "no replica reports a running request while the drill's stream runs")
        return found[0]

    def replica_serves(self, base: str) -> bool:
        found = probe(base, self.serving.api_key())
        return bool(found and self.serving.served_name in found["models"])

    @property
    def model(self) -> str:
        """The gateway's name for vLLM's model, which every drill calls: the drills break vLLM, not the coder."""
        return serving_alias(self.profile)

    @property
    def alias(self) -> str:
        return f"{self.profile.data['tenants']['team']}-resilience"

    def new_key(self, purpose: str) -> tuple[str, str]:
        """(alias, key): a fresh key of its own for ``purpose``, so its spend is only what that purpose used."""
        admin = gateway_admin(self.gateway)
        alias = f"{self.alias}-{purpose}"
        if alias in {k["alias"] for k in admin.keys()}:
            admin.revoke(alias)
        return alias, admin.create_key(alias, [self.model], max_budget=5.0)

    def chat(self, key: str | None = None, max_tokens: int = 4) -> tuple[int, str]:
        """One short call through the gateway: (HTTP status, message)."""
        client = smoke.client(self.gateway.url, key or self.key, timeout=60).with_options(max_retries=0)
        try:
            return call_status(lambda: client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "Say OK."}], max_tokens=max_tokens,
                temperature=0))
        except openai.APIConnectionError as exc:  # nothing answers on the gateway's port (yet)
            return 0, f"no answer: {exc}"

    def serves(self) -> bool:
        return self.chat()[0] == 200

    def ledger_readable(self) -> bool:
        """The proxy reads its ledger again (its database client reconnects on its own cadence after an outage)."""
        try:
            self.ledger()
        except InferbookError:
            return False
        return True

    def ledger(self) -> dict[str, Any]:
        """Keys and total booked spend, from the gateway's ledger (the data a fault must not lose)."""
        keys = gateway_admin(self.gateway).keys()
        return {"keys": len(keys), "spend": sum(k["spend_usd"] or 0.0 for k in keys)}


def gateway_admin(gateway: LocalGateway) -> Admin:
    return Admin(gateway.base, gateway.master_key())


def _lost(before: dict[str, Any], after: dict[str, Any]) -> str:
    lost = []
    if after["keys"] < before["keys"]:
        lost.append(f"{before['keys'] - after['keys']} key(s)")
    if after["spend"] < before["spend"] - 1e-9:
        lost.append(f"{before['spend'] - after['spend']:.8f} USD of spend")
    return ", ".join(lost) or "none"


def kill_serving_mid_stream(stack: Stack, timeout: float = 600) -> Drill:
    """SIGKILL the vLLM API server that serves a stream running through the gateway.

    Without routing that is vLLM itself, and while it is away the gateway answers 503 naming it. With routing on
    it is whichever replica the router chose; while it is away the router sends the next calls to the others
    (the chat pool's other replica, or the pool when the canary was hit), so the gateway keeps answering 200.
    """
    before = stack.ledger()
    first_chunk, failed = threading.Event(), threading.Event()
    seen: dict[str, float] = {}

    def stream() -> None:
        client = smoke.client(stack.gateway.url, stack.key, timeout=120).with_options(max_retries=0)
        try:
            for _ in client.chat.completions.create(
                    model=stack.model, max_tokens=400, temperature=0, stream=True,
                    messages=[{"role": "user", "content": "Count from 1 to 500, one number a line."}]):
                first_chunk.set()
        except (openai.APIError, OSError) as exc:
            seen["error_at"] = time.monotonic()
            seen["error"] = type(exc).__name__
        finally:
            first_chunk.set()
            failed.set()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    first_chunk.wait(timeout=120)
    base = stack.serving.base if stack.routing is None else stack.streaming_replica(ended=failed)
    process = stack.replicas()[base]
    server = server_of(process)
    doomed = family(server)
    killed_at = time.monotonic()
    server.kill()
    failed.wait(timeout=60)
    stream_error = seen.get("error_at", float("nan")) - killed_at
    away = [stack.chat() for _ in range(1 if stack.routing is None else 3)]  # while the replica is away
    orphans = survivors(doomed[1:])
    stack.say(f"resilience: {process.layer} killed; waiting for its supervisor to bring it back")
    wait_until(lambda: stack.replica_serves(base) and stack.serves(), timeout,
               f"{process.layer} to serve again after it was killed", stack.say, poll=2)
    recovery = time.monotonic() - killed_at
    lost = _lost(before, stack.ledger())
    codes = ", ".join(str(code) for code, _ in away)
    if stack.routing is None:
        away_status, away_message = away[0]
        meanwhile = away_status == 503 and "vllm" in away_message.lower()
        while_away = f"the gateway answered {away_status}: {away_message[:90]}"
        fault, promise = "vLLM killed mid-stream", "503 naming vLLM while it is away; vLLM restarted by its supervisor"
    elif any(r.process is process for r in stack.routing.replicas[1:]):  # the canary: the front still splits to it
        meanwhile = any(code == 200 for code, _ in away) and all(code in (200, 502, 503) for code, _ in away)
        while_away = f"{len(away)} calls through the gateway answered {codes}"
        fault = f"canary vLLM killed mid-stream ({process.layer}, {base.rsplit(':', 1)[-1]})"
        promise = ("the stable pool answers (200); the calls the split sends to the canary fail (502/503) until its "
                   "supervisor restarts it")
    else:
        meanwhile = all(code == 200 for code, _ in away)
        while_away = f"{len(away)} calls through the gateway answered {codes}"
        fault = f"vLLM replica killed mid-stream ({process.layer}, {base.rsplit(':', 1)[-1]})"
        promise = "the router sends the next calls to the other replicas (200); the replica restarted by its supervisor"
    passed = "error" in seen and meanwhile and not orphans and lost == "none"
    observed = (f"stream failed after {stream_error:.2f} s ({seen.get('error', 'no error')}); while away "
                f"{while_away}; orphaned processes: {len(orphans)}")
    return Drill(fault, f"the stream fails at once; {promise}; no orphan", observed, round(recovery, 1), lost, passed)


def kill_proxy(stack: Stack, timeout: float = 300) -> Drill:
    """SIGKILL the LiteLLM proxy; its supervisor restarts it; keys and spend must be intact."""
    before = stack.ledger()
    server = server_of(stack.gateway.process)
    doomed = family(server)
    killed_at = time.monotonic()
    server.kill()
    orphans = survivors(doomed[1:])
    wait_until(stack.serves, timeout, "the gateway to serve again after the proxy was killed", stack.say, poll=2)
    recovery = time.monotonic() - killed_at
    lost = _lost(before, stack.ledger())
    return Drill("LiteLLM proxy killed", "restarted by its supervisor; the same keys work; spend intact",
                 f"known key answered 200 again; orphaned processes: {len(orphans)}", round(recovery, 1), lost,
                 lost == "none" and not orphans)


def kill_ledger(stack: Stack, timeout: float = 300) -> Drill:
    """SIGKILL the Postgres server; its supervisor restarts it (crash recovery); the ledger must be intact."""
    before = stack.ledger()
    postgres = stack.gateway.postgres
    server = server_of(postgres.process)
    postmaster = next((p for p in family(server) if p.name() == "postgres"), server)
    killed_at = time.monotonic()
    postmaster.kill()
    wait_until(lambda: postgres.accepting() and stack.gateway.healthy(), timeout,
               "the ledger to accept connections again", stack.say, poll=1)
    wait_until(stack.serves, timeout, "the gateway to serve again after the ledger crashed", stack.say, poll=2)
    wait_until(stack.ledger_readable, timeout, "the gateway to read its ledger again", stack.say, poll=2)
    recovery = time.monotonic() - killed_at
    lost = _lost(before, stack.ledger())
    return Drill("Postgres ledger killed", "restarted by its supervisor (crash recovery); keys and spend intact",
                 "ledger accepting connections; proxy ready; known key answered 200", round(recovery, 1), lost,
                 lost == "none")


def ledger_outage(stack: Stack, recover: Callable[[], Any], timeout: float = 300) -> Drill:
    """Stop the ledger (an outage, not a crash): fail-open keeps known keys, refuses unknown ones; then recover.

    ``recover`` is what a person runs (``inferbook up``): the drill times it.
    """
    before = stack.ledger()
    postgres = stack.gateway.postgres
    postgres.process.supervisor.pause(postgres.process.program)
    down_at = time.monotonic()
    try:
        known = stack.chat()
        unknown = stack.chat(UNKNOWN_KEY)
        status = stack.gateway.status()
    finally:
        recover()
    wait_until(stack.serves, timeout, "the gateway to serve again after the ledger outage", stack.say, poll=2)
    wait_until(stack.ledger_readable, timeout, "the gateway to read its ledger again", stack.say, poll=2)
    recovery = time.monotonic() - down_at
    lost = _lost(before, stack.ledger())
    fail_open = stack.profile.budget_mode == "fail-open"
    expected_known = 200 if fail_open else 503
    passed = (known[0] == expected_known and unknown[0] == 401 and status["state"] == "degraded"
              and "ledger" in status["problem"] and lost == "none")
    return Drill(f"Postgres ledger down ({stack.profile.budget_mode})",
                 f"known key {expected_known}; unknown key 401; status names the ledger; `up` recovers",
                 f"known key {known[0]}; unknown key {unknown[0]} ({unknown[1][:60]}); status: {status['state']}, "
                 f"{status['problem'][:70]}...", round(recovery, 1), lost, passed)


def table(drills: list[Drill]) -> pd.DataFrame:
    """The drills as the chapter shows them."""
    frame = pd.DataFrame([d.__dict__ for d in drills]).rename(columns={"passed": "pass", "recovery_s": "recovery (s)"})
    return frame.set_index("fault")


def status_table(stack: Stack) -> pd.DataFrame:
    """Each local layer's parts as ``inferbook status`` reports them: what the drills will break, one at a time."""
    rows = []
    for layer, report in (("serving", stack.serving.status()), ("llm-gateway", stack.gateway.status())):
        for part in report["parts"]:
            rows.append({"layer": layer, "part": part["part"], "state": part["state"]})
    return pd.DataFrame(rows).set_index(["layer", "part"])


def verify(drills: list[Drill], load: Any) -> list[dict[str, Any]]:
    """The chapter's checks: every drill passed; the load run had no error and its spend was booked exactly."""
    rows = [{"check": d.fault, "expected": d.expected, "observed": f"{d.observed}; recovered in {d.recovery_s} s; "
             f"lost: {d.data_lost}", "pass": d.passed} for d in drills]
    errors = sum(load.errors.values())
    rows.append({"check": "no error under load", "expected": "0 errors",
                 "observed": f"{errors} errors in {load.requests} requests ({load.streams} streams)",
                 "pass": errors == 0 and load.requests > 0})
    rows.append({"check": "spend booked equals usage under load", "expected": f"{load.expected_usd:.8f} USD",
                 "observed": f"{load.booked_usd:.8f} USD", "pass": load.spend_matches})
    return rows


def figure(drills: list[Drill]) -> Any:
    """Recovery time per fault, as a bar chart (seconds from the fault to the first 200 through the gateway)."""
    frame = table(drills)
    axes = frame["recovery (s)"].astype(float).plot.barh(figsize=(7, 0.6 + 0.5 * len(frame)), color="tab:blue")
    axes.set_xlabel("seconds from the fault to the gateway serving again")
    axes.set_ylabel("")
    axes.invert_yaxis()
    return axes
