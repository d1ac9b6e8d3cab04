"""`inferbook render`: a profile's manifests on stdout, for checkov, kubeconform or `kubectl diff -f -`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inferbook import layers, load_profile
from inferbook import manifests as m
from inferbook.paths import Layout

from .conftest import ROOT, run_cli


def names(objects: list[dict]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_render_prints_every_enabled_layer_as_the_chapters_render_it(tmp_path: Path) -> None:
    result = run_cli("render", "--profile", "kind", "-p", "serving.max_model_len=4096", "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert names(objects) >= {("Deployment", "vllm"), ("Service", "vllm"), ("PersistentVolumeClaim", "vllm-models"),
                              ("Deployment", "litellm"), ("Job", "litellm-migrate"), ("ConfigMap", "litellm-config"),
                              ("Cluster", "litellm-db"), ("ExternalSecret", "vllm-api-key")}
    # Registry order: the platform's objects first, then serving's, routing's, the gateway's, observability's, then
    # autoscaling's, security's, the guardrails', identity's, opencost's, gitops' (the MCP server's after the gateway).
    order = ["platform", "serving", "routing", "llm-gateway", "mcp", "observability", "autoscaling", "security",
             "guardrails", "identity", "opencost", "gitops"]
    components = [o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects]
    assert components == sorted(components, key=order.index)
    assert set(components) == set(order)
    # the namespaces the platform makes (serving, the tenant's, the secret store's), Argo CD's, cluster-scoped in none
    assert {o["metadata"].get("namespace") for o in objects} <= {"inferbook", "monitoring", "demo",
                                                                  "inferbook-secrets", "argocd", None}
    vllm = m.container(m.find(objects, "Deployment", "vllm"), "vllm")
    assert m.arg_value(vllm["args"], "--max-model-len") == "4096", "the -p override is applied"
    # The same objects the registry renders in-process (one render path), the ConfigMap's file intact.
    layout = Layout(root=ROOT, build_dir=tmp_path / "in-process")
    profile = load_profile("kind", overrides=["serving.max_model_len=4096"], layout=layout)
    assert objects == [o for layer in layers.enabled(profile) for o in layers.render(layer.name, profile, layout)]
    config = yaml.safe_load(m.find(objects, "ConfigMap", "litellm-config")["data"]["config.yaml"])
    assert [e["model_name"] for e in config["model_list"]][:2] == ["coder-chat", "coder-fim"]
    which = ("platform, serving, routing, llm-gateway, mcp, observability, autoscaling, security, guardrails, "
             "identity, opencost, gitops")
    assert result.stderr.strip() == f"rendered {len(objects)} object(s) of profile kind: {which}"


def test_render_of_one_layer_prints_only_that_layer(tmp_path: Path) -> None:
    result = run_cli("render", "--profile", "prod", "--layer", "llm-gateway", "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects} == {"llm-gateway"}
    # prod's gateway: two replicas sharing their counters through Redis, and a disruption budget.
    assert names(objects) >= {("Deployment", "litellm-redis"), ("Service", "litellm-redis"),
                              ("PodDisruptionBudget", "litellm"), ("Deployment", "litellm")}
    assert m.find(objects, "Deployment", "litellm")["spec"]["replicas"] == 2
    assert result.stderr.strip() == f"rendered {len(objects)} object(s) of profile prod: llm-gateway"


@pytest.mark.parametrize(("args", "says"), [
    (["--profile", "nosuch"], "no profile named 'nosuch'. Fix: use one of:"),
    (["--profile", "kind", "--layer", "nosuch"],
     "error: no manifests for layer 'nosuch' yet; layers with manifests: platform, serving, routing, llm-gateway, "
     "mcp, observability, autoscaling, security, guardrails, identity, opencost, mcp-gateway, gitops. Fix:"),
    (["--profile", "kind", "--layer", "experience"], "error: no manifests for layer 'experience' yet"),
    (["--profile", "local", "--layer", "llm-gateway", "-p", "features.experience=false",
      "-p", "features.coding-assistant=false", "-p", "features.resilience=false", "-p", "features.benchmarks=false",
      "-p", "features.security=false", "-p", "features.mcp=false", "-p", "features.guardrails=false",
      "-p", "features.llm-gateway=false"],
     "error: profile 'local' does not enable the llm-gateway layer. Fix: set features.llm-gateway: true"),
], ids=["unknown-profile", "unknown-layer", "layer-without-manifests", "disabled-layer"])
def test_render_refuses_bad_input_in_words(args: list[str], says: str, tmp_path: Path) -> None:
    result = run_cli("render", *args, "--build-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout == "", "nothing half-rendered on stdout"
    assert says in result.stderr and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_validate_all_covers_every_shipped_profile_and_its_routing_layer(tmp_path: Path) -> None:
    result = run_cli("validate", "--all", "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    layout = Layout(root=ROOT, build_dir=tmp_path / "expect")
    from inferbook.profile import list_profiles

    for name in list_profiles(layout):
        profile = load_profile(name, layout=layout)
        for layer in layers.enabled(profile):
            assert any(line.split()[1:3] == [name, layer.name] for line in result.stdout.splitlines()), \
                f"no row for {name}/{layer.name}:\n{result.stdout}"
    assert "every check passed" in result.stderr + result.stdout
    assert any(line.split()[1:3] == ["gke-l4", "routing"] for line in result.stdout.splitlines())


def test_validate_fails_on_an_unknown_kind_naming_the_object_and_the_fix(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from inferbook import cli

    real = layers.render

    def with_a_stranger(name: str, profile, layout):
        objects = real(name, profile, layout)
        if name == "routing":
            objects.append({"apiVersion": "example.com/v1", "kind": "Mystery", "metadata": {"name": "odd"}})
        return objects

    monkeypatch.setattr(layers, "render", with_a_stranger)
    status = cli.main(["validate", "--profile", "kind", "--build-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert status == 1
    assert "Mystery/odd [schema]" in out.out and "Fix: pin its CRD" in out.out
    assert "check(s) failed" in out.err + out.out


def test_validate_of_a_layer_a_profile_leaves_off_says_so_and_validates_the_others(tmp_path: Path) -> None:
    result = run_cli("validate", "--profile", "local", "--profile", "kind", "--layer", "routing",
                     "-p", "features.routing=false", "--build-dir", str(tmp_path))
    assert result.returncode == 1, "kind's routing layer is off too: nothing is left to validate"
    assert "local: does not enable layer routing" in result.stderr and "kind: does not enable" in result.stderr
    assert "nothing to validate" in result.stderr
    result = run_cli("validate", "--profile", "local", "--profile", "kind", "--layer", "routing",
                     "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = [line.split()[1:3] for line in result.stdout.splitlines()]
    assert ["kind", "routing"] in rows
