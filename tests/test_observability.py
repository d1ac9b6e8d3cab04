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
from inferbook.layers.observability import dashboards, load, manifests, promtool, slo, spend
from inferbook.layers.observability.local import LocalPrometheus, ours
from inferbook.layers.observability.prometheus import Prometheus, PrometheusError
from inferbook.paths import Layout
from inferbook.process import PortInUse
from inferbook.profile import list_profiles
from inferbook.secrets import SecretStore
from inferbook.validate import validate

from .conftest import ROOT, free_port

DATA = Path(__file__).parent / "data" / "observability"
SHIPPED = list_profiles(Layout.discover(start=ROOT))




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
    assert set(manifests.dashboards(objects)) == {"vllm-serving.json", "litellm-gateway.json", "litellm-spend.json",
                                                  "dcgm-gpu.json"}
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            assert obj["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert ("ExternalSecret", "schema") in {(f.kind, f.rule) for f in report.findings}  # the datasource, checked


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
    assert {"litellm_proxy_total_requests_metric_total", "litellm_api_key_rate_limit_used_metric"} <= read
    # Spend and budgets are read from the ledger (ADR-0015), not rebuilt from LiteLLM's Prometheus counters.
    assert not {"litellm_spend_metric_total", "litellm_remaining_api_key_budget_metric"} & read
    assert any(name.startswith("DCGM_FI_DEV") for name in read)
    assert not {"vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds_bucket"} & read  # pre-V1 names


# --------------------------------------------------------------------------- the spend dashboard: SQL on the ledger


@pytest.fixture(scope="module")
def litellm_schema() -> dict[str, set[str]]:
    """The tables and columns of the installed LiteLLM's Prisma schema (its environment, built once per machine)."""
    from inferbook.envs import LITELLM
    from inferbook.layers.llm_gateway.local import litellm_schema as schema_of
    from inferbook.paths import default_cache_dir

    return spend.schema_columns(schema_of(LITELLM.ensure(default_cache_dir())).read_text())


def spend_queries(objects: list[dict[str, Any]]) -> list[spend.SqlQuery]:
    return spend.queries(manifests.dashboards(objects))


def unknown_names(sql: str, schema: dict[str, set[str]]) -> list[str]:
    return sorted([table for table in spend.sql_names(sql) if table not in schema]
                  + [f"{table}.{column}" for table, columns in spend.sql_names(sql).items() if table in schema
                     for column in columns - schema[table]])


def test_the_spend_panels_name_only_tables_and_columns_of_litellms_schema(rendered: dict,
                                                                          litellm_schema: dict) -> None:
    found = spend_queries(rendered["kind"])
    assert [q.panel for q in found] == ["Spend per key", "Spend per team", "Spend over time per key",
                                        "Spend per model"]
    assert {q.dashboard for q in found} == {spend.DASHBOARD}
    read = {table for q in found for table in spend.sql_names(q.sql)}
    assert read == {"LiteLLM_VerificationToken", "LiteLLM_TeamTable", "LiteLLM_SpendLogs"}
    for sql in [q.sql for q in found] + [spend.BOOKED_SQL]:
        names = spend.sql_names(sql)
        assert names and all(names.values()), f"no qualified column found in: {sql}"
        assert unknown_names(sql, litellm_schema) == [], sql
    # The check can fail: a column LiteLLM does not have, and a table it does not have, are named.
    assert unknown_names('SELECT k.alias FROM "LiteLLM_VerificationToken" k', litellm_schema) == [
        "LiteLLM_VerificationToken.alias"]
    assert unknown_names('SELECT s.spend FROM "LiteLLM_Spend" s', litellm_schema) == ["LiteLLM_Spend"]
    # Prisma's relation fields are no columns; @map names the column.
    assert "litellm_budget_table" not in litellm_schema["LiteLLM_VerificationToken"]
    assert spend.schema_columns('model M {\n  id String @id\n  createdAt DateTime @map("created_at")\n'
                                '  other N?\n  @@map("m_table")\n}\nmodel N {\n  id Int @id\n}\n') == {
        "m_table": {"id", "created_at"}, "N": {"id"}}


def test_the_spend_dashboards_panels_read_the_ledger_datasource_and_the_time_range(rendered: dict) -> None:
    board = manifests.dashboards(rendered["kind"])["litellm-spend.json"]
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert panel["datasource"] == target["datasource"] == {"type": "grafana-postgresql-datasource",
                                                                    "uid": manifests.LEDGER_DATASOURCE_UID}
            # The spend log is read over the dashboard's time range; the key and team tables are the ledger now.
            assert ("$__timeFilter(s.\"startTime\")" in target["rawSql"]) == ("LiteLLM_SpendLogs" in target["rawSql"])
    series = [p for p in board["panels"] if p["targets"][0]["format"] == "time_series"]
    assert [p["title"] for p in series] == [spend.OVER_TIME_PANEL]
    assert "$__timeGroupAlias(" in series[0]["targets"][0]["rawSql"]
    assert spend.PER_KEY_PANEL in [p["title"] for p in board["panels"]]


def test_grafana_macros_become_sql() -> None:
    sql = ('SELECT $__timeGroupAlias(s."startTime", $__interval), SUM(s.spend) FROM "LiteLLM_SpendLogs" s '
           "WHERE $__timeFilter(s.\"startTime\") AND s.\"endTime\" <= $__timeTo() AND s.x > $__timeFrom() "
           "GROUP BY $__timeGroup(s.\"startTime\", '5m') -- $__interval_ms")
    start, end = 1700000000.25, 1700000600.0  # 2023-11-14T22:13:20.25Z, 22:23:20Z
    assert spend.grafana_sql(sql, start, end, "10s") == (
        'SELECT floor(extract(epoch from s."startTime")/10)*10 AS "time", SUM(s.spend) FROM "LiteLLM_SpendLogs" s '
        "WHERE s.\"startTime\" BETWEEN '2023-11-14T22:13:20.25Z' AND '2023-11-14T22:23:20Z' "
        "AND s.\"endTime\" <= '2023-11-14T22:23:20Z' AND s.x > '2023-11-14T22:13:20.25Z' "
        "GROUP BY floor(extract(epoch from s.\"startTime\")/300)*300 -- 10000")
    assert spend.grafana_sql("SELECT 1 WHERE $__timeFilter(f(a, b))", 0, 1, "1m") == (
        "SELECT 1 WHERE f(a, b) BETWEEN '1970-01-01T00:00:00Z' AND '1970-01-01T00:00:01Z'")
    assert spend.interval_seconds("'2h'") == 7200 and spend.interval_seconds("500ms") == 0.5
    with pytest.raises(spend.MacroError, match=r"\$__unixEpochFilter"):
        spend.grafana_sql("SELECT 1 WHERE $__unixEpochFilter(t)", 0, 1, "1m")
    with pytest.raises(spend.MacroError, match=r"\$team"):
        spend.grafana_sql("SELECT 1 WHERE t.team_alias = '$team'", 0, 1, "1m")
    with pytest.raises(spend.MacroError, match="not a Grafana interval"):
        spend.grafana_sql("SELECT $__timeGroup(t, fortnight)", 0, 1, "1m")


def test_the_datasource_reaches_the_gateways_ledger_as_its_read_only_role(layout: Layout, crd_store: CrdStore) -> None:
    from inferbook.layers.llm_gateway import manifests as gateway

    for name, overrides, service in (("kind", {"target.namespace": "team-a"}, "litellm-db-r"),
                                     ("prod", {}, "litellm-db-ro")):
        profile = load_profile(name, overrides=overrides, layout=layout)
        ledger_objects = layers.render("llm-gateway", profile, layout)
        objects = layers.render("observability", profile, layout)
        assert validate(ledger_objects + objects, layout, crds=crd_store).failures == []
        namespace = profile.data["target"]["namespace"]
        role = gateway.ledger_reader(ledger_objects)
        assert role["name"] == "ledger_reader" and role["login"] and role["inRoles"] == ["pg_read_all_data"]
        assert not any(role.get(flag) for flag in ("superuser", "createdb", "createrole", "replication", "bypassrls"))
        # CloudNativePG's passwordSecret: a basic-auth Secret whose username is the role, from External Secrets.
        role_secret = manifests.find(ledger_objects, "ExternalSecret", role["passwordSecret"]["name"])
        template = role_secret["spec"]["target"]["template"]
        assert template["type"] == "kubernetes.io/basic-auth" and template["data"]["username"] == role["name"]
        assert role_secret["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": "secret-store"}
        # Grafana's datasource: a Secret for its sidecar, in Grafana's namespace, from the same remote key.
        source = manifests.find(objects, "ExternalSecret", manifests.LEDGER_DATASOURCE)
        assert source["metadata"]["namespace"] == "monitoring"
        assert source["spec"]["target"]["template"]["metadata"]["labels"] == {manifests.DATASOURCE_LABEL: "1"}
        assert [d["remoteRef"]["key"] for d in source["spec"]["data"]] == \
            [d["remoteRef"]["key"] for d in role_secret["spec"]["data"]] == ["inferbook-litellm-ledger-reader-password"]
        password = "it's $HOME: \"#1\""  # quotes, a colon, a hash, and a $ that Grafana would expand
        datasource = manifests.ledger_datasource(objects, password)
        assert datasource["type"] == "grafana-postgresql-datasource" and datasource["uid"] == "litellm-ledger"
        assert datasource["url"] == f"{service}.{namespace}.svc.cluster.local:5432"
        assert manifests.ledger_service(profile) == service
        assert datasource["user"] == role["name"]
        cluster = manifests.find(ledger_objects, "Cluster", gateway.GATEWAY_DB_CLUSTER)
        assert datasource["jsonData"]["database"] == cluster["spec"]["bootstrap"]["initdb"]["database"]
        assert datasource["secureJsonData"]["password"] == password.replace("$", "$$")


def test_a_datasource_template_without_the_ledger_service_is_refused(rendered: dict) -> None:
    objects = copy.deepcopy(rendered["kind"])
    source = manifests.find(objects, "ExternalSecret", manifests.LEDGER_DATASOURCE)
    data = source["spec"]["target"]["template"]["data"]
    data[manifests.LEDGER_DATASOURCE_FILE] = data[manifests.LEDGER_DATASOURCE_FILE].replace("{{ .password", "{{ .pw")
    with pytest.raises(manifests.ManifestError, match="password once"):
        manifests.ledger_datasource(objects)
    with pytest.raises(manifests.ManifestError, match="names the ledger's Service"):
        manifests._ledger_host([{**source, "spec": {"target": {"template": {"data": {
            manifests.LEDGER_DATASOURCE_FILE: "url: postgres.example:5432"}}}}}], load_profile("kind"))


def fake_load(spent_ok: int = 2) -> load.Load:
    from inferbook import smoke
    from inferbook.layers.llm_gateway.enforcement import Tenants

    tenants = Tenants("demo", "team-1", {"load": {"models": ["coder-chat"]}, "limited": {"models": ["coder-chat"]}},
                      {}, "observability")
    calls = [smoke.Call("chat", True, 1.0) for _ in range(spent_ok)] + [smoke.Call("chat", False, 1.0)]
    return load.Load(calls, [200, 429], 0.0, 1.0, tenants)


class FakeLedger(spend.Ledger):
    """A ledger whose answers a test gives: ``answers`` maps a fragment of the SQL to the frames it returns in turn."""

    def __init__(self, answers: dict[str, list[Any]], refusal: str = "permission denied for table x") -> None:
        super().__init__("127.0.0.1", 1, "litellm", "ledger_reader", lambda: "", "test")
        self.answers, self.refused, self.asked = answers, refusal, 0

    def query(self, sql: str, timeout: float = 60) -> Any:
        import pandas as pd

        self.asked += 1
        key = next(k for k in self.answers if k in sql)
        frames = self.answers[key]
        return pd.DataFrame(frames.pop(0) if len(frames) > 1 else frames[0])

    def refusal(self, sql: str) -> str:
        return self.refused


class FakeAdmin:
    def __init__(self, spends: dict[str, float]) -> None:
        self.spends = spends

    def keys(self) -> list[dict[str, Any]]:
        return [{"alias": alias, "spend_usd": value} for alias, value in self.spends.items()]


def spend_results(per_key: dict[str, float], over_time: dict[str, list[float]]) -> list[spend.SqlResult]:
    import pandas as pd

    def result(panel: str, fmt: str, rows: list[dict[str, Any]]) -> spend.SqlResult:
        return spend.SqlResult(spend.SqlQuery(spend.DASHBOARD, panel, "A", "SELECT", fmt, "currencyUSD"), "SELECT",
                               pd.DataFrame(rows))

    series = [{"time": 1700000000 + 10 * i, "metric": alias, "value": v}
              for alias, values in over_time.items() for i, v in enumerate(values)]
    return [result(spend.PER_KEY_PANEL, "table", [{"key": a, "team": "demo", "spend": v} for a, v in per_key.items()]),
            result(spend.OVER_TIME_PANEL, "time_series", series)]


def test_the_spend_check_holds_the_panel_to_litellms_figure_to_the_micro_dollar() -> None:
    traffic = fake_load()
    aliases = list(spend.answered(traffic))
    assert aliases == ["demo-observability-load", "demo-observability-limited"]
    assert spend.answered(traffic) == {"demo-observability-load": 2, "demo-observability-limited": 1}
    member = {"pg_has_role": [[{"member": "t", "role": "ledger_reader"}]]}
    exact = {aliases[0]: 0.000123 + 0.0000004, aliases[1]: 0.000002}
    results = spend_results(exact, {aliases[0]: [0.0001, 0.0000234], aliases[1]: [0.000002]})
    rows = spend.checks(FakeLedger(member), results, FakeAdmin(exact), traffic)
    assert rows["pass"].all(), rows.to_string()
    assert len(rows) == 2 + 2 * len(aliases)
    # A micro-dollar off, and the check fails for that key only.
    off = {**exact, aliases[1]: exact[aliases[1]] + 1e-6}
    rows = spend.checks(FakeLedger(member), results, FakeAdmin(off), traffic)
    assert list(rows.index[~rows["pass"]]) == [f"spend panel = LiteLLM's spend ({aliases[1]})"]
    # A ledger role that could write fails the first row; an empty panel fails the second.
    rows = spend.checks(FakeLedger(member, refusal=""), results[:1], FakeAdmin(exact), traffic)
    assert not rows.loc["the dashboards read the ledger as a read-only role", "pass"]
    results[1].rows = results[1].rows.iloc[0:0]
    rows = spend.checks(FakeLedger(member), results, FakeAdmin(exact), traffic)
    failed = list(rows.index[~rows["pass"]])
    assert failed[0] == "every spend panel's SQL returns rows" and all("adds up" in f for f in failed[1:])


def test_a_time_series_panel_is_drawn_one_column_per_key() -> None:
    [_, series] = spend_results({}, {"a": [1.0, 2.0], "b": [3.0]})
    frame = series.frame()
    assert list(frame.columns) == ["a", "b"] and len(frame) == 2
    assert frame.index[0].isoformat() == "2023-11-14T22:13:20+00:00" and frame["a"].sum() == 3.0


def test_the_wait_returns_once_the_ledger_booked_the_load_and_names_what_is_missing_if_never() -> None:
    traffic = fake_load()
    load_alias, limited_alias = spend.answered(traffic)
    partial = {"key": [load_alias, limited_alias], "spend": [0.0001, 0.0],
               "logged requests": [1, 0], "logged spend": [0.0001, 0.0]}
    done = {"key": [load_alias, limited_alias], "spend": [0.0003, 0.000002],
            "logged requests": [2, 1], "logged spend": [0.0003, 0.000002]}
    ledger = FakeLedger({"LiteLLM_SpendLogs": [partial, partial, done]})
    frame = spend.wait_for_ledger(ledger, traffic, say=lambda _: None, timeout=30, poll=0)
    assert ledger.asked == 3 and frame.loc[load_alias, "logged requests"] == 2
    never = FakeLedger({"LiteLLM_SpendLogs": [partial]})
    with pytest.raises(spend.LedgerError, match=rf"{load_alias}: 1 of 2 requests logged.*{limited_alias}: 0 of 1"):
        spend.wait_for_ledger(never, traffic, say=lambda _: None, timeout=0.05, poll=0.01)


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
                 "local.ports.llm-gateway": replayed["litellm"].server_address[1],
                 "features.routing": False}  # one vLLM (the replay), not the routing layer's replicas too
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


def test_the_dashboards_window_ends_on_an_evaluation_so_the_last_scrape_is_in_it(rendered: dict) -> None:
    """A range query is evaluated at start + k * step: with the window a whole number of steps long, its last
    evaluation is the moment asked for, so a series first scraped just before it is seen (it was not, when the
    window started at an arbitrary offset: the refused-requests panel then came back empty now and then)."""
    from inferbook.layers.observability import steps
    from inferbook.layers.observability.endpoint import PrometheusEndpoint

    asked: list[tuple[float, float, float]] = []

    class Recording(Prometheus):
        def query_range(self, expr: str, start: float, end: float, step: float) -> list:
            asked.append((start, end, step))
            return []

    class Endpoint(PrometheusEndpoint):
        @property
        def api(self) -> Prometheus:
            return Recording(self.base)

    endpoint = Endpoint("http://127.0.0.1:1", "test", {}, 5)
    traffic = load.Load([], [], started=1000.0, ended=1050.0, tenants=fake_load().tenants)
    steps.run_dashboards(endpoint, rendered["local"], load_profile("local"), traffic, until=1052.3)
    assert asked and {(s, e, st) for s, e, st in asked} == {(987.3, 1052.3, 5)}  # 13 steps of 5 s, from before 990


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


# --------------------------------------------------------------------------- the spend dashboard on a real ledger


@pytest.fixture(scope="module")
def ledger_postgres() -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """A real local Postgres of the gateway layer (LocalPostgres, supervised, on a free port, in a folder of its own)
    with LiteLLM's migrations applied, and the managed roles of the rendered Cluster. Stopped at the end."""
    import tempfile

    from inferbook.envs import LITELLM
    from inferbook.layers.llm_gateway import manifests as gateway
    from inferbook.layers.llm_gateway.postgres import LocalPostgres
    from inferbook.layers.llm_gateway.prisma_offline import apply_migrations
    from inferbook.paths import default_cache_dir
    from inferbook.supervise import Supervisor

    root = Path(tempfile.mkdtemp(prefix="inferbook-ledger-"))  # not pytest's tmp: the postgres user must reach it
    profile = load_profile("local", overrides={"local.ports.postgres": free_port()})
    state = root / "state"
    postgres = LocalPostgres(profile, SecretStore("local", directory=root / "secrets"), data_root=root / "pg",
                             say=lambda _: None, state_dir=state, supervisor=Supervisor(state))
    postgres.start()
    try:
        apply_migrations(postgres.url(), LITELLM.ensure(default_cache_dir()), say=lambda _: None)
        yield postgres, gateway.ledger_roles(layers.render("llm-gateway", profile, Layout(ROOT, root / "build")))
    finally:
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def reader(postgres: Any, role: dict[str, Any]) -> spend.Ledger:
    secret = role["passwordSecret"]["name"]
    return spend.Ledger("127.0.0.1", postgres.port, "litellm", role["name"],
                        lambda: postgres.secrets.get(f"{secret}/password"), "test")


@pytest.mark.slow
def test_the_read_only_role_is_kept_as_the_cluster_declares_it(ledger_postgres: tuple) -> None:
    postgres, roles = ledger_postgres
    [role] = roles
    postgres.ensure_role(role)
    postgres.ensure_role(role)  # idempotent: the second pass changes nothing
    ledger = reader(postgres, role)
    facts = ledger.query('SELECT current_user AS "user", pg_has_role(current_user, \'pg_read_all_data\', \'member\') '
                         'AS "member", (SELECT COUNT(*) FROM "LiteLLM_SpendLogs") AS "logs"')
    assert facts.to_dict("records") == [{"user": "ledger_reader", "member": "t", "logs": 0}]
    for write in ('UPDATE "LiteLLM_VerificationToken" SET spend = 0 WHERE false',
                  'INSERT INTO "LiteLLM_TeamTable" (team_id) VALUES (\'x\')', 'CREATE TABLE t (x int)'):
        assert "permission denied" in ledger.refusal(write), write
    # Out of pg_read_all_data, the role reads nothing; back in, it reads again.
    postgres.ensure_role({**role, "inRoles": []})
    assert "permission denied" in ledger.refusal('SELECT 1 FROM "LiteLLM_SpendLogs"')
    postgres.ensure_role(role)
    assert ledger.refusal('SELECT 1 FROM "LiteLLM_SpendLogs"') == ""
    # ensure: absent drops it, as the operator would; present makes it again.
    postgres.ensure_role({**role, "ensure": "absent"})
    with pytest.raises(spend.LedgerError, match="ledger_reader"):
        ledger.query("SELECT 1")
    postgres.ensure_role(role)
    assert ledger.query('SELECT 1 AS "one"').to_dict("records") == [{"one": 1}]


@pytest.mark.slow
def test_every_spend_panel_runs_on_litellms_schema_and_an_empty_ledger_fails_it(ledger_postgres: tuple,
                                                                              rendered: dict) -> None:
    """Postgres itself resolves every table, column and type of the panels, in the schema LiteLLM's migrations
    make; with nothing booked yet, every panel returns no rows, which fails it as an empty PromQL panel fails."""
    postgres, [role] = ledger_postgres
    postgres.ensure_role(role)
    ledger = reader(postgres, role)
    results = spend.run(ledger, spend_queries(rendered["local"]), time.time() - 3600, time.time(), "10s")
    assert [r.verdict for r in results] == ["no rows"] * 4 and not any(r.ok for r in results)
    table = spend.table(results)
    assert list(table.columns) == ["dashboard", "panel", "query", "returned", "pass"] and not table["pass"].any()
    assert "$__" not in " ".join(table["query"])
    assert ledger.query(spend.BOOKED_SQL.format(aliases="'nobody'")).empty
    # A column the schema lacks is the ledger's error, as a result that fails, not an exception.
    broken = spend.SqlQuery(spend.DASHBOARD, "broken", "A", 'SELECT k.alias FROM "LiteLLM_VerificationToken" k',
                            "table", "")
    [result] = spend.run(ledger, [broken], 0, 1, "10s")
    assert not result.ok and result.verdict.startswith("error:") and "k.alias" in result.verdict


@pytest.mark.slow
def test_on_a_cluster_the_ledger_is_reached_through_its_service_with_the_role_secrets_password(
        ledger_postgres: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the API-server double, with the port-forward (which the double cannot speak) replaced by this
    module's real Postgres: what is proven is the orchestration (Service, Secret, role, database), not the
    operator's or Grafana's behaviour."""
    import base64
    import contextlib

    from inferbook import kube

    from .kube_double import FakeKubeApiServer

    postgres, [role] = ledger_postgres
    postgres.ensure_role(role)
    password = postgres.secrets.get(f"{role['passwordSecret']['name']}/password")
    profile = load_profile("kind")
    namespace, context = profile.get("target.namespace"), profile.get("target.context")
    forwarded: list[tuple[str, str, str, int]] = []

    @contextlib.contextmanager
    def forward(ctx: str, ns: str, service: str, port: int, **kwargs: Any) -> Iterator[str]:
        forwarded.append((ctx, ns, service, port))
        yield f"http://127.0.0.1:{postgres.port}"

    monkeypatch.setattr(kube, "port_forward", forward)
    with FakeKubeApiServer() as api:
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kc", context=context)))
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        with spend.connect(profile, Layout(ROOT, tmp_path), say=lambda _: None) as ledger:
            assert forwarded == [(context, namespace, "litellm-db-r", 5432)]  # one instance: -ro reaches no pod
            assert (ledger.user, ledger.database, ledger.sslmode) == ("ledger_reader", "litellm", "require")
            ledger.sslmode = "disable"  # this module's Postgres has no TLS; CloudNativePG's has
            with pytest.raises(kube.SecretUnavailable, match="ExternalSecret inferbook/litellm-ledger-reader"):
                ledger.query("SELECT 1")
            api.seed({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                      "metadata": {"name": role["passwordSecret"]["name"], "namespace": namespace},
                      "data": {"username": base64.b64encode(b"ledger_reader").decode(),
                               "password": base64.b64encode(password.encode()).decode()}})
            assert ledger.query('SELECT current_user AS "user"').to_dict("records") == [{"user": "ledger_reader"}]
            assert password not in repr(ledger) and password not in ledger.table().to_string()


def spend_against_the_gateway(gateway: Any, say: Any = print) -> Any:
    """ADR-0015's check on a live gateway: keys of a load of its own, a short load, LiteLLM's batched write waited
    for, every spend panel run on the ledger as the read-only role, and the chapter's spend checks."""
    from inferbook.layers.llm_gateway.admin import Admin
    from inferbook.layers.llm_gateway.enforcement import provision_tenants

    profile, layout = gateway.profile, gateway.layout
    admin = Admin(gateway.base, gateway.master_key())
    tenants = provision_tenants(admin, profile, label="spend-test", keys=load.keys(profile))
    traffic = load.drive(gateway.url, tenants, requests=load.MIN_REQUESTS, max_tokens=8, budget_s=0, say=say)
    with spend.connect(profile, layout, say=say) as ledger:
        spend.wait_for_ledger(ledger, traffic, spend.batch_write_s(profile, layout), say=say)
        results = spend.run_dashboard(ledger, layers.render("observability", profile, layout), traffic)
        return spend.checks(ledger, results, admin, traffic)


@pytest.mark.slow
def test_the_spend_panel_equals_litellms_spend_for_each_key_of_a_load(local_gateway: Any) -> None:
    rows = spend_against_the_gateway(local_gateway)
    assert rows["pass"].all(), rows.to_string()
    keys = [f"{local_gateway.profile.data['tenants']['team']}-spend-test-{name}" for name in ("load", "limited")]
    assert [i for i in rows.index if i.startswith("spend panel =")] == [f"spend panel = LiteLLM's spend ({k})"
                                                                        for k in keys]


# --------------------------------------------------------------------------- the cluster path


def test_on_a_cluster_the_objects_are_applied_and_the_operators_prometheus_is_queried(
        prometheus: LocalPrometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the API-server double, with the port-forward (which the double cannot speak) replaced by the
    session's real Prometheus: what is proven is the orchestration, not the operator's behaviour."""
    import contextlib

    from inferbook import kube
    from inferbook.layers.observability import cluster, steps

    from .kube_double import EXTERNAL_SECRET, ApiType, FakeKubeApiServer

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
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cluster.PROMETHEUS_NAMESPACE}})
        api.install(EXTERNAL_SECRET)  # the gateway chapter needs the External Secrets Operator first
        with pytest.raises(kube.MissingCrd, match="kube-prometheus-stack"):
            steps.provision(profile, Layout(ROOT, tmp_path), objects, say=lambda _: None)
        api.install(ApiType("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules", True),
                    ApiType("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", True))
        endpoint = steps.provision(profile, Layout(ROOT, tmp_path), objects, say=lambda _: None)
        assert api.get_object("prometheusrules", namespace, manifests.RULE_NAME, group="monitoring.coreos.com")
        assert api.get_object("podmonitors", namespace, "dcgm-exporter", group="monitoring.coreos.com")
        assert api.get_object("configmaps", namespace, "inferbook-dashboard-vllm-serving")
        assert api.get_object("configmaps", namespace, "inferbook-dashboard-litellm-spend")
        # The datasource lands in Grafana's namespace, where its sidecar looks, not in the profile's.
        assert api.get_object("externalsecrets", cluster.PROMETHEUS_NAMESPACE, manifests.LEDGER_DATASOURCE,
                              group="external-secrets.io")
    assert forwarded == [(context, cluster.PROMETHEUS_NAMESPACE, cluster.PROMETHEUS_SERVICE, 9090)]
    assert endpoint.where == f"cluster ({context})" and endpoint.status["applied"] == len(objects)
    assert endpoint.status["version"] == prometheus.api().buildinfo()["version"]
    assert endpoint.scrape_interval_s == cluster.SCRAPE_INTERVAL_S and endpoint.rate_interval == "120s"
    endpoint.close()


@pytest.mark.parametrize("routing", ["true", "false"])
def test_the_local_prometheus_scrapes_every_replica_of_the_pool_when_routing_is_on(routing: str,
                                                                                  tmp_path: Path) -> None:
    profile = load_profile("local", overrides=[f"features.routing={routing}"])
    local = LocalPrometheus(profile, Layout(root=ROOT, build_dir=tmp_path / "build"), cache_dir=tmp_path,
                            secrets=SecretStore("local", directory=tmp_path / "secrets"), say=lambda _: None)
    jobs, _ = local.scrape_configs()
    targets = next(j for j in jobs if j["job_name"] == "vllm")["static_configs"][0]["targets"]
    ports = profile.data["local"]["ports"]
    expected = [f"127.0.0.1:{ports['serving']}"]
    if routing == "true":
        expected += [f"127.0.0.1:{ports['routing-replica']}", f"127.0.0.1:{ports['routing-canary']}"]
    assert targets == expected
