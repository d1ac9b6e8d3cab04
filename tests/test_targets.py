"""The target seam: one interface, a class per kind of target; what each does with a layer's objects."""

from __future__ import annotations

import pytest

from inferbook import targets
from inferbook.layers import get, render
from inferbook.paths import Layout
from inferbook.profile import load_profile


@pytest.fixture()
def run_layout(tmp_path) -> Layout:
    return Layout.from_run_dir(tmp_path / "runs" / "x")


def test_each_profile_gets_the_target_its_kind_names(run_layout: Layout) -> None:
    assert isinstance(targets.of(load_profile("local"), run_layout), targets.LocalTarget)
    assert isinstance(targets.of(load_profile("kind"), run_layout), targets.KubeTarget)
    assert isinstance(targets.of(load_profile("kind"), run_layout, dry_run=True), targets.DryRunTarget)


def test_the_local_target_plans_in_apply_order_and_applies_nothing(run_layout: Layout) -> None:
    profile = load_profile("kind")
    objects = render("serving", profile, run_layout)
    objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "late"}})
    changes = targets.LocalTarget(profile, run_layout).apply(objects, "serving")
    assert [c.kind for c in changes][0] == "Namespace"  # namespaces first, as kube.apply sends them
    assert {c.action for c in changes} == {"not applied: no cluster"}
    assert all(c.layer == "serving" for c in changes)
    table = targets.changes_table(changes)
    assert list(table.columns) == ["kind", "name", "namespace", "layer", "action"]
    assert table.loc[table.kind == "Namespace", "namespace"].item() == "-"
    assert "no API server" in targets.LocalTarget(profile, run_layout).limits()


def test_a_layer_without_a_part_on_a_target_says_where_it_runs(run_layout: Layout) -> None:
    local = targets.of(load_profile("local"), run_layout)
    assert local.has_part(get("serving"))
    assert not local.has_part(get("economics"))
    with pytest.raises(targets.NoPart, match="economics.*kube profile"):
        local.part(get("economics"))
    with pytest.raises(targets.NoPart, match="dry run"):
        targets.of(load_profile("kind"), run_layout, dry_run=True).part(get("serving"))


def test_a_profile_of_an_unknown_target_kind_is_refused_with_the_kinds(run_layout: Layout, monkeypatch) -> None:
    profile = load_profile("local")
    monkeypatch.setitem(profile.data["target"], "kind", "nomad")
    with pytest.raises(targets.NoPart, match="no target of kind 'nomad'.*local, kube, dry-run"):
        targets.of(profile, run_layout)
