"""Reading vLLM's /metrics: names and sample totals from the Prometheus text format, via prometheus_client's parser."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from inferbook import smoke


def exposition() -> str:
    """A page in the format vLLM serves (it exports with prometheus_client too)."""
    registry = CollectorRegistry()
    success = Counter("vllm:request_success", "finished requests", ["finished_reason"], registry=registry)
    success.labels("stop").inc(3)
    success.labels("length").inc(2)
    Counter("vllm:generation_tokens", "tokens", registry=registry).inc(41)  # no labels at all
    Histogram("vllm:time_to_first_token_seconds", "ttft", registry=registry).observe(0.25)
    Gauge("vllm:num_requests_waiting", "waiting", registry=registry).set(1)
    return generate_latest(registry).decode()


def test_a_sample_total_sums_every_label_set_and_counts_unlabelled_samples() -> None:
    text = exposition()
    assert smoke.sample_total(text, "vllm:request_success_total") == 5
    assert smoke.sample_total(text, "vllm:generation_tokens_total") == 41  # the line has no {labels}
    assert smoke.sample_total(text, "vllm:time_to_first_token_seconds_count") == 1
    assert smoke.sample_total(text, "vllm:no_such_metric") == 0


def test_exposed_names_give_counters_with_their_total_suffix_and_histograms_by_family() -> None:
    names = smoke.exposed_names(exposition())
    assert {"vllm:generation_tokens_total", "vllm:request_success_total", "vllm:time_to_first_token_seconds",
            "vllm:num_requests_waiting"} <= names
    assert "vllm:e2e_request_latency_seconds" not in names
