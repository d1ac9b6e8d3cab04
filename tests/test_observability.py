"""The observability layer: its manifests, its rules under promtool, and a real local Prometheus.

The rules are judged as Prometheus reads them: the groups of the rendered PrometheusRule go through
``promtool check rules`` and a rules unit test (``promtool test rules``) with synthetic series. The local
target is a real Prometheus (Debian's package) on a free port, scraping two small HTTP servers that replay
a recorded scrape of vLLM and of LiteLLM (tests/data/observability/, trimmed to what the dashboards read),
with every counter and histogram growing by one recording per scrape, so rates and quantiles have data.
"""

from __future__ import annotations

import copy
import http.server
import math
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from inferbook import layers, load_profile
from inferbook.crds import CrdStore
from inferbook.layers.observability import dashboards, manifests, promtool, slo
from inferbook.layers.observability.local import LocalPrometheus, ours
from inferbook.layers.observability.prometheus import Prometheus, PrometheusError
from inferbook.paths import Layout
from inferbook.process import PortInUse
from inferbook.profile import list_profiles
from inferbook.secrets import SecretStore
from inferbook.validate import validate

from .conftest import ROOT

DATA = Path(__file__).parent / "data" / "observability"
SHIPPED = list_profiles(Layout.discover(start=ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rendered(layout: Layout) -> dict[str, list[dict[str, Any]]]:
    return {name: layers.render("observability", load_profile(name, layout=layout), layout) for name in SHIPPED}


def write_rules(objects: list[dict[str, Any]], folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(manifests.rule_groups(objects), sort_keys=False, width=200))
    return path


# --------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("name", SHIPPED)
def test_every_profile_renders_rules_and_dashboards_that_validate(name: str, rendered: dict, layout: Layout,
                                                                   crd_store: CrdStore) -> None:
    objects = rendered[name]
    report = validate(objects, layout, crds=crd_store)
    assert report.failures == [] and report.warnings == [], report.table().to_string()
    assert ("PrometheusRule", "schema") in {(f.kind, f.rule) for f in report.findings}  # checked, not skipped
    assert set(manifests.dashboards(objects)) == {"vllm-serving.json", "litellm-gateway.json", "dcgm-gpu.json"}
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            assert obj["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_the_objectives_come_from_the_profile(rendered: dict) -> None:
    def objective_exprs(objects: list[dict[str, Any]]) -> dict[str, str]:
        return {r["labels"]["sli"]: r["expr"] for r in manifests.rules_of(objects)
                if r.get("record") == manifests.OBJECTIVE_RECORD}

    assert objective_exprs(rendered["kind"]) == {"ttft_p95_seconds": "vector(0.25)", "itl_p95_seconds": "vector(0.02)",
                                                 "e2e_p95_seconds": "vector(1.5)",
                                                 "kv_cache_usage_ratio": "vector(0.9)"}  # ADR-0003's
    local = load_profile("local")
    assert objective_exprs(rendered["local"]) == {o.sli: f"vector({o.target:g})" for o in manifests.objectives(local)}
    ttft_ms = local.data["slo"]["ttft_p95_ms"]
    assert ttft_ms != 250 and objective_exprs(rendered["local"])["ttft_p95_seconds"] == f"vector({ttft_ms / 1000:g})"


def test_the_end_to_end_alert_names_the_answer_length_its_objective_holds_for(rendered: dict) -> None:
    """The objectives hold for the profile's benchmark shape: 16 tokens out on local, ADR-0003's 128 on a cluster."""
    def e2e_description(objects: list[dict[str, Any]]) -> str:
        [rule] = [r for r in manifests.rules_of(objects) if r.get("alert") == manifests.E2E_ALERT]
        return rule["annotations"]["description"]

    assert e2e_description(rendered["local"]).endswith("(requests of up to 16 output tokens).")
    assert e2e_description(rendered["gke-l4"]).endswith("(requests of up to 128 output tokens).")


def test_an_override_of_an_objective_reaches_the_rule(layout: Layout) -> None:
    objects = layers.render("observability", load_profile("kind", overrides={"slo.ttft_p95_ms": 400}), layout)
    [rule] = [r for r in manifests.rules_of(objects) if (r.get("labels") or {}).get("sli") == "ttft_p95_seconds"
              and "record" in r]
    assert rule["expr"] == "vector(0.4)"


def test_gpu_profiles_scrape_dcgm_exporter_by_their_stacks_label(rendered: dict) -> None:
    assert "PodMonitor" not in {o["kind"] for o in rendered["local"] + rendered["kind"]}
    gke = manifests.find(rendered["gke-l4"], "PodMonitor", "dcgm-exporter")
    operator = manifests.find(rendered["multi-gpu"], "PodMonitor", "dcgm-exporter")
    assert gke["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "dcgm-exporter"}
    assert operator["spec"]["selector"]["matchLabels"] == {"app": "nvidia-dcgm-exporter"}
    assert gke["spec"]["namespaceSelector"] == {"any": True}


def test_kserve_pods_are_scraped_by_a_pod_monitor(layout: Layout, crd_store: CrdStore) -> None:
    objects = layers.render("observability", load_profile("kind", overrides={"features.kserve": True}), layout)
    monitor = manifests.find(objects, "PodMonitor", "vllm-kserve")
    serving = layers.render("serving", load_profile("kind", overrides={"features.kserve": True}), layout)
    pod_labels = manifests.find(serving, "InferenceService", "vllm")["spec"]["predictor"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert validate(objects, layout, crds=crd_store).failures == []


def test_a_typo_in_the_rule_fails_its_crd_schema(rendered: dict, layout: Layout, crd_store: CrdStore) -> None:
    objects = copy.deepcopy(rendered["kind"])
    rule = manifests.prometheus_rule(objects)
    rule["spec"]["groups"][0]["rules"][0]["recrod"] = rule["spec"]["groups"][0]["rules"][0].pop("record")
    failures = validate(objects, layout, crds=crd_store).failures
    assert [(f.kind, f.rule) for f in failures] == [("PrometheusRule", "schema")]
    assert "recrod" in failures[0].message


def test_dashboard_panels_read_vllm_v1_names_litellm_and_dcgm(rendered: dict) -> None:
    queries = dashboards.queries(manifests.dashboards(rendered["gke-l4"]))
    read = {name for q in queries for name in manifests.metric_names(q.expr)}
    assert {"vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
            "vllm:e2e_request_latency_seconds_bucket", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} <= read
    assert {"litellm_spend_metric_total", "litellm_api_key_rate_limit_used_metric"} <= read
    assert any(name.startswith("DCGM_FI_DEV") for name in read)
    assert not {"vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds_bucket"} & read  # pre-V1 names


def test_grafana_variables_become_promql() -> None:
    expr = 'rate(x{model_name=~"$model_name", k=~"${api_key_alias}"}[$__rate_interval])'
    assert dashboards.promql(expr, "30s") == 'rate(x{model_name=~".*", k=~".*"}[30s])'
    assert dashboards.legend("p95 {{model_name}}", {"model_name": "m"}) == "p95 m"


# --------------------------------------------------------------------------- promtool


def test_the_rendered_rules_pass_promtool_check(rendered: dict, tmp_path: Path) -> None:
    report = promtool.check_rules(write_rules(rendered["kind"], tmp_path))
    rules = len(manifests.rules_of(rendered["kind"]))
    assert f"SUCCESS: {rules} rules found" in report


def test_promtool_check_rejects_a_broken_expression_naming_the_fix(rendered: dict, tmp_path: Path) -> None:
    objects = copy.deepcopy(rendered["kind"])
    manifests.prometheus_rule(objects)["spec"]["groups"][1]["rules"][0]["expr"] = "histogram_quantile(0.95, sum by (le"
    with pytest.raises(promtool.RulesInvalid, match="prometheusrule.yaml"):
        promtool.check_rules(write_rules(objects, tmp_path))


def rules_unit_test(objects: list[dict[str, Any]], folder: Path) -> str:
    write_rules(objects, folder)
    shutil.copy(DATA / "slo-rules.test.yaml", folder / "slo-rules.test.yaml")
    return promtool.unit_test_rules(folder / "slo-rules.test.yaml")


def test_each_slo_alert_fires_on_a_breaching_series_and_not_on_a_healthy_one(rendered: dict, tmp_path: Path) -> None:
    assert "SUCCESS" in rules_unit_test(rendered["kind"], tmp_path)


def test_the_unit_test_judges_the_rendered_objectives(rendered: dict, tmp_path: Path) -> None:
    """A control: the local profile's objectives are looser (TTFT 5 s), so the breaching TTFT series of the
    unit test (0.49 s) does not fire there, and the test says which alert it missed."""
    with pytest.raises(promtool.RulesInvalid, match="InferbookTimeToFirstTokenSLO"):
        rules_unit_test(rendered["local"], tmp_path)


# --------------------------------------------------------------------------- a real local Prometheus


class Replay(http.server.ThreadingHTTPServer):
    """Serves a recorded /metrics text; counters and histograms grow by one recording per scrape."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.scrapes = 0
        self.cumulative = set()
        for line in text.splitlines():
            if line.startswith("# TYPE ") and line.split()[3] in ("counter", "histogram"):
                self.cumulative.add(re.sub(r"_total$", "", line.split()[2]))
        super().__init__(("127.0.0.1", 0), _ReplayHandler)

    def body(self) -> bytes:
        self.scrapes += 1
        out = []
        for line in self.text.splitlines():
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            family = re.sub(r"(_bucket|_sum|_count|_total)$", "", name)
            if not line.startswith("#") and family in self.cumulative:
                head, value = line.rsplit(" ", 1)
                line = f"{head} {float(value) * self.scrapes!r}"
            out.append(line)
        return ("\n".join(out) + "\n").encode()


class _ReplayHandler(http.server.BaseHTTPRequestHandler):
    server: Replay

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.server.body()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def replayed() -> Iterator[dict[str, Replay]]:
    servers = {"vllm": Replay((DATA / "vllm-metrics.txt").read_text()),
               "litellm": Replay((DATA / "litellm-metrics.txt").read_text())}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers
    for server in servers.values():
        server.shutdown()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, replayed: dict[str, Replay]) -> Iterator[LocalPrometheus]:
    """A real Prometheus on a free port, its data and state in a temporary cache, scraping the replays every second."""
    overrides = {"local.ports.prometheus": free_port(), "local.ports.serving": replayed["vllm"].server_address[1],
                 "local.ports.llm-gateway": replayed["litellm"].server_address[1]}
    cache = tmp_path_factory.mktemp("cache")
    local = LocalPrometheus(load_profile("local", overrides=overrides),
                            Layout(root=ROOT, build_dir=tmp_path_factory.mktemp("build")), cache_dir=cache,
                            secrets=SecretStore("local", directory=cache / "secrets"), say=lambda _: None,
                            scrape_interval_s=1)
    local.start()
    local.api().wait_for("inferbook:vllm_ttft_seconds:p95_5m", lambda a: any(s.has_values for s in a), 60,
                         lambda _: None, "the SLIs from the replayed scrapes")
    yield local
    local.stop()


def test_the_local_prometheus_loads_the_rendered_rules_and_scrapes_both_layers(prometheus: LocalPrometheus) -> None:
    status = prometheus.status()
    assert status["healthy"] and status["targets"] == {"vllm": "up", "litellm": "up"}
    rendered = manifests.rule_groups(manifests.MANIFESTS.render(prometheus.profile, prometheus.layout))
    assert yaml.safe_load(prometheus.rules_path.read_text()) == rendered
    loaded = prometheus.api().rules()
    assert status["rules"] == len(loaded) == len(manifests.rules_of(manifests.MANIFESTS.render(
        prometheus.profile, prometheus.layout)))
    assert {r["health"] for r in loaded} == {"ok"}
    config = yaml.safe_load(prometheus.config_path.read_text())
    assert {j["job_name"]: j["metrics_path"] for j in config["scrape_configs"]} == {"vllm": "/metrics",
                                                                                   "litellm": "/metrics/"}
    assert prometheus.data_dir.is_relative_to(prometheus.cache_dir) and not prometheus.data_dir.is_relative_to(ROOT)


def test_every_dashboard_query_returns_data_and_dcgm_is_skipped_without_a_gpu(prometheus: LocalPrometheus) -> None:
    objects = manifests.MANIFESTS.render(prometheus.profile, prometheus.layout)
    results = dashboards.run(prometheus.api(), dashboards.queries(manifests.dashboards(objects)), prometheus.profile,
                             time.time() - 60, time.time(), 1, "10s")
    assert [r.verdict for r in results if not r.ok] == []
    skipped = [r for r in results if r.skipped]
    assert skipped and all(r.query.needs_gpu and "gpu.type: none" in r.skipped for r in skipped)
    table = dashboards.table(results)
    assert list(table.columns) == ["dashboard", "panel", "query", "returned", "pass"] and table["pass"].all()
    frame = next(r for r in results if r.query.panel == "Time to first token" and r.query.ref == "B").frame()
    assert list(frame.columns) == ["p95 smollm2-135m-instruct"] and frame.notna().any().all()


def test_a_dashboard_is_drawn_one_plot_per_panel_with_a_line_per_series(prometheus: LocalPrometheus) -> None:
    objects = manifests.MANIFESTS.render(prometheus.profile, prometheus.layout)
    boards = manifests.dashboards(objects)
    results = dashboards.run(prometheus.api(), dashboards.queries(boards), prometheus.profile,
                             time.time() - 60, time.time(), 1, "10s")
    board = boards["vllm-serving.json"]
    figure = dashboards.plot(results, board["title"])
    drawn = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title().split(" (")[0] for ax in drawn] == [p["title"] for p in board["panels"]]
    assert all(ax.get_lines() for ax in drawn)


def test_dcgm_queries_are_valid_promql_though_empty_here(prometheus: LocalPrometheus, rendered: dict) -> None:
    gpu = [q for q in dashboards.queries(manifests.dashboards(rendered["gke-l4"])) if q.needs_gpu]
    assert gpu
    for query in gpu:
        assert prometheus.api().query(dashboards.promql(query.expr, "1m")) == []  # parsed and run: no series


def test_a_query_without_series_fails_the_check(prometheus: LocalPrometheus) -> None:
    query = dashboards.Query("d", "p", "A", "vllm:no_such_metric", "", "")
    [result] = dashboards.run(prometheus.api(), [query], prometheus.profile, time.time() - 10, time.time(), 1, "5s")
    assert not result.ok and result.verdict == "no data"
    broken = dashboards.Query("d", "p", "A", "rate(vllm:x[", "", "")
    [result] = dashboards.run(prometheus.api(), [broken], prometheus.profile, time.time() - 10, time.time(), 1, "5s")
    assert not result.ok and result.verdict.startswith("error: Prometheus refused")


def test_the_slo_table_reads_the_recording_rules_and_the_profiles_objectives(prometheus: LocalPrometheus) -> None:
    api = prometheus.api()
    table = slo.table(api, prometheus.profile, time.time(), 60)
    assert list(table.index)[:3] == ["time to first token, p95", "inter-token latency, p95", "end-to-end latency, p95"]
    assert set(table["verdict"]) <= {"met", "missed"}  # every SLI has a value
    assert table.loc["time to first token, p95", "objective"] == "< 5 s"  # the local profile's, not ADR-0003's
    for objective in manifests.objectives(prometheus.profile):
        assert math.isclose(slo.objective_in_prometheus(api, objective.sli, time.time()), objective.target)


def test_a_healthy_prometheus_of_ours_is_reused(prometheus: LocalPrometheus) -> None:
    said: list[str] = []
    again = LocalPrometheus(prometheus.profile, prometheus.layout, cache_dir=prometheus.cache_dir,
                            secrets=prometheus.secrets, say=said.append, scrape_interval_s=1)
    pid = prometheus.process.pid()
    assert again.bring_up(30)["reused"] and again.process.pid() == pid
    assert any("reusing" in line for line in said)
    assert ours(prometheus.base, prometheus.config_path) and not ours(prometheus.base, prometheus.config_path.parent)


def test_a_port_held_by_another_process_is_refused(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        local = LocalPrometheus(load_profile("local", overrides={"local.ports.prometheus": port}),
                                Layout(root=ROOT, build_dir=tmp_path / "build"), cache_dir=tmp_path, say=lambda _: None)
        assert not local.healthy()
        with pytest.raises(PortInUse, match="local.ports.prometheus"):
            local.start()


def test_litellm_behind_auth_is_scraped_with_a_token_file_not_a_key_in_the_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferbook.layers.observability import local as local_module

    real = local_module.gateway_manifests.gateway_config

    def requiring_auth(objects: list[dict[str, Any]]) -> dict[str, Any]:
        config = real(objects)
        config["litellm_settings"]["require_auth_for_metrics_endpoint"] = True
        return config

    monkeypatch.setattr(local_module.gateway_manifests, "gateway_config", requiring_auth)
    store = SecretStore("local", directory=tmp_path / "secrets")
    local = LocalPrometheus(load_profile("local"), Layout(root=ROOT, build_dir=tmp_path / "build"),
                            cache_dir=tmp_path, secrets=store, say=lambda _: None)
    jobs, token = local.scrape_configs()
    litellm = next(j for j in jobs if j["job_name"] == "litellm")
    assert litellm["authorization"] == {"type": "Bearer", "credentials_file": str(local.token_path)}
    assert token == store.get("litellm-master-key/master-key")
    assert token not in yaml.safe_dump(local.config(jobs))


def test_an_unreachable_prometheus_is_a_clear_error() -> None:
    with pytest.raises(PrometheusError, match="cannot reach Prometheus"):
        Prometheus(f"http://127.0.0.1:{free_port()}", timeout=2).query("up")


# --------------------------------------------------------------------------- the cluster path


def test_on_a_cluster_the_objects_are_applied_and_the_operators_prometheus_is_queried(
        prometheus: LocalPrometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the API-server double, with the port-forward (which the double cannot speak) replaced by the
    session's real Prometheus: what is proven is the orchestration, not the operator's behaviour."""
    import contextlib

    from inferbook import kube
    from inferbook.layers.observability import cluster, steps

    from .kube_double import ApiType, FakeKubeApiServer

    profile = load_profile("gke-l4")
    namespace, context = profile.get("target.namespace"), profile.get("target.context")
    objects = layers.render("observability", profile, Layout(ROOT, tmp_path))
    forwarded: list[tuple[str, str, str, int]] = []

    @contextlib.contextmanager
    def forward(ctx: str, ns: str, service: str, port: int, **kwargs: Any) -> Iterator[str]:
        forwarded.append((ctx, ns, service, port))
        yield prometheus.base

    monkeypatch.setattr(kube, "port_forward", forward)
    with FakeKubeApiServer() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kc", context=context)))
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        with pytest.raises(kube.MissingCrd, match="kube-prometheus-stack"):
            steps.provision(profile, Layout(ROOT, tmp_path), objects, say=lambda _: None)
        api.install(ApiType("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules", True),
                    ApiType("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", True))
        endpoint = steps.provision(profile, Layout(ROOT, tmp_path), objects, say=lambda _: None)
        assert api.get_object("prometheusrules", namespace, manifests.RULE_NAME, group="monitoring.coreos.com")
        assert api.get_object("podmonitors", namespace, "dcgm-exporter", group="monitoring.coreos.com")
        assert api.get_object("configmaps", namespace, "inferbook-dashboard-vllm-serving")
    assert forwarded == [(context, cluster.PROMETHEUS_NAMESPACE, cluster.PROMETHEUS_SERVICE, 9090)]
    assert endpoint.where == f"cluster ({context})" and endpoint.status["applied"] == len(objects)
    assert endpoint.status["version"] == prometheus.api().buildinfo()["version"]
    assert endpoint.scrape_interval_s == cluster.SCRAPE_INTERVAL_S and endpoint.rate_interval == "120s"
    endpoint.close()
