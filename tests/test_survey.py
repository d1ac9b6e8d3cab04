"""The survey of shipped profiles: objects per layer per profile, and the checks that fail the book when one fails."""

from __future__ import annotations

from pathlib import Path

from inferbook import layers, survey
from inferbook.paths import Layout
from inferbook.profile import list_profiles
from inferbook.validate import Finding


def test_objects_per_layer_has_a_column_per_profile_and_a_dash_where_a_layer_is_off(layout: Layout) -> None:
    result = survey.survey(None, layout)
    table = result.objects_per_layer()
    assert set(table.columns) == set(list_profiles(layout))
    assert table.index[-1] == "total"
    stack = [layer.name for layer in layers.LAYERS]
    assert list(table.index[:-1]) == sorted(table.index[:-1], key=stack.index)  # stack order
    assert table.loc["routing", "local-coder"] == "-"  # local-coder leaves routing off
    assert table.loc["total", "local"] == sum(r["objects"] for r in result.rows if r["profile"] == "local")
    assert result.verification()["pass"].all()


def test_a_failed_check_or_an_unknown_kind_fails_the_survey_verification(layout: Layout) -> None:
    result = survey.survey(["local"], layout, layer="serving")
    result.findings.append(("local", "serving", Finding("Widget", "w", "schema", "fail",
                                                        "no schema for Widget (example.com/v1): not a built-in kind")))
    result.rows[0]["failed"] += 1
    rows = result.verification()
    assert not rows.loc["every shipped profile validates offline", "pass"]
    assert "local/serving: Widget/w [schema]" in rows.loc["every shipped profile validates offline", "observed"]
    assert not rows.loc["no unknown kind", "pass"]
    assert rows.loc["no unknown kind", "observed"] == "Widget"


def test_the_survey_is_what_validate_all_prints(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    result = run_cli("validate", "--all")
    assert result.returncode == 0, result.stderr
    assert "every check passed" in result.stderr + result.stdout
