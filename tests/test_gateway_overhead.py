"""The gateway-overhead measurement without a gateway: the stub upstream (a test double of vLLM), the client
that times calls, the statistics of the overhead table, and how a setting changes the proxy's config.

No figure here depends on how fast this machine is: the stub's answers and the statistics are checked on
their content and on known data, never on a duration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import psutil
import pytest

from inferbook import layers, load_profile, smoke
from inferbook.layers.benchmarks import harness
from inferbook.layers.benchmarks import overhead as oh
from inferbook.layers.benchmarks import stub_upstream as stub
from inferbook.layers.llm_gateway import manifests as gw
from inferbook.paths import Layout

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def upstream():
    with stub.StubUpstream() as server:
        yield server




# --------------------------------------------------------------------------- the stub's answers

def test_the_stub_answers_max_tokens_tokens_and_counts_the_prompt_as_usage():
    body = stub.completion_body({"model": "m", "messages": [{"role": "user", "content": "one two three"}],
                                 "max_tokens": 4}, chat=True)
    assert body["choices"][0]["message"]["content"] == "ok ok ok ok"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert body["model"] == "m" and body["object"] == "chat.completion"


def test_a_completion_request_gets_text_and_a_bounded_default_length():
    body = stub.completion_body({"prompt": "def f(", "model": "m"}, chat=False)
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"].split() == ["ok"] * stub.DEFAULT_TOKENS
    assert stub.answer_tokens({"max_tokens": 10**9}) == stub.MAX_TOKENS
    assert stub.answer_tokens({"max_completion_tokens": 3}) == 3


def test_a_stream_is_a_chunk_per_token_then_usage_when_asked_then_done():
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
               "stream": True, "stream_options": {"include_usage": True}}
    events = list(stub.stream_events(request, chat=True))
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[len(b"data: "):]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"])
    assert text == "ok ok ok"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, None, "length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_a_stream_carries_no_usage_chunk_unless_asked():
    events = list(stub.stream_events({"model": "m", "prompt": "x", "max_tokens": 2, "stream": True}, chat=False))
    assert not any(b'"usage"' in e for e in events)
    assert len(events) == 3


def test_the_openai_client_reads_the_stub_both_ways_whatever_key_it_sends(upstream):
    client = openai.OpenAI(base_url=upstream.url, api_key="not-checked", max_retries=0)
    answer = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Say OK."}],
                                            max_tokens=2)
    assert answer.choices[0].message.content == "ok ok" and answer.usage.completion_tokens == 2
    stream = client.completions.create(model="any", prompt="a b", max_tokens=3, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "ok ok ok"
    assert chunks[-1].usage.prompt_tokens == 2


def test_the_stub_counts_completions_as_vllm_does_and_refuses_unknown_routes(upstream):
    base = upstream.url.removesuffix("/v1")
    before = smoke.metric_total(base, "vllm:request_success_total")
    client = harness.Client(harness.Upstream(upstream.url.replace("/v1", "/nowhere"), "k", "m"))
    assert client.call().status == 404
    assert harness.Client(harness.Upstream(upstream.url, "k", "m")).call().ok
    assert smoke.metric_total(base, "vllm:request_success_total") == before + 1 == upstream.requests


def test_the_stub_process_serves_on_its_port_and_refuses_a_taken_one():
    port = free_port()
    with stub.StubProcess(port) as process:
        assert harness.Client(harness.Upstream(process.url, "k", "m")).call(stream=True).ok
        with pytest.raises(stub.StubError, match="already answers"):
            stub.StubProcess(port).__enter__()
    assert harness.Client(harness.Upstream(f"http://127.0.0.1:{port}/v1", "k", "m")).call().status == 0  # gone


def test_a_stub_process_ends_when_the_process_that_started_it_is_killed():
    code = ("import time; from inferbook.layers.benchmarks.stub_upstream import StubProcess; "
            f"s = StubProcess({free_port()}).__enter__(); print(s._proc.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    parent.kill()  # SIGKILL: no chance to stop its child
    parent.wait()
    child.wait(timeout=30)  # raises if the stub outlives it
    assert not child.is_running()


# --------------------------------------------------------------------------- timing calls

def test_a_call_is_read_to_its_end_and_a_stream_notes_its_first_byte(upstream):
    client = harness.Client(harness.Upstream(upstream.url, "k", "m"))
    plain, streamed = client.call(), client.call(max_tokens=4, stream=True)
    assert plain.ok and plain.header_ms is None and plain.first_byte_ms is None
    assert streamed.ok and 0 < streamed.first_byte_ms <= streamed.wall_ms


def test_a_refused_connection_is_a_failed_call_not_an_exception():
    call = harness.Client(harness.Upstream(f"http://127.0.0.1:{free_port()}/v1", "k", "m")).call()
    assert call.status == 0 and not call.ok


def test_sequential_gives_every_path_the_same_calls_and_keeps_only_the_measured_ones(upstream):
    before = upstream.requests
    paths = {name: harness.Upstream(upstream.url, "k", name) for name in ("direct", "baseline", "candidate")}
    calls = harness.sequential(paths, requests=5, warmup=2)
    assert {path: len(c) for path, c in calls.items()} == {"direct": 5, "baseline": 5, "candidate": 5}
    assert all(c.ok for path in calls.values() for c in path)
    assert upstream.requests - before == 3 * (5 + 2)  # the warm-up calls were made, then left out


def test_throughput_counts_every_call_that_ended_and_none_failed(upstream):
    before = upstream.requests
    result = harness.throughput(harness.Upstream(upstream.url, "k", "m"), concurrency=3, seconds=0.3, max_tokens=2)
    assert result.errors == 0 and result.ok == upstream.requests - before > 0
    assert result.rps == pytest.approx(result.ok / result.seconds)


def test_throughputs_add_up_each_paths_slices(upstream):
    before = upstream.requests
    paths = {name: harness.Upstream(upstream.url, "k", name) for name in ("direct", "gateway")}
    rates = harness.throughputs(paths, concurrency=2, seconds=0.4, slices=2, max_tokens=1)
    assert set(rates) == {"direct", "gateway"} and all(r.errors == 0 and r.ok > 0 for r in rates.values())
    assert sum(r.ok for r in rates.values()) == upstream.requests - before


def test_the_overhead_header_is_read_as_a_number_or_none():
    assert harness._header_ms("12.5") == 12.5
    assert harness._header_ms("None") is None and harness._header_ms(None) is None and harness._header_ms("n/a") is None


# --------------------------------------------------------------------------- statistics

def test_percentiles_interpolate_between_closest_ranks():
    values = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]
    assert harness.percentile(values, 50) == pytest.approx(5.5)
    assert harness.percentile(values, 90) == pytest.approx(9.1)
    assert harness.percentile(values, 99) == pytest.approx(9.91)
    assert harness.percentile(values, 0) == 1 and harness.percentile(values, 100) == 10
    assert harness.percentile([7.0], 90) == 7.0
    assert harness.percentile([], 50) is None
    with pytest.raises(ValueError):
        harness.percentile(values, 101)


def test_the_latency_row_subtracts_the_direct_percentile_from_the_gateway_one():
    calls = {"direct": [harness.Call(float(ms), 200) for ms in range(1, 11)],
             "gateway": [harness.Call(float(ms) + 20, 200, header_ms=float(ms)) for ms in range(1, 11)]
             + [harness.Call(999.0, 500), harness.Call(30.0, 200, header_ms=None)]}
    row = harness.latency_row(calls)
    assert row == harness.latency_row({"stub": calls["direct"], "b": calls["gateway"]}, path="b", direct="stub")
    assert row["errors"] == 1 and row["requests"] == 12
    assert row["header_p50"] == pytest.approx(5.5)  # the call without a header is left out of the header figures
    assert row["gateway_p50"] == pytest.approx(26.0)  # the failed call is left out of the wall-clock
    assert row["wall_added_p50"] == pytest.approx(row["gateway_p50"] - row["direct_p50"])
    assert row["wall_added_p90"] == pytest.approx(row["gateway_p90"] - row["direct_p90"])


def test_a_path_without_answers_has_no_figures_rather_than_zero():
    row = harness.latency_row({"direct": [harness.Call(1.0, 200)], "gateway": [harness.Call(5.0, 0)]})
    assert row["gateway_p50"] is None and row["wall_added_p50"] is None and row["header_p50"] is None


def test_the_throughput_ratio_is_gateway_over_direct():
    row = harness.throughput_row(harness.Throughput(8, ok=200, errors=0, seconds=10), harness.Throughput(8, 190, 2, 10))
    assert row["throughput_ratio"] == pytest.approx(0.95) and row["throughput_errors"] == 2
    nothing = harness.throughput_row(harness.Throughput(8, 0, 5, 10), harness.Throughput(8, 0, 0, 10))
    assert nothing["throughput_ratio"] is None


def test_a_setting_row_is_the_median_of_its_repeats_and_sums_their_errors():
    repeats = [{"header_p50": 10.0, "errors": 1, "load_1m": 2.0}, {"header_p50": 30.0, "errors": 0, "load_1m": 6.0},
               {"header_p50": 12.0, "errors": 0, "throughput_errors": 2, "load_1m": 4.0}]
    row = oh.combine("shipped", repeats)
    assert row["header_p50"] == 12.0 and row["load_1m"] == 4.0
    assert row["errors"] == 3 and row["repeats"] == 3
    table = oh.table([row, oh.combine("other", [{"header_p50": 8.04}])])
    assert list(table.index) == ["shipped", "other"]
    assert list(table.columns) == [c for c in oh.COLUMNS if c in table.columns]
    assert table.loc["other", "header_p50"] == 8.0


def test_a_setting_is_compared_with_the_baseline_of_the_same_repeat():
    base = {"header_p50": 20.0, "wall_added_p50": 30.0, "gateway_cpu_ms_per_call": 40.0, "gateway_rps": 10.0}
    candidate = {"header_p50": 15.0, "wall_added_p50": 33.0, "gateway_cpu_ms_per_call": None, "gateway_rps": 12.0}
    assert oh.paired(candidate, base) == {"header_p50_vs_base": -5.0, "wall_added_p50_vs_base": 3.0,
                                          "gateway_cpu_ms_per_call_vs_base": None, "gateway_rps_vs_base": 1.2}


def test_cpu_of_a_process_tree_is_read_and_a_missing_process_has_none():
    import os
    assert harness.tree_cpu_seconds(os.getpid()) > 0
    assert harness.tree_cpu_seconds(None) is None
    assert harness.cpu_ms_per_call(1.0, 1.5, 100) == pytest.approx(5.0)
    assert harness.cpu_ms_per_call(None, 1.5, 100) is None


# --------------------------------------------------------------------------- settings under test

def test_a_setting_changes_a_copy_of_the_config_and_drops_only_the_named_callback():
    config = {"general_settings": {"master_key": "os.environ/K"},
              "litellm_settings": {"callbacks": ["prometheus", "inferbook_hooks.proxy_handler_instance"]}}
    setting = oh.Setting("s", general_settings={"proxy_batch_write_at": 60}, drop_callbacks=("prometheus",))
    changed = setting.apply_config(config)
    assert changed["general_settings"] == {"master_key": "os.environ/K", "proxy_batch_write_at": 60}
    assert changed["litellm_settings"]["callbacks"] == ["inferbook_hooks.proxy_handler_instance"]
    assert config["litellm_settings"]["callbacks"][0] == "prometheus"  # the original is untouched


def test_a_setting_replaces_a_flag_rather_than_repeating_it_and_adds_its_environment():
    setting = oh.Setting("s", env={"LITELLM_LOG": "ERROR"}, args=("--num_workers=2",))
    argv, env = setting.apply_command(["litellm", "--num_workers=1", "--port=1"], {"A": "1"})
    assert argv == ["litellm", "--port=1", "--num_workers=2"]
    assert env == {"A": "1", "LITELLM_LOG": "ERROR"}


def test_every_candidate_setting_has_a_distinct_name_and_a_reason():
    names = [s.name for s in (oh.SHIPPED, *oh.CANDIDATES)]
    assert len(names) == len(set(names))
    assert all(s.why for s in oh.CANDIDATES)


def test_the_stub_profile_has_its_own_name_and_ports_and_leaves_the_profile_alone():
    layout = Layout.discover(start=ROOT)
    profile = load_profile("local", layout=layout)
    ports = oh.Ports(stub=8301, gateway=4301, postgres=5631, second_gateway=4302, second_postgres=5632)
    own, second = oh.stub_profile(profile, ports), oh.stub_profile(profile, ports, second=True)
    assert (own.name, second.name) == ("local-overhead", "local-overhead-b")
    assert own.data["local"]["ports"] == {**profile.data["local"]["ports"], "serving": 8301,
                                          "llm-gateway": 4301, "postgres": 5631}
    assert second.data["local"]["ports"] == {**profile.data["local"]["ports"], "serving": 8301,
                                             "llm-gateway": 4302, "postgres": 5632}
    assert profile.data["local"]["ports"]["serving"] == 8000
    assert oh.stub_profile(own).name == "local-overhead"


def test_the_tuned_gateway_points_the_aliases_at_the_stub_with_the_setting_applied(layout: Layout):
    own = oh.stub_profile(load_profile("local", layout=layout), oh.Ports(stub=8301))
    objects = layers.render("llm-gateway", own, layout)
    setting = oh.Setting("s", general_settings={"proxy_batch_write_at": 60}, drop_callbacks=("prometheus",))
    config = oh.TunedGateway(own, layout, setting, say=lambda _: None)._config(objects)
    assert {e["litellm_params"]["api_base"] for e in config["model_list"]} == {"http://127.0.0.1:8301/v1"}
    assert config["general_settings"]["proxy_batch_write_at"] == 60
    assert "prometheus" not in config["litellm_settings"]["callbacks"]
    assert "prometheus" in gw.gateway_config(objects)["litellm_settings"]["callbacks"]  # the shipped one keeps it


# --------------------------------------------------------------------------- where the time goes (py-spy)

ROOT_FRAMES = 'process 1:"python -m inferbook.reaper";process 2:"litellm";Runner.run (asyncio/runners.py:118)'
SUCCESS = "Logging.async_success_handler (litellm_logging.py:5)"
RAW = "\n".join(f"{ROOT_FRAMES};{frames} {count}" for frames, count in (
    ("run_asgi (uvicorn/h11_impl.py:3);user_api_key_auth (user_api_key_auth.py:10)", 30),
    (f"{SUCCESS};PrometheusLogger.async_log_success_event (prometheus.py:9)", 20),
    (f"{SUCCESS};_ProxyDBLogger.async_log_success_event (proxy_track_cost_callback.py:4)", 10),
    ("Router.acompletion (litellm/router.py:7)", 15),
    ("run_asgi (uvicorn/h11_impl.py:3);send (uvicorn/h11_impl.py:9)", 15),
    ("Runner.run (asyncio/runners.py:120)", 10),
)) + "\n\n"


def test_py_spy_samples_are_sorted_into_stages_with_their_share_of_the_cpu():
    from inferbook.layers.benchmarks import proxy_profile as pp

    samples = pp.Samples.parse(RAW.splitlines())
    assert samples.total == 100
    stages = pp.breakdown(samples, cpu_ms_per_call=40.0)
    share = stages["share_%"].to_dict()
    assert share["authentication: key, budget and limit checks"] == 30.0  # inside run_asgi, yet counted as auth
    assert share["metrics callback (Prometheus)"] == 20.0  # inside the success handler, counted as metrics
    assert share["spend booking: ledger rows and counters"] == 10.0
    assert share["routing and the upstream call"] == 15.0
    assert share["HTTP, middleware and the response"] == 15.0
    assert share[pp.OTHER] == 10.0
    assert stages["share_%"].sum() == pytest.approx(100.0)
    assert stages.loc["metrics callback (Prometheus)", "cpu_ms_per_call"] == pytest.approx(8.0)
    assert list(stages.index)[-1] == pp.OTHER  # every stage listed, in order, the rest last


def test_the_hottest_functions_are_the_sampled_stack_tops_with_lines_merged():
    from inferbook.layers.benchmarks import proxy_profile as pp

    hot = pp.hottest(pp.Samples.parse(RAW.splitlines()), top=2)
    assert list(hot.index) == ["user_api_key_auth (user_api_key_auth.py)", "PrometheusLogger.async_log_success_event "
                               "(prometheus.py)"]
    assert hot["share_%"].tolist() == [30.0, 20.0]


def test_a_line_that_is_not_py_spy_output_is_refused_by_content_and_an_empty_record_says_so():
    from inferbook.layers.benchmarks import proxy_profile as pp

    with pytest.raises(ValueError, match="not a py-spy raw line"):
        pp.Samples.parse(["this is not a stack"])
    with pytest.raises(pp.ProfileRefused, match="no sample"):
        pp.breakdown(pp.Samples.parse([]))


def test_py_spy_is_installed_with_the_project_and_samples_a_running_python(tmp_path):
    from inferbook.layers.benchmarks import proxy_profile as pp

    code = "def spin():\n    while True:\n        sum(range(1000))\nspin()"
    busy = subprocess.Popen([sys.executable, "-c", code])
    try:
        samples = pp.record_during(busy.pid, tmp_path / "raw.txt", 2, lambda: None)
    finally:
        busy.kill()
        busy.wait()
    assert samples.total > 0
    assert any("spin" in stack for stack in samples.stacks)


def test_setting_names_are_chosen_by_name_with_the_shipped_one_first_and_an_unknown_one_named():
    assert [s.name for s in oh.settings_named("shipped")] == ["shipped"]
    chosen = oh.settings_named("granian, NO_DOCS")
    assert [s.name for s in chosen] == ["shipped", "granian", "NO_DOCS"]
    assert len(oh.settings_named("all")) == 1 + len(oh.CANDIDATES)
    with pytest.raises(ValueError, match="'nope'.*choose from"):
        oh.settings_named("nope")


def test_the_proxy_alone_is_judged_on_its_medians_and_draws_only_with_a_profile():
    from inferbook.layers.benchmarks import proxy_profile as pp

    samples = pp.Samples.parse(RAW.splitlines())
    found = oh.ProxyProfile(pp.breakdown(samples, 40.0), pp.hottest(samples), 100, 40.0, 18.0)
    row = {"header_p50": 4.0, "header_p90": 9.0, "wall_added_p50": 30.0, "wall_added_p90": 41.0,
           "gateway_cpu_ms_per_call": 40.0, "requests": 10, "errors": 0}
    goals = oh.ProxyAlone(row, found).goals()
    assert goals["verdict"].tolist() == ["met", "not met", "-"]  # 4 ms <= 5 ms; 30 ms is not
    assert goals.iloc[0]["p90 (ms)"] == 9.0
    assert oh.ProxyAlone(row, found).plot().axes[0].get_xlabel() == "CPU ms per call"
    with pytest.raises(ValueError, match="no ptrace"):
        oh.ProxyAlone(row, None, "no ptrace").plot()


def test_each_turn_rotates_the_paths_so_none_always_goes_first():
    names = ["direct", "baseline", "candidate"]
    turns = [harness.in_turn(names, i) for i in range(4)]
    assert turns[0] == names and turns[3] == names
    assert [t[0] for t in turns[:3]] == names  # each path leads one turn in three
    assert all(sorted(t) == sorted(names) for t in turns)
