"""The gitops layer: one Argo CD Application per enabled layer over the exported manifests (ADR-0028, 96-gitops)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inferbook import export, layers, manifests, targets
from inferbook.kube import ConditionTimeout
from inferbook.layers import gitops
from inferbook.layers.gitops.applications import SYNC_WAVE, policy_name, wave_of
from inferbook.layers.gitops.cluster import converged
from inferbook.paths import Layout
from inferbook.profile import load_profile
from inferbook.validate import validate

from .conftest import ROOT, run_cli
from .kube_double import ApiType, FakeKubeApiServer
from .test_kube import Lines, once_watched

#: The shipped profiles that enable gitops; local-coder and multi-gpu do not.
GITOPS_PROFILES = ["local", "kind", "gke-l4", "prod"]
#: Argo CD's kinds as the API-server double serves them once "Argo CD is installed".
APPLICATION = ApiType("argoproj.io", "v1alpha1", "Application", "applications", True, ("app",))
APP_PROJECT = ApiType("argoproj.io", "v1alpha1", "AppProject", "appprojects", True, ("appproj",))
CONTEXT = "lab"


@pytest.fixture(scope="module")
def rendered(layout: Layout) -> dict[str, list[dict]]:
    return {name: layers.render("gitops", load_profile(name, layout=layout), layout) for name in GITOPS_PROFILES}


def apps(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Application"]


@pytest.mark.parametrize("name", GITOPS_PROFILES)
def test_each_profile_has_one_application_per_enabled_layer_with_manifests(name: str, rendered, layout) -> None:
    profile = load_profile(name, layout=layout)
    expected = sorted(f"inferbook-{layer.name}" for layer in layers.enabled(profile) if layer.name != "gitops")
    assert sorted(a["metadata"]["name"] for a in apps(rendered[name])) == expected
    # serving, routing, llm-gateway, observability on every shipped gitops profile (autoscaling where it is on)
    assert {f"inferbook-{x}" for x in ("serving", "routing", "llm-gateway", "observability")} <= set(expected)
    assert [o["kind"] for o in rendered[name]].count("AppProject") == 1


def test_an_application_follows_a_layer_the_profile_switches_on_or_off(layout: Layout) -> None:
    without = load_profile("kind", overrides={"features.routing": False}, layout=layout)
    names = {a["metadata"]["name"] for a in apps(layers.render("gitops", without, layout))}
    assert "inferbook-routing" not in names and "inferbook-serving" in names


def test_a_profile_without_gitops_renders_no_applications(layout: Layout) -> None:
    with pytest.raises(manifests.ManifestError, match="does not enable the gitops layer"):
        layers.render("gitops", load_profile("multi-gpu", layout=layout), layout)


def test_sync_waves_follow_the_book_s_layer_order(rendered) -> None:
    order = [layer.name for layer in layers.LAYERS]
    for name, objects in rendered.items():
        ordered = sorted(apps(objects), key=wave_of)
        waves = [wave_of(a) for a in ordered]
        named = [a["metadata"]["name"].removeprefix("inferbook-") for a in ordered]
        assert waves == [order.index(layer) for layer in named], name
        assert len(set(waves)) == len(waves) and all(isinstance(a["metadata"]["annotations"][SYNC_WAVE], str)
                                                     for a in ordered)
    assert order[-1] == "gitops", "the registry lists the gitops layer last"


@pytest.mark.parametrize(("name", "overrides", "policy"), [
    ("kind", {}, "automated (prune, selfHeal)"),
    ("local", {}, "automated (prune, selfHeal)"),
    ("gke-l4", {"tier": "cost"}, "automated (prune, selfHeal)"),
    ("prod", {}, "manual"),
    ("kind", {"tier": "prod", "serving.replicas": 2, "database.instances": 3, "database.redis": True}, "manual"),
])
def test_the_tier_decides_the_sync_policy(name: str, overrides: dict, policy: str, layout: Layout) -> None:
    objects = layers.render("gitops", load_profile(name, overrides=overrides, layout=layout), layout)
    assert {policy_name(a) for a in apps(objects)} == {policy}
    for app in apps(objects):
        assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
        assert ("automated" in app["spec"]["syncPolicy"]) == (policy != "manual")


def test_repository_revision_paths_and_namespaces_come_from_the_profile(layout: Layout) -> None:
    profile = load_profile("kind", layout=layout, overrides={
        "gitops.repo_url": "https://git.example.org/me/inferbook.git", "gitops.revision": "v1.2",
        "gitops.path_prefix": "clusters/lab", "gitops.argocd_namespace": "gitops-system", "target.namespace": "llm"})
    objects = layers.render("gitops", profile, layout)
    project = manifests.find(objects, "AppProject", gitops.PROJECT)
    assert project["metadata"]["namespace"] == "gitops-system"
    assert project["spec"]["sourceRepos"] == ["https://git.example.org/me/inferbook.git"]
    assert project["spec"]["destinations"][0]["namespace"] == "llm"
    for app in apps(objects):
        layer = app["metadata"]["name"].removeprefix("inferbook-")
        assert app["metadata"]["namespace"] == "gitops-system"
        assert app["spec"]["project"] == gitops.PROJECT
        assert app["spec"]["source"] == {"repoURL": "https://git.example.org/me/inferbook.git",
                                         "targetRevision": "v1.2", "path": f"clusters/lab/kind/{layer}"}
        assert app["spec"]["destination"]["namespace"] == "llm"


@pytest.mark.parametrize("name", GITOPS_PROFILES)
def test_the_argo_cd_objects_are_valid_against_the_pinned_crds(name: str, rendered, layout) -> None:
    report = validate(rendered[name], layout)
    schema = [f for f in report.findings if f.rule == "schema"]
    assert report.failures == [] and len(schema) == len(apps(rendered[name])) + 1
    assert all("argoproj/argo-cd@v3.5.1" in f.message for f in schema)


def test_a_misspelt_application_field_fails_validation(rendered, layout) -> None:
    broken = [dict(o) for o in rendered["kind"]]
    app = next(o for o in broken if o["kind"] == "Application")
    app["spec"] = {**app["spec"], "syncPolicy": {"automatic": {"prune": True}}}
    failures = validate(broken, layout).failures
    assert [(f.kind, f.name) for f in failures] == [("Application", app["metadata"]["name"])]
    assert "automatic" in failures[0].message


def test_rendering_a_generating_layer_without_the_book_says_how(layout: Layout) -> None:
    with pytest.raises(manifests.ManifestError, match="generates objects from the book's layers.*registry"):
        gitops.DECLARATION.render(load_profile("kind", layout=layout), layout)


def test_export_writes_loadable_yaml_at_every_application_path(tmp_path: Path, layout: Layout) -> None:
    profile = load_profile("kind", layout=layout)
    rendered = layers.rendered(profile, layout)
    folders = export.export(rendered, profile, tmp_path)
    assert [f.name for f in folders] == [layer.name for layer in layers.enabled(profile)]
    for app in apps(rendered["gitops"]):
        folder = tmp_path / app["spec"]["source"]["path"]
        layer = folder.name
        built = manifests.kustomize(folder)  # what Argo CD builds from the folder
        assert [(o["kind"], o["metadata"]["name"]) for o in built] == \
            [(o["kind"], o["metadata"]["name"]) for o in rendered[layer]]
        loaded = [d for d in yaml.safe_load_all((folder / export.OBJECTS_FILE).read_text()) if d]
        assert loaded == rendered[layer]
    assert export.table(rendered, profile, tmp_path)["kustomization"].all()


def test_export_removes_its_own_folder_of_a_layer_switched_off_and_keeps_anyone_elses(tmp_path: Path,
                                                                                     layout: Layout) -> None:
    profile = load_profile("kind", layout=layout)
    export.export(layers.rendered(profile, layout), profile, tmp_path)
    theirs = tmp_path / "deploy" / "kind" / "notes"
    theirs.mkdir()
    (theirs / "kustomization.yaml").write_text("resources: []\n")
    fewer = load_profile("kind", overrides={"features.routing": False}, layout=layout)
    export.export(layers.rendered(fewer, layout), fewer, tmp_path)
    assert not (tmp_path / "deploy" / "kind" / "routing").exists()
    assert (tmp_path / "deploy" / "kind" / "serving" / "kustomization.yaml").is_file() and theirs.is_dir()


def test_the_export_command_writes_the_folders_under_the_given_root(tmp_path: Path) -> None:
    result = run_cli("export", "--profile", "prod", "--root", str(tmp_path), "--build-dir", str(tmp_path / "build"))
    assert result.returncode == 0, result.stderr
    layers_on = [layer.name for layer in layers.enabled(load_profile("prod"))]
    assert f"deploy/prod/gitops/  {len(layers_on)} object(s)" in result.stdout  # the project + one app per layer
    assert sorted(p.name for p in (tmp_path / "deploy" / "prod").iterdir()) == sorted(layers_on)


def test_the_chapter_checks_fail_when_an_exported_folder_is_missing(tmp_path: Path, layout: Layout) -> None:
    profile = load_profile("local", layout=layout)
    rendered = layers.rendered(profile, layout)
    export.export(rendered, profile, tmp_path)
    objects = rendered["gitops"]
    report = validate(objects, layout)
    assert all(row["pass"] for row in gitops.verify(profile, objects, layers.LAYERS, tmp_path, rendered, report))
    (tmp_path / "deploy" / "local" / "routing" / "kustomization.yaml").unlink()
    rows = {r["check"]: r for r in gitops.verify(profile, objects, layers.LAYERS, tmp_path, rendered, report)}
    failed = [check for check, row in rows.items() if not row["pass"]]
    assert len(failed) == 1 and "path holds the exported layer" in failed[0]
    assert rows[failed[0]]["observed"] == "inferbook-routing"


# --------------------------------------------------------------------------- on a cluster (the API-server double)


def status(sync: str, health: str, revision: str = "4f1c2a9e0b7d") -> dict:
    """What Argo CD's controller writes into an Application's status (set here by the test, as a double)."""
    return {"sync": {"status": sync, "revision": revision}, "health": {"status": health}}


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The double with Argo CD's kinds served and its namespace present, and the kind profile pointed at it."""
    with FakeKubeApiServer() as api:
        api.install(APPLICATION, APP_PROJECT)
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}})
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig", context=CONTEXT)))
        yield api


def kube_part(name: str, tmp_path: Path, said: Lines):
    profile = load_profile(name, overrides={"target.context": CONTEXT})
    layout = Layout(ROOT, tmp_path / "build")
    target = targets.of(profile, layout, say=said)
    return target, target.part(layers.get("gitops")), layers.render("gitops", profile, layout)


def test_on_a_cluster_every_application_is_awaited_until_synced_and_healthy_in_wave_order(cluster, tmp_path):
    said = Lines()
    target, part, objects = kube_part("kind", tmp_path, said)
    table = targets.changes_table(target.apply(objects, "gitops"))
    assert sorted(table["kind"]) == ["AppProject"] + ["Application"] * len(apps(objects))
    assert set(table["namespace"]) == {"argocd"}
    names = [a["metadata"]["name"] for a in sorted(apps(objects), key=wave_of)]
    for name in names[:-1]:
        cluster.set_status("applications", "argocd", name, status("Synced", "Healthy"), group="argoproj.io")
    last = names[-1]
    cluster.set_status("applications", "argocd", last, status("OutOfSync", "Progressing"), group="argoproj.io")
    clock = cluster.virtual_time(held=True)  # only the change the test makes ends the last wait
    once_watched(cluster, cluster.set_status, "applications", "argocd", last, status("Synced", "Healthy"),
                 group="argoproj.io")
    result = part.converge(objects, timeout=60, clock=clock)
    assert list(result["application"]) == names and list(result["sync wave"]) == sorted(result["sync wave"])
    assert set(result["sync"]) == {"Synced"} and set(result["health"]) == {"Healthy"}
    assert any(f"waiting up to 60 s for Application argocd/{last}" in line
               and "sync OutOfSync, health Progressing" in line for line in said)


def test_an_application_that_does_not_converge_times_out_naming_it_and_the_manual_sync(cluster, tmp_path):
    said = Lines()
    target, part, objects = kube_part("prod", tmp_path, said)
    target.apply(objects, "gitops")
    for app in apps(objects):
        cluster.set_status("applications", "argocd", app["metadata"]["name"], status("OutOfSync", "Missing"),
                           group="argoproj.io")
    cluster.virtual_time()  # idle watches move the clock: the timeout passes without spending seconds
    with pytest.raises(ConditionTimeout) as error:
        part.converge(objects, timeout=30, clock=cluster.now)
    message = str(error.value)
    first = "inferbook-platform"  # the first wave is waited for first
    assert message.startswith(f"Application argocd/{first} did not become Synced and Healthy within 30 s")
    assert "sync OutOfSync, health Missing" in message
    assert f"argocd app sync argocd/{first}" in message


def test_converged_reads_both_sync_and_health() -> None:
    assert converged({"status": status("Synced", "Healthy")}) == (True, "sync Synced, health Healthy at 4f1c2a9e0b7d")
    assert converged({"status": status("Synced", "Degraded")})[0] is False
    assert converged({"status": status("OutOfSync", "Healthy")})[0] is False
    assert converged({}) == (False, "sync Unknown, health Unknown")


def test_the_local_target_plans_the_applications_and_has_no_gitops_part(tmp_path: Path) -> None:
    profile = load_profile("local")
    layout = Layout(ROOT, tmp_path)
    target = targets.of(profile, layout)
    objects = layers.render("gitops", profile, layout)
    changes = target.apply(objects, "gitops")
    assert {c.action for c in changes} == {"not applied: no cluster"} and len(changes) == len(objects)
    assert [c.kind for c in changes].count("Application") == len(layers.enabled(profile)) - 1
    assert not target.has_part(layers.get("gitops"))


@pytest.mark.slow
def test_the_chapter_runs_on_the_local_profile(tmp_path: Path) -> None:
    result = run_cli("run", "--profile", "local", "--chapters", "gitops", "--no-site", "--build-dir", str(tmp_path),
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 chapter(s) ok" in result.stderr
    artifacts = tmp_path / "runs" / "local" / "artifacts"
    checks = yaml.safe_load((artifacts / "gitops-checks.json").read_text())
    assert len(checks) == 9 and all(row["pass"] for row in checks)
    assert (tmp_path / "runs" / "local" / "repository" / "deploy" / "local" / "serving" / "objects.yaml").is_file()
