"""The economics chapter's arithmetic: the curve's provenance, cost per token, the month, the missing price."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inferbook.layers import economics
from inferbook.layers.benchmarks import knee
from inferbook.layers.benchmarks.result import Sweep
from inferbook.layers.economics import cost
from inferbook.profile import load_profile

from .conftest import ROOT

SAMPLE = ROOT / "tests" / "data" / "bench-local-direct.json"
PRICED = {"economics.accelerator.on_demand_usd_per_hour": 0.5, "economics.accelerator.spot_usd_per_hour": 0.2,
          "economics.accelerator.source": "https://example.invalid/prices", "economics.accelerator.date": "2026-12-05"}


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    shutil.copy(SAMPLE, tmp_path / "bench-inferbook-direct.json")
    return tmp_path


def test_the_local_curve_is_the_runs_measured_sweep_with_the_benchmarks_knee(artifacts: Path) -> None:
    profile = load_profile("local")
    curve = economics.curve(profile, artifacts)
    sweep = Sweep.read(SAMPLE)
    assert curve.measured and curve.label.startswith("measured here")
    assert [p.output_tokens_per_s for p in curve.points] == [lv.output_tokens_per_s for lv in sweep.levels]
    assert curve.knee == knee(sweep, profile.data["slo"])


def test_an_l4_profile_without_a_sweep_uses_the_stored_figures_labelled_as_stored(tmp_path: Path) -> None:
    curve = economics.curve(load_profile("gke-l4"), tmp_path)
    stored = economics.stored()
    assert curve.label == "stored (seed, L4)" and not curve.measured
    assert [(p.concurrency, p.output_tokens_per_s) for p in curve.points] == [
        (lv["concurrency"], lv["output_tokens_per_s"]) for lv in stored["levels"]]
    table = economics.per_level(curve, economics.Inputs.from_profile(load_profile("gke-l4"), curve.hardware))
    assert set(table["source"]) == {"stored (seed, L4)"}


def test_a_local_profile_without_a_sweep_says_to_run_the_benchmarks_chapter(tmp_path: Path) -> None:
    with pytest.raises(economics.CurveError, match="run the benchmarks chapter first"):
        economics.curve(load_profile("local"), tmp_path)


def test_cost_per_million_times_the_tokens_of_an_hour_gives_the_price_back(artifacts: Path) -> None:
    profile = load_profile("local", overrides=PRICED)
    curve = economics.curve(profile, artifacts)
    inputs = economics.Inputs.from_profile(profile, curve.hardware)
    table = economics.per_level(curve, inputs)
    for point, value in zip(curve.points, table["USD per million output tokens, on-demand"], strict=True):
        assert float(value) * point.output_tokens_per_s * 3600 / 1e6 == pytest.approx(0.5, abs=1e-3)
    assert all(economics.verify(curve, inputs, table)["pass"])


def test_a_missing_price_names_the_field_to_set_everywhere_it_is_needed(artifacts: Path) -> None:
    profile = load_profile("local")
    curve = economics.curve(profile, artifacts)
    inputs = economics.Inputs.from_profile(profile, curve.hardware)
    figures = economics.figures(curve, inputs, economics.stored()["claim"])
    needing = [v for k, v in figures["value"].items() if "on-demand" in k]
    assert needing and all(v.startswith("no price given: set economics.accelerator.on_demand_usd_per_hour")
                           for v in needing)


def test_a_price_without_its_source_is_refused() -> None:
    profile = load_profile("local", overrides={"economics.accelerator.on_demand_usd_per_hour": 0.5})
    with pytest.raises(economics.inputs.InputError, match="without its source"):
        economics.Inputs.from_profile(profile, "x")


def test_scale_to_zero_bills_the_active_hours_and_each_cold_start() -> None:
    on = load_profile("local", overrides={"economics.usage.scale_to_zero": True})
    off = load_profile("local", overrides={"economics.usage.scale_to_zero": False})
    u_on = economics.Inputs.from_profile(on, "x").usage
    u_off = economics.Inputs.from_profile(off, "x").usage
    per_activation = (u_on.cold_start_minutes + u_on.scale_down_after_minutes) / 60
    assert u_on.billed_hours_per_day() == pytest.approx(u_on.hours_active_per_day
                                                        + u_on.activations_per_day * per_activation)
    assert u_off.billed_hours_per_month() == pytest.approx(24 * u_off.days_per_month)


def test_break_even_is_the_hosted_apis_charge_for_an_hour_of_the_replicas_requests(artifacts: Path) -> None:
    profile = load_profile("local")
    curve = economics.curve(profile, artifacts)
    inputs = economics.Inputs.from_profile(profile, curve.hardware)
    knee = curve.knee_point
    assert knee is not None
    requests = knee.output_tokens_per_s * 3600 / curve.output_tokens
    api = requests * (curve.input_tokens * inputs.api_input + curve.output_tokens * inputs.api_output) / 1e6
    assert cost.break_even_usd_per_hour(curve, inputs, knee.output_tokens_per_s) == pytest.approx(api)


def test_a_sweep_read_back_matches_the_artefact_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    sweep = Sweep.read(SAMPLE)
    assert sweep.record()["levels"] == json.loads(SAMPLE.read_text())["levels"]
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "inferbook-benchmark/1"}')
    with pytest.raises(ValueError, match="is not a inferbook-benchmark/1 artefact"):
        Sweep.read(broken)


def test_without_a_price_the_knee_still_gets_a_cost_per_usd_hour_and_at_the_claims_implied_price(
        artifacts: Path) -> None:
    """No price is invented: the knee's cost is given per USD/hour of the accelerator, and at the hourly price the
    seed's $30-35 a month implies for the usage pattern; both follow from the knee's tokens per hour."""
    profile = load_profile("local")
    curve = economics.curve(profile, artifacts)
    inputs = economics.Inputs.from_profile(profile, curve.hardware)
    figures = economics.figures(curve, inputs, economics.stored()["claim"])["value"]
    assert curve.knee_point is not None
    per_dollar = float(figures["USD per million output tokens at the knee, per USD/hour of the accelerator"].split()[0])
    assert per_dollar * curve.knee_point.output_tokens_per_s * 3600 / 1e6 == pytest.approx(1.0, rel=1e-3)
    implied = figures["USD per million output tokens at the knee, at the hourly price the seed's claim implies"]
    hours = inputs.usage.billed_hours_per_month()
    low = float(implied.split("-")[0])
    assert low == pytest.approx(30 / hours * per_dollar, rel=1e-3)
