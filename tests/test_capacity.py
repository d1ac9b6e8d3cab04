"""The fleet simulation: known answers (M/M/c, a fixed fleet below capacity), determinism, the policies' rules."""

from __future__ import annotations

import numpy as np
import pytest

from inferbook.layers.capacity import fluid, policies, report, sim, traces
from inferbook.layers.economics.curve import Curve, Point

#: A curve of the local sample's shape (kept here so the simulation's tests need no artefact).
CURVE = Curve(label="measured here (test)", hardware="test", input_tokens=64, output_tokens=16,
              points=(Point(1, 26.7, 121.0), Point(2, 40.6, 235.0), Point(4, 72.5, 254.0)), knee=4, knee_rule="test")


def _settings(**changes: object) -> policies.Settings:
    base = dict(seed=24, hours=0.25, peak_replicas=3, max_replicas=6, min_replicas=1, queue_target=5,
                utilisation_target=0.8, concurrency_target=4.0, interval_s=15, cooldown_s=300, queue_timeout_s=60,
                cold_starts_min=(0.5, 2))
    base.update(changes)
    return policies.Settings(**base)  # type: ignore[arg-type]


def test_mmc_waiting_time_and_utilisation_match_erlang_c() -> None:
    """M/M/4 at 75% with 300,000 customers: the mean wait in queue within 5% of Erlang C's, the utilisation within
    one point (the tolerances the chapter states)."""
    found = report.mmc(seed=24)
    assert found["wait_s"] == pytest.approx(found["erlang_wait_s"], rel=report.WAIT_TOLERANCE)
    assert found["utilisation"] == pytest.approx(found["erlang_utilisation"], abs=report.UTILISATION_TOLERANCE)


def test_erlang_c_refuses_a_queue_without_a_steady_state() -> None:
    with pytest.raises(sim.SimulationError, match="no steady state"):
        sim.erlang_c(2, 3.0, 1.0)


def test_a_fixed_fleet_under_steady_load_below_capacity_sheds_nothing() -> None:
    service, s = policies.CurveService(CURVE), _settings()
    trace = traces.make("steady", 0.6 * s.max_replicas * service.knee_rate() / 0.7, 1800, s.seed)
    result = policies.simulate(service, trace, "fixed", None, s, 0)
    assert result.arrivals > 1000 and result.shed == 0
    assert result.served + result.unfinished == result.arrivals


def test_the_same_seed_gives_identical_results() -> None:
    service, s = policies.CurveService(CURVE), _settings()
    made = policies.make_traces(service, s)
    first = policies.compare(service, made, s, 2, kinds=("bursty",))
    again = policies.compare(service, policies.make_traces(service, s), s, 2, kinds=("bursty",))
    for key, result in first.items():
        assert np.array_equal(result.ttft_s, again[key].ttft_s)
        assert (result.shed, result.gpu_seconds, result.timeline) == (again[key].shed, again[key].gpu_seconds,
                                                                      again[key].timeline)


@pytest.mark.parametrize("kind", traces.KINDS)
def test_a_different_seed_gives_a_different_trace(kind: str) -> None:
    a, b = traces.make(kind, 10, 600, 1), traces.make(kind, 10, 600, 2)
    assert a.requests != b.requests or not np.array_equal(a.arrivals, b.arrivals)
    assert np.array_equal(a.arrivals, traces.make(kind, 10, 600, 1).arrivals)


def test_a_trace_follows_its_rate() -> None:
    trace = traces.make("steady", 20, 3600, 24)
    expected = 0.7 * 20 * 3600
    assert abs(trace.requests - expected) < 4 * expected**0.5  # Poisson: within four standard deviations
    assert np.all(np.diff(trace.arrivals) >= 0) and trace.arrivals[-1] < 3600


def test_queue_depth_asks_for_the_queue_over_its_target_never_below_the_floor() -> None:
    """ADR-0014's rule: with 12 requests waiting, a target of 5 and a floor of 1, three replicas."""
    queue = next(p for name, p in policies.policies(_settings()).items() if name.startswith("queue depth"))
    assert queue is not None
    assert queue(sim.Signals(0, 1, 1, waiting=12, in_flight=4, busy_share=1.0)) == 3
    assert queue(sim.Signals(0, 4, 4, waiting=0, in_flight=16, busy_share=1.0)) == 1


def test_a_cold_start_delays_the_first_answer_of_a_fleet_at_zero() -> None:
    service = policies.CurveService(CURVE)
    s = _settings(min_replicas=0)
    queue = next(p for name, p in policies.policies(s).items() if name.startswith("queue depth"))
    fleet = sim.Fleet(service, queue, initial=0, max_replicas=2, cold_start_s=90, interval_s=15, cooldown_s=300,
                      queue_timeout_s=None, seed=1)
    result = fleet.run(np.array([1.0]), 400)
    assert result.served == 1 and result.wait_s[0] >= 90 - 1  # asked for at the next decision, then 90 s to start


def test_the_benchmark_reports_both_models_figures_without_timing_assertions() -> None:
    table = report.benchmark(policies.CurveService(CURVE), _settings(), replicas=100, minutes=0.5, hours=1)
    assert table.loc["fleet", "value"].startswith("100 replicas")
    assert "up to 100 replicas" in table.loc["fluid: simulated", "value"]  # the diurnal peak brings the fleet up
    assert table.loc["goal: a 100-replica day under a minute on one core", "value"].startswith(("met", "not met"))


def _fluid(kind: str, name: str, s: policies.Settings, cold_min: float = 2) -> "fluid.FluidResult":
    return policies.simulate_fluid(policies.CurveService(CURVE), kind, name, policies.policies(s)[name], s, cold_min)


def test_the_fluid_model_agrees_with_the_per_request_one_for_queue_depth_and_a_fixed_fleet() -> None:
    """The check the chapter states: within 5 points of the share within the objective, on every trace."""
    service, s = policies.CurveService(CURVE), _settings()
    results = policies.compare(service, policies.make_traces(service, s), s, 2)
    agreed = report.agreement(service, s, results, 5.0, 2)
    assert len(agreed) == len(results)
    checked = agreed[agreed.index.get_level_values("policy").isin(report.FLUID_CHECKED)]
    assert len(checked) == 2 * len(traces.KINDS)
    assert checked["gap (points)"].abs().max() <= report.FLUID_TOLERANCE_POINTS, checked.to_string()
    rows = report.verify(service, s, results, agreed)
    assert rows.loc["the fluid model agrees with the per-request one", "pass"]


def test_a_fluid_fixed_fleet_below_capacity_sheds_nothing_and_accounts_for_every_request() -> None:
    s = _settings(peak_replicas=0.5 * 6 / 0.7)  # steady runs at 70% of the peak: half the fleet's knee rate
    fixed = next(name for name in policies.policies(s) if name.startswith("fixed"))
    result = _fluid("steady", fixed, s)
    assert result.arrivals > 1000 and result.shed == 0 and result.within(5.0) == 1.0
    assert result.served + result.shed + result.unfinished == result.arrivals
    assert result.gpu_seconds == pytest.approx(6 * s.hours * 3600)


def test_the_fluid_model_is_deterministic_for_a_seed() -> None:
    s = _settings()
    name = next(name for name in policies.policies(s) if name.startswith("queue depth"))
    a, b = _fluid("bursty", name, s), _fluid("bursty", name, s)
    assert np.array_equal(a.ttft_s, b.ttft_s) and np.array_equal(a.weights, b.weights)
    assert (a.shed, a.gpu_seconds, a.timeline) == (b.shed, b.gpu_seconds, b.timeline)
    assert _fluid("bursty", name, _settings(seed=25)).arrivals != a.arrivals


def test_the_fluid_model_refuses_a_step_longer_than_a_decision() -> None:
    with pytest.raises(sim.SimulationError, match="step"):
        fluid.FluidFleet(policies.CurveService(CURVE), None, initial=1, max_replicas=1, cold_start_s=0,
                         interval_s=1, cooldown_s=0, queue_timeout_s=None, seed=1, step_s=2)
