"""The routing layer's local half: the router's command, its metrics read back, and the chapter's figures and checks
computed from what the replicas answered."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferbook import cpu
from inferbook.layers.routing import experiments, steps
from inferbook.layers.routing.experiments import Call, Failover, PolicyRun
from inferbook.layers.routing.local import FAILOVER_FLAGS, parse_worker_gauge, replica_core, router_argv
from inferbook.layers.serving.local import launch_spec, routing_flags
from inferbook.profile import load_profile

ROUTER_METRICS = """# HELP vllm_router_worker_health Worker health status (1=healthy, 0=unhealthy)
# TYPE vllm_router_worker_health gauge
vllm_router_worker_health{worker="http://127.0.0.1:8000"} 1
vllm_router_worker_health{worker="http://127.0.0.1:8002"} 0
# TYPE vllm_router_processed_requests_total counter
vllm_router_processed_requests_total{worker="http://127.0.0.1:8000"} 12
"""


def test_the_router_listens_on_loopback_over_the_given_workers_with_failover_tuned():
    argv = router_argv(Path("/env/bin/python"), ["http://127.0.0.1:8000", "http://127.0.0.1:8002"], "cache_aware",
                       8200, 8201)
    assert argv[0] == "/env/bin/vllm-router"
    assert argv[argv.index("--worker-urls") + 1: argv.index("--worker-urls") + 3] == [
        "http://127.0.0.1:8000", "http://127.0.0.1:8002"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "8200"
    assert argv[argv.index("--prometheus-port") + 1] == "8201" and argv[argv.index("--policy") + 1] == "cache_aware"
    assert argv[-len(FAILOVER_FLAGS):] == FAILOVER_FLAGS
    assert argv[argv.index("--cb-failure-threshold") + 1] == "1"


def test_the_routers_per_worker_series_are_read_by_worker_url():
    assert parse_worker_gauge(ROUTER_METRICS, "vllm_router_worker_health") == {
        "http://127.0.0.1:8000": 1.0, "http://127.0.0.1:8002": 0.0}
    assert parse_worker_gauge(ROUTER_METRICS, "vllm_router_processed_requests_total") == {
        "http://127.0.0.1:8000": 12.0}
    assert parse_worker_gauge("", "vllm_router_worker_health") == {}


@pytest.mark.parametrize("cores, core", [(2, "1"), (8, "7"), (1, "0")])
def test_the_second_replica_takes_the_core_the_first_leaves_free(cores, core):
    machine = cpu.CpuInfo(model="y", arch="x86_64", flags=frozenset({"avx2"}), cores=cores, memory_gib=24.0)
    assert replica_core(machine) == core


def test_with_routing_on_the_serving_replica_gets_the_routers_flags_and_without_it_none(tmp_path):
    from inferbook.paths import Layout
    from inferbook.secrets import SecretStore

    layout = Layout(root=Path(__file__).resolve().parents[1], build_dir=tmp_path / "_build")
    machine = cpu.CpuInfo(model="y", arch="x86_64", flags=frozenset({"avx2"}), cores=2, memory_gib=24.0)
    secrets = SecretStore("local", tmp_path / "secrets")
    on = launch_spec(load_profile("local", ["features.routing=true"]), layout, tmp_path / "m", Path("/py"), secrets,
                     tmp_path, machine)
    off = launch_spec(load_profile("local", ["features.routing=false"]), layout, tmp_path / "m", Path("/py"), secrets,
                      tmp_path, machine)
    flags = routing_flags("replica-a")
    assert all(f in on.argv for f in flags) and not any(f in off.argv for f in flags)
    assert "--fingerprint-value=replica-a" in on.argv and "--enable-scale-out" in on.argv


def _call(group: int, index: int, replica: str, cached: int, ttft: float = 0.1, status: int = 200) -> Call:
    return Call(group, index, started=float(index), ttft_s=ttft, e2e_s=ttft, replica=replica, prompt_tokens=500,
                cached_tokens=cached, status=status)


def test_the_affinity_table_counts_where_documents_went_and_what_the_cache_gave():
    aware = PolicyRun("cache_aware", [_call(0, i, "replica-a", 0 if i == 0 else 384, 0.5 if i == 0 else 0.2)
                                      for i in range(3)]
                      + [_call(1, i, "replica-b", 0 if i == 0 else 384) for i in range(3)],
                      cache={"replica-a": (768, 1500), "replica-b": (768, 1500)})
    rr = PolicyRun("round_robin", [_call(0, 0, "replica-a", 0), _call(0, 1, "replica-b", 0),
                                   _call(0, 2, "replica-a", 384), _call(1, 0, "replica-b", 0),
                                   _call(1, 1, "replica-a", 0), _call(1, 2, "replica-b", 384)],
                   cache={"replica-a": (384, 1500), "replica-b": (384, 1500)})
    table = experiments.affinity_table([aware, rr])
    assert table.loc["cache_aware", "split (a / b)"] == "3 / 3"
    assert table.loc["cache_aware", "document on one replica"] == "100%"
    assert table.loc["round_robin", "document on one replica"] == "67%"
    assert table.loc["cache_aware", "prefix-cache hit rate"] == "51.2%"
    assert table.loc["round_robin", "prefix-cache hit rate"] == "25.6%"
    assert table.loc["cache_aware", "follow-ups with no hit (cold prefills)"] == 0
    assert table.loc["round_robin", "follow-ups with no hit (cold prefills)"] == 2
    assert table.loc["cache_aware", "TTFT p50 ms, hit"] == "150"  # 200, 200 (document 0), 100, 100 (document 1)
    assert table.loc["cache_aware", "TTFT p50 ms, miss"] == "300"  # 500 (document 0), 100 (document 1)


class _Pool:
    """Stands in for the live pool in the checks: what ``status`` says (the checks read nothing else of it)."""

    def __init__(self, healthy: bool) -> None:
        self._healthy = healthy

    def status(self) -> dict:
        return {"healthy": self._healthy, "state": "healthy" if self._healthy else "down"}


def _drill(calls: list[Call], detect: float | None = 1.0, rejoin: float | None = 30.0, left: int = 0) -> Failover:
    return Failover("replica-b", 123, calls, kill_at=10.0, detect_s=detect, restart_s=25.0, rejoin_s=rejoin,
                    leftovers=left)


def test_the_checks_pass_on_a_clean_run_and_name_each_failure_otherwise():
    aware = PolicyRun("cache_aware", [_call(0, 0, "replica-a", 0), _call(0, 1, "replica-a", 384),
                                      _call(1, 0, "replica-b", 0), _call(1, 1, "replica-b", 384)])
    clean = _drill([Call(0, 0, 9.0, status=200), Call(0, 1, 10.5, status=None, error="reset"),
                    Call(0, 2, 12.0, status=200)])
    rows = steps.verify(_Pool(True), [aware], clean)
    assert all(r["pass"] for r in rows), [r for r in rows if not r["pass"]]

    split = PolicyRun("cache_aware", [_call(0, 0, "replica-a", 0), _call(0, 1, "replica-b", 0)])
    late = _drill([Call(0, 0, 12.0, status=502, error="bad gateway")], rejoin=None, left=2)
    failed = {r["check"] for r in steps.verify(_Pool(False), [split], late) if not r["pass"]}
    assert failed == {"the routing layer serves", "cache_aware keeps each document on one replica",
                      "cache_aware: follow-ups hit the prefix cache", "failover: no error once the router knew",
                      "failover: the killed replica rejoined", "failover: nothing left unsupervised"}


def test_seeded_documents_are_reproducible_and_distinct():
    assert experiments.documents(7, 2, 50) == experiments.documents(7, 2, 50)
    first, second = experiments.documents(7, 2, 50)
    assert first != second and len(first.split()) == 52
    assert experiments.documents(8, 1, 50)[0] not in experiments.documents(7, 2, 50)


# ---------------------------------------------------------------------------------------------- the front

HTTPROUTE = {
    "kind": "HTTPRoute", "metadata": {"name": "inference-models"},
    "spec": {"rules": [
        {"matches": [{"headers": [{"type": "Exact", "name": "X-Gateway-Base-Model-Name", "value": "alpha"}]}],
         "backendRefs": [{"kind": "InferencePool", "name": "stable", "weight": 90},
                         {"kind": "InferencePool", "name": "canary", "weight": 10}]},
        {"matches": [{"headers": [{"type": "Exact", "name": "X-Gateway-Base-Model-Name", "value": "beta"}]}],
         "backendRefs": [{"kind": "Service", "name": "coder", "port": 8080}]},
    ]},
}


def test_the_fronts_routes_come_from_the_httproute_rules_and_a_pool_without_upstream_is_an_error():
    from inferbook.layers.routing.front import routes_from

    upstreams = {"stable": "http://s", "canary": "http://c", "coder": "http://k"}
    assert routes_from([HTTPROUTE], upstreams) == {"alpha": [("stable", 90), ("canary", 10)],
                                                   "beta": [("coder", 1)]}
    with pytest.raises(ValueError, match="sends to canary, which has no local upstream"):
        routes_from([HTTPROUTE], {"stable": "http://s", "coder": "http://k"})


def test_the_seeded_weighted_choice_is_reproducible_and_near_its_weights():
    from inferbook.layers.routing.front import Picker

    backends = [("stable", 90), ("canary", 10)]
    first = [Picker(5).pick(backends) for _ in range(1)]
    picker, again = Picker(5), Picker(5)
    draws = [picker.pick(backends) for _ in range(2000)]
    assert draws == [again.pick(backends) for _ in range(2000)] and first[0] == draws[0]
    assert 150 <= draws.count("canary") <= 250  # 10% of 2000, within five standard deviations (13.4)


@pytest.fixture(scope="module")
def router_python(tmp_path_factory) -> Path:
    """The vllm-router environment (aiohttp for the front), built once into the user cache like the book does."""
    from inferbook import envs
    from inferbook.paths import default_cache_dir

    return envs.VLLM_ROUTER.ensure(default_cache_dir(), lambda _: None)


def test_the_front_sends_each_model_to_its_pool_streams_through_and_404s_an_unknown_model(tmp_path, router_python):
    """The real front (a process, as the book runs it) before two stub upstreams (TEST DOUBLES of vLLM)."""
    import json
    import subprocess
    import time
    import urllib.error
    import urllib.request

    from inferbook.layers.routing import front
    from inferbook.layers.routing.experiments import free_port
    from tests.stub_openai import Behaviour, StubOpenAI

    with StubOpenAI(Behaviour(model="alpha")) as stable, StubOpenAI(Behaviour(model="alpha")) as canary, \
            StubOpenAI(Behaviour(model="beta")) as coder:
        port = free_port()
        config = {"port": port, "seed": 5, "routes": {"alpha": [["stable", 90], ["canary", 10]],
                                                       "beta": [["coder", 1]]},
                  "upstreams": {"stable": stable.base, "canary": canary.base, "coder": coder.base}}
        (tmp_path / "front.json").write_text(json.dumps(config))
        proc = subprocess.Popen([str(router_python), str(Path(front.__file__)), str(tmp_path / "front.json")])
        try:
            def post(model: str, stream: bool = False) -> tuple[int, bytes, str]:
                body = json.dumps({"model": model, "prompt": "hi", "max_tokens": 3, "stream": stream}).encode()
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body, headers={
                    "Authorization": "Bearer stub-key", "Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        return response.status, response.read(), response.headers.get("x-inferbook-pool", "")
                except urllib.error.HTTPError as error:
                    return error.code, error.read(), ""

            deadline = time.monotonic() + 30
            while True:
                try:
                    models = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read())
                    break
                except OSError:
                    assert time.monotonic() < deadline and proc.poll() is None, "the front did not come up"
                    time.sleep(0.2)
            assert [m["id"] for m in models["data"]] == ["alpha", "beta"]
            pools = [post("alpha")[2] for _ in range(200)]
            assert set(pools) == {"stable", "canary"} and 5 <= pools.count("canary") <= 40
            assert len(stable.requests) + len(canary.requests) == 200
            status, body, pool = post("beta", stream=True)
            # streamed through as the upstream sent it: its token event, then [DONE]
            assert status == 200 and pool == "coder" and body.count(b"data: ") == 2
            assert body.endswith(b"data: [DONE]\n\n")
            status, body, _ = post("gamma")
            assert status == 404
            message = json.loads(body)["error"]["message"]
            assert "'gamma'" in message and "alpha, beta" in message
            assert len(coder.requests) == 1  # the unknown model reached no upstream
        finally:
            proc.terminate()
            proc.wait(timeout=10)


class _Routing:
    """Just what TemporaryRouter reads of the routing layer while it waits (a stand-in, not a router)."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def api_key(self) -> str:
        return "not-a-key"

    def say(self, line: str) -> None:
        self.said.append(line)


def test_a_temporary_router_that_never_answers_is_stopped_and_named(tmp_path: Path) -> None:
    import sys

    router = object.__new__(experiments.TemporaryRouter)
    router.port, router.metrics_port = experiments.free_port(), experiments.free_port()  # nothing listens there
    router.argv = [sys.executable, "-c", "import time; time.sleep(120)", "--policy", "round_robin"]
    router.log, router.routing, router.process = tmp_path / "router.log", _Routing(), None
    router.start_timeout_s = 0.5
    with pytest.raises(experiments.RoutingError, match=r"temporary round_robin router did not answer within 0.5 s"):
        with router:
            pytest.fail("the block ran without a router")
    assert router.process is not None and router.process.poll() is not None  # stopped, not left running


def test_a_temporary_router_whose_port_was_taken_meanwhile_is_started_again_on_new_ports(tmp_path: Path) -> None:
    import sys

    class Picky(experiments.TemporaryRouter):
        picked = 0

        def _pick_ports(self) -> None:  # the second start: a router that hangs (no answer), on new ports
            self.picked += 1
            self.port, self.metrics_port = experiments.free_port(), experiments.free_port()
            self.argv = [sys.executable, "-c", "import time; time.sleep(120)", "--policy", "round_robin"]

    router = object.__new__(Picky)
    router.port, router.metrics_port = experiments.free_port(), experiments.free_port()
    router.argv = [sys.executable, "-c", "import sys; print('Error starting router: Address already in use'); "
                   "sys.exit(1)", "--policy", "round_robin"]
    router.log, router.routing, router.process = tmp_path / "router.log", _Routing(), None
    router.start_timeout_s = 1.0
    with pytest.raises(experiments.RoutingError, match="did not answer within"):
        with router:
            pytest.fail("the block ran without a router")
    assert router.picked == 1  # retried once with new ports, then the hanging one timed out (not retried)
