"""Profiles: every shipped one resolves; every bad one fails with its own clear message."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from inferbook import ProfileError, load_profile
from inferbook.features import BY_NAME, CATALOGUE, FeatureConflict, resolve
from inferbook.profile import list_profiles, load_schema

from .conftest import ROOT, run_cli

BAD = sorted((Path(__file__).parent / "profiles" / "bad").glob("*.yaml"))
SHIPPED = ["local", "kind", "gke-l4", "multi-gpu", "prod"]


def expectations(path: Path) -> list[str]:
    return [line.split("# expect:", 1)[1].strip() for line in path.read_text().splitlines()
            if line.startswith("# expect:")]


def test_the_five_profiles_of_the_design_are_shipped():
    assert set(SHIPPED) <= set(list_profiles())


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_profile_resolves(name):
    profile = load_profile(name)
    assert profile.name == name
    assert "platform" in profile.features.enabled
    assert "serving" in profile.features.enabled


def test_tiers_of_the_shipped_profiles_match_the_design():
    gke, multi, prod = load_profile("gke-l4"), load_profile("multi-gpu"), load_profile("prod")
    assert ((gke.tier, gke.get("serving.replicas"), gke.get("serving.strategy"), gke.get("gpu.type"))
            == ("cost", 0, "Recreate", "l4"))
    assert (multi.get("serving.replicas"), multi.get("serving.strategy")) == (2, "RollingUpdate")
    assert multi.get("gpu.time_slicing") > 1
    assert prod.budget_mode == "fail-closed" and gke.budget_mode == "fail-open"
    assert prod.get("database.instances") == 3 and prod.get("database.redis") is True
    assert load_profile("local").target_kind == "local"


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_each_bad_profile_fails_with_its_own_message(path):
    expected = expectations(path)
    assert expected, f"{path.name} declares no '# expect:' line"
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert path.name in message, "the error must name the file"
    for fragment in expected:
        assert fragment in message, f"expected {fragment!r} in:\n{message}"
    assert len(info.value.issues) == 1, f"{path.name} has one defect, so exactly one problem:\n{message}"
    assert "Fix:" in message


def test_bad_profiles_each_give_a_different_error():
    messages = set()
    for path in BAD:
        with pytest.raises(ProfileError) as info:
            load_profile(str(path))
        messages.add(str(info.value.issues[0]).split(":", 2)[-1])
    assert len(messages) == len(BAD)


def test_several_problems_are_reported_together(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("description: x\ntarget: {kind: local}\ntier: prdo\nfeatures: {routng: true}\n"
                    "serving: {replicas: -1}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    fields = {issue.field for issue in info.value.issues}
    assert fields == {"tier", "features.routng", "serving.replicas"}


def test_a_dependency_is_switched_on_and_the_reason_recorded():
    table = load_profile("local").features.table()
    assert table.loc["llm-gateway", "enabled"] == "yes"
    assert table.loc["coding-assistant", "why"] == "required by experience"
    assert table.loc["platform", "why"].startswith("required by")
    assert table.loc["opencost", "enabled"] == "no"  # off in local, and nothing that is on needs it


def test_the_resolver_refuses_an_explicitly_disabled_dependency():
    with pytest.raises(FeatureConflict) as info:
        resolve({"routing": True, "serving": False})
    assert (info.value.feature, info.value.needs) == ("routing", "serving")


def test_the_schema_knows_exactly_the_features_of_the_catalogue():
    schema_features = set(load_schema()["properties"]["features"]["properties"])
    assert schema_features == {f.name for f in CATALOGUE}
    for feature in CATALOGUE:
        assert set(feature.requires) <= set(BY_NAME), feature.name


def test_command_line_overrides_apply_and_are_validated():
    profile = load_profile("local", overrides=["local.ports.serving=8100", "features.routing=true"])
    assert profile.get("local.ports.serving") == 8100
    assert "routing" in profile.features.enabled
    with pytest.raises(ProfileError) as info:
        load_profile("local", overrides=["serving.replicas=lots"])
    assert "command line (-p serving.replicas=lots)" in str(info.value)
    with pytest.raises(ProfileError, match="must look like key=value"):
        load_profile("local", overrides=["tier"])


def test_an_unknown_profile_name_suggests_the_closest():
    with pytest.raises(ProfileError, match="did you mean 'local'"):
        load_profile("locl")


def test_profile_show_prints_the_resolved_profile_and_feature_table():
    result = run_cli("profile", "show", "prod")
    assert result.returncode == 0, result.stderr
    assert "Profile prod (profiles/prod.yaml) is valid." in result.stdout
    assert "fail-closed" in result.stdout
    assert "Features: 15 of 26 enabled" in result.stdout  # mcp-gateway and gitops on since #22/#25, mcp #23
    for feature in ("guardrails", "opencost", "routing"):
        assert feature in result.stdout


def test_profile_show_json_is_machine_readable():
    result = run_cli("profile", "show", "gke-l4", "--json")
    data = json.loads(result.stdout)
    assert data["profile"]["tier"] == "cost"
    assert data["features"]["autoscaling"]["enabled"] is True
    assert (data["features"]["observability"]["why"] == "required by autoscaling"
            or data["features"]["observability"]["why"] == "profile")


def test_profile_show_of_a_bad_profile_exits_1_with_the_message():
    bad = ROOT / "tests" / "profiles" / "bad" / "bad-tier.yaml"
    result = run_cli("profile", "show", str(bad))
    assert result.returncode == 1
    assert result.stderr.startswith("error: invalid profile")
    assert "'production' is not an allowed value" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_profile_file_that_is_not_utf8_text_fails_with_one_clear_message(tmp_path):
    binary = tmp_path / "picture.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ProfileError) as info:
        load_profile(str(binary))
    assert len(info.value.issues) == 1
    message = str(info.value)
    assert "picture.yaml:1: (top level): the file is not UTF-8 text (byte 0x89 at offset 0" in message
    assert "it looks like a binary file" in message and "Fix: give a YAML profile file saved as UTF-8 text" in message

    latin1 = tmp_path / "latin1.yaml"  # a text profile saved in the wrong encoding: the line is named
    latin1.write_bytes("description: caf\u00e9\ntarget: {kind: local}\n".encode("latin-1"))
    with pytest.raises(ProfileError, match=r"latin1\.yaml:1: \(top level\): the file is not UTF-8 text \(byte 0xe9"):
        load_profile(str(latin1))

    for args in (("profile", "show", str(binary)),
                 ("run", "--profile", str(binary), "--build-dir", str(tmp_path / "build"), "--no-site")):
        result = run_cli(*args)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"error: invalid profile {binary}: 1 problem(s)")
        assert "is not UTF-8 text" in result.stderr and "Fix:" in result.stderr
        assert "Traceback" not in result.stderr and "UnicodeDecodeError" not in result.stderr
    assert not (tmp_path / "build").exists(), "nothing runs before the profile is read"


def test_an_unknown_key_given_with_p_is_placed_on_the_command_line_not_in_the_file():
    result = run_cli("profile", "show", "local", "-p", "nosuch.key=1")
    assert result.returncode == 1
    assert "  - command line (-p nosuch.key=1): nosuch: unknown key. Fix: remove it; allowed here:" in result.stderr
    assert "local.yaml:" not in result.stderr.split("\n", 1)[1], "no line of the file is blamed"
    assert "Traceback" not in result.stderr
    with pytest.raises(ProfileError) as info:  # the same for a mapping of overrides, as a notebook passes them
        load_profile("local", overrides={"features.routng": True, "gpu.typo": "l4"})
    assert [(i.where, i.field) for i in info.value.issues] == [
        ("command line (-p features.routng=True)", "features.routng"), ("command line (-p gpu.typo=l4)", "gpu.typo")]


def test_objectives_under_benchmarks_are_refused_naming_the_top_level_slo():
    """One set of objectives: ``benchmarks.slo`` (where a second set used to live) says where it went, not only
    that it is unknown, in the file (tests/profiles/bad/benchmarks-slo.yaml) and given with -p."""
    assert "slo" not in load_schema()["properties"]["benchmarks"]["properties"]
    with pytest.raises(ProfileError) as info:
        load_profile("local", overrides=["benchmarks.slo.ttft_p95_ms=3000"])
    [issue] = info.value.issues
    assert (issue.where, issue.field) == ("command line (-p benchmarks.slo.ttft_p95_ms=3000)", "benchmarks.slo")
    assert "moved to the top-level 'slo:'" in issue.problem
    assert issue.fix == "write -p slo.KEY=VALUE instead of -p benchmarks.slo.KEY=VALUE"
    assert load_profile("local", overrides=["slo.ttft_p95_ms=3000"]).get("slo.ttft_p95_ms") == 3000


def test_an_issue_an_override_triggers_in_a_cross_field_rule_names_that_override():
    with pytest.raises(ProfileError) as info:  # the file's serving.replicas: 1 is fine until -p tier=prod
        load_profile("local", overrides=["features.routing=true", "tier=prod", "local.ports.serving=8100"])
    assert {i.field for i in info.value.issues} == {"serving.replicas", "database.instances", "database.redis"}
    assert {i.where for i in info.value.issues} == {"command line (-p tier=prod)"}
    assert ("command line (-p tier=prod): serving.replicas: 1 is below the prod tier's replica floor of 2"
            in str(info.value))

    with pytest.raises(ProfileError) as info:  # a feature the override switches on needs one the file refuses
        load_profile(str(ROOT / "tests" / "profiles" / "bad" / "routing-without-serving.yaml"),
                     overrides=["features.routing=false", "features.experience=true"])
    assert [(i.where, i.field) for i in info.value.issues] == [
        ("command line (-p features.experience=True)", "features.serving")]

    with pytest.raises(ProfileError) as info:  # a mapping the override creates misses its required keys
        load_profile("local", overrides=["models.fim.fim_format=qwen"])
    assert [(i.where, i.field) for i in info.value.issues] == [
        ("command line (-p models.fim.fim_format=qwen)", "models.fim.id"),
        ("command line (-p models.fim.fim_format=qwen)", "models.fim.served_name")]


def test_an_issue_genuinely_in_the_file_keeps_its_line_next_to_an_override_issue():
    path = ROOT / "tests" / "profiles" / "bad" / "duplicate-local-ports.yaml"
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), overrides=["runner.cell_timeout_seconds=100", "features.routing=true"])
    where = {i.field: i.where for i in info.value.issues}
    assert where == {"local.ports.llm-gateway": "tests/profiles/bad/duplicate-local-ports.yaml:8",
                     "models.chat": "command line (-p features.routing=True)"}  # routing needs serving needs a model
    with pytest.raises(ProfileError) as info:  # an override of the very field keeps pointing at the override
        load_profile(str(ROOT / "tests" / "profiles" / "bad" / "wrong-type.yaml"), overrides=["tier=cost"])
    assert [i.where for i in info.value.issues] == ["tests/profiles/bad/wrong-type.yaml:7"]


def test_the_benchmarks_book_set_is_refused_when_unknown_naming_the_field_and_the_choices():
    """``benchmarks.book`` chooses how much the benchmarks chapter measures; a typo is one clear error, given in
    the file (tests/profiles/bad/benchmarks-book.yaml) or with -p."""
    with pytest.raises(ProfileError) as info:
        load_profile("local", overrides=["benchmarks.book=ful"])
    [issue] = info.value.issues
    assert (issue.where, issue.field) == ("command line (-p benchmarks.book=ful)", "benchmarks.book")
    assert issue.problem == "'ful' is not an allowed value"
    assert issue.fix == "did you mean 'full'? use one of: quick, full"
    assert load_profile("local", overrides=["benchmarks.book=full"]).get("benchmarks.book") == "full"


def test_the_local_profiles_ship_the_quick_benchmark_set_and_the_cluster_profiles_the_full_one():
    sets = {name: load_profile(name).get("benchmarks.book") for name in [*SHIPPED, "local-coder"]}
    assert sets == {"local": "quick", "local-coder": "quick", "kind": "full", "gke-l4": "full", "multi-gpu": "full",
                    "prod": "full"}
    assert load_schema()["properties"]["benchmarks"]["properties"]["book"]["default"] == "full"


def schema_fields(schema: dict, depth: int = 2) -> list[str]:
    """Every field of the profile schema down to ``depth`` (``benchmarks.book``), as the profiles page names them."""
    found = []

    def walk(node: dict, prefix: str, level: int) -> None:
        for key, sub in (node.get("properties") or {}).items():
            found.append(prefix + key)
            if level < depth:
                walk(sub, f"{prefix}{key}.", level + 1)

    walk(schema, "", 1)
    return found


def test_the_profiles_page_names_every_field_of_the_schema():
    """book/profiles.md is the reference a reader checks a profile against: a field the schema takes (down to
    ``section.key``) is named there in backticks, itself, by a longer path, or by its section's ``section.*``."""
    text = (ROOT / "book" / "profiles.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z_][-a-z0-9_.*]*)`", text))
    missing = [field for field in schema_fields(load_schema()) if field not in named
               and f"{field.split('.')[0]}.*" not in named and not any(n.startswith(f"{field}.") for n in named)]
    assert missing == [], f"book/profiles.md does not name {missing}"
