"""The benchmark harness: percentiles on known data, exact prompts, the sweep's bookkeeping against a stub server,
failed requests counted, the JSON artefact against its schema, GuideLLM's report read, the verdicts.

Nothing here calls a model: the sweep runs against :mod:`tests.stub_openai` (a test double of vLLM's streamed
``/v1/completions``), on a virtual clock where a figure must be exact, and GuideLLM's report is a real one
recorded against that stub (``tests/data/guidellm-0.8.1-stub.json``).
"""

from __future__ import annotations

import json
import random
import stat
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from inferbook import layers, load_profile
from inferbook.layers.benchmarks import guidellm, paired, report, stats
from inferbook.layers.benchmarks.result import Sweep, load_schema
from inferbook.layers.benchmarks.session import Bench
from inferbook.layers.benchmarks.sweep import Level, Outcome, Prompts, run_level
from inferbook.layers.benchmarks.workload import WORDS, FileTokenizer, Shape, WorkloadError, exact_prompt, parse_levels
from inferbook.layers.observability import load, manifests
from inferbook.paths import Layout

from .conftest import ROOT
from .stub_openai import Behaviour, StepClock, StubOpenAI

DATA = Path(__file__).parent / "data"
GUIDELLM_REPORT = DATA / "guidellm-0.8.1-stub.json"


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE tokenizer trained on the prompt words (a real tokenizer.json, no model needed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    rng = random.Random(0)
    tok.train_from_iterator([" ".join(rng.sample(WORDS, len(WORDS))) for _ in range(50)], trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


# --------------------------------------------------------------------------- percentiles


def test_percentiles_interpolate_linearly_between_ranks_on_known_data() -> None:
    data = [4.0, 1.0, 3.0, 2.0]
    assert stats.percentile(data, 50) == pytest.approx(2.5)
    assert stats.percentile(data, 95) == pytest.approx(3.85)  # rank 2.85: 3 + 0.85 * (4 - 3)
    assert stats.percentile(data, 99) == pytest.approx(3.97)
    assert stats.percentile(data, 0) == 1.0 and stats.percentile(data, 100) == 4.0
    assert stats.percentile([15, 20, 35, 40, 50], 40) == pytest.approx(29.0)  # rank 1.6: 20 + 0.6 * 15
    assert stats.percentile([7.0], 99) == 7.0
    assert stats.percentile([], 50) is None


def test_percentiles_agree_with_numpys_default_method() -> None:
    rng = random.Random(12)
    values = [rng.expovariate(1 / 80) for _ in range(137)]
    for q in (0, 1, 50, 90, 95, 99, 100):
        assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_a_percentile_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        stats.percentile([1.0], 101)


def test_guidellms_lower_percentile_takes_the_value_whose_share_reaches_q() -> None:
    tens = [10.0 * i for i in range(1, 11)]
    assert stats.lower_percentile(tens, 50) == 50.0  # 5 of 10 values are <= 50
    assert stats.lower_percentile(tens, 95) == 100.0  # no interpolation: the next value up
    assert stats.percentile(tens, 95) == pytest.approx(95.5)
    assert stats.lower_percentile([], 50) is None


def test_summary_gives_p50_p95_p99_and_the_mean() -> None:
    assert stats.summary([1.0, 2.0, 3.0, 4.0]) == pytest.approx({"p50": 2.5, "p95": 3.85, "p99": 3.97, "mean": 2.5})
    assert stats.summary([]) == {"p50": None, "p95": None, "p99": None, "mean": None}


# --------------------------------------------------------------------------- workload


@pytest.mark.parametrize("tokens", [2, 17, 64, 256])
def test_a_prompt_encodes_to_exactly_the_asked_tokens(tokenizer_file: Path, tokens: int) -> None:
    tok = FileTokenizer(tokenizer_file)
    for seed in range(5):
        assert len(tok.encode(exact_prompt(tok, tokens, seed))) == tokens


def test_prompts_differ_from_their_first_words_on(tokenizer_file: Path) -> None:
    """Different openings keep the server's prefix cache from turning a prefill into a lookup."""
    tok = FileTokenizer(tokenizer_file)
    prompts = [exact_prompt(tok, 32, seed) for seed in range(20)]
    assert len({p.split()[0] for p in prompts}) == 20


def test_a_missing_tokenizer_and_impossible_shapes_are_explained(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="no tokenizer.json"):
        FileTokenizer(tmp_path)
    with pytest.raises(WorkloadError, match="give whole numbers"):
        parse_levels("1,two")
    with pytest.raises(WorkloadError, match="levels of 1 or more"):
        Shape((0,), 8, 8, 1.0)
    with pytest.raises(WorkloadError, match="2 or more output tokens"):
        Shape((1,), 8, 1, 1.0)
    assert parse_levels("1, 2,4") == (1, 2, 4)


def test_the_profiles_carry_the_sweep_shape(layout: Layout) -> None:
    local, cluster = load_profile("local").data["benchmarks"], load_profile("gke-l4").data["benchmarks"]
    assert (cluster["input_tokens"], cluster["output_tokens"]) == (256, 128)  # ADR-0003's shape
    assert "slo" not in cluster and "slo" not in local  # the objectives live once, in the top-level slo
    assert Bench(load_profile("gke-l4"), layout).slo == {"ttft_p95_ms": 250, "itl_p95_ms": 20, "e2e_p95_ms": 1500,
                                                         "kv_cache_usage_max": 0.9}  # ADR-0003's, the defaults
    assert local["note"] and local["duration_seconds"] < cluster["duration_seconds"]
    assert Shape.from_profile(load_profile("local").data, duration_s=3).duration_s == 3


# --------------------------------------------------------------------------- the sweep against the stub


def _level(stub: StubOpenAI, tokenizer_file: Path, shape: Shape, concurrency: int, clock=None) -> Level:
    from inferbook import smoke

    client = smoke.client(stub.url, stub.behaviour.key)
    prompts = Prompts(FileTokenizer(tokenizer_file), shape.input_tokens, first_seed=1000)
    kwargs = {"clock": clock} if clock else {}
    return run_level(client, stub.behaviour.model, prompts, concurrency, shape, **kwargs)


def test_ttft_itl_e2e_and_the_windows_rates_are_booked_exactly(tokenizer_file: Path) -> None:
    """On a virtual clock the stub sends the first token after 125 ms and one every 62.5 ms: 5 tokens a request."""
    clock = StepClock()
    behaviour = Behaviour(ttft_s=0.125, itl_s=0.0625, tokenizer=tokenizer_file, clock=clock)
    shape = Shape((1,), input_tokens=24, output_tokens=5, duration_s=0.9)
    with StubOpenAI(behaviour) as stub:
        level = _level(stub, tokenizer_file, shape, 1, clock)
    # each request lasts 0.125 + 4 * 0.0625 = 0.375 s: starts at 0, 0.375, 0.75 (the third drains past 0.9)
    assert [o.start_s for o in level.outcomes] == [0.0, 0.375, 0.75]
    assert level.ttft_ms == {"p50": 125.0, "p95": 125.0, "p99": 125.0, "mean": 125.0}
    assert level.itl_ms == {"p50": 62.5, "p95": 62.5, "p99": 62.5, "mean": 62.5}
    assert level.e2e_ms["p95"] == 375.0
    assert level.drained_s == 1.125
    # in the 0.9 s window: 5 + 5 tokens and the third request's first (at 0.875); 2 requests completed
    assert level.output_tokens_per_s == pytest.approx(11 / 0.9, abs=1e-3)
    assert level.requests_per_s == pytest.approx(2 / 0.9, abs=1e-4)
    assert (level.requests, level.succeeded, level.errors, level.inexact) == (3, 3, 0, 0)
    assert all(o.prompt_tokens == 24 and o.output_tokens == 5 for o in level.outcomes)


def test_each_request_is_streamed_with_usage_and_an_exact_output_length(tokenizer_file: Path) -> None:
    with StubOpenAI(Behaviour(tokenizer=tokenizer_file)) as stub:
        level = _level(stub, tokenizer_file, Shape((2,), 16, 7, 0.2), 2)
        sent = stub.requests
    assert level.requests == len(sent) > 0
    assert all(body["stream"] and body["stream_options"] == {"include_usage": True} and body["ignore_eos"]
               and body["max_tokens"] == 7 for body in sent)
    assert len({body["prompt"] for body in sent}) == len(sent), "every prompt is new"


def test_a_failed_request_is_counted_by_kind_and_never_enters_a_latency(tokenizer_file: Path) -> None:
    with StubOpenAI(Behaviour(fail_every=3, tokenizer=tokenizer_file)) as stub:
        level = _level(stub, tokenizer_file, Shape((2,), 16, 4, 0.3), 2)
        answered = len(stub.requests)
    failed = answered // 3  # the stub refuses its 3rd, 6th, ... request with HTTP 500
    assert failed > 0
    assert level.requests == answered and level.errors == failed and level.error_kinds == {"HTTP 500": failed}
    assert level.succeeded == answered - failed
    assert sum(1 for o in level.outcomes if o.ttft_s is not None) == level.succeeded
    assert [r["error"] for r in (o.record() for o in level.outcomes)].count("HTTP 500") == failed


@pytest.mark.parametrize(("behaviour", "kind"), [({"error_event_every": 2}, "stream error"),
                                                 ({"cut_every": 2}, "stream ended early")])
def test_a_stream_that_breaks_midway_is_a_counted_error(tokenizer_file: Path, behaviour: dict, kind: str) -> None:
    clock = StepClock()
    with StubOpenAI(Behaviour(ttft_s=0.25, itl_s=0.25, clock=clock, **behaviour)) as stub:
        level = _level(stub, tokenizer_file, Shape((1,), 8, 3, 2.0), 1, clock)
    # a whole request lasts 0.75 s, a broken one 0.25 s: 0.75 + 0.25 + 0.75 + ... until 2.0
    assert [o.error for o in level.outcomes] == [None, kind, None, kind]
    assert level.error_kinds == {kind: 2} and level.succeeded == 2


def test_a_wrong_key_is_an_error_of_every_request(tokenizer_file: Path) -> None:
    from inferbook import smoke

    with StubOpenAI(Behaviour()) as stub:
        client = smoke.client(stub.url, "not-the-key")
        level = run_level(client, "stub-model", Prompts(FileTokenizer(tokenizer_file), 8, 0), 1, Shape((1,), 8, 2, 0.1))
    assert level.requests > 0 and level.error_kinds == {"HTTP 401": level.requests}
    assert level.ttft_ms["p50"] is None and level.output_tokens_per_s == 0


# --------------------------------------------------------------------------- artefacts


def _sweep(levels: list[Level], shape: Shape, harness: str = "inferbook", target: str = "direct") -> Sweep:
    return Sweep(harness, target, "http://127.0.0.1:1/v1", "stub-model", "local", shape, levels, "closed-loop",
                 seed=7)


def test_the_json_artefact_matches_its_schema_and_keeps_every_request(tokenizer_file: Path, tmp_path: Path) -> None:
    shape = Shape((1, 2), 16, 4, 0.2)
    with StubOpenAI(Behaviour(fail_every=4, tokenizer=tokenizer_file)) as stub:
        levels = [_level(stub, tokenizer_file, shape, c) for c in shape.concurrency]
    sweep = _sweep(levels, shape)
    written = json.loads(sweep.write_json(tmp_path / "bench.json").read_text())
    jsonschema.validate(written, load_schema())
    assert written["schema"] == "inferbook-benchmark/1" and written["percentile_method"] == stats.METHOD
    assert len(written["requests"]) == sum(level["requests"] for level in written["levels"])
    assert sum(r["error"] == "HTTP 500" for r in written["requests"]) == sum(lv.errors for lv in levels) > 0
    rows = (tmp_path / "bench.csv")
    sweep.write_csv(rows)
    lines = rows.read_text().splitlines()
    assert len(lines) == 3 and "ttft_p95_ms" in lines[0].split(",") and "error_kinds" in lines[0]


def test_the_schema_refuses_a_broken_artefact() -> None:
    level = Level(1, 1.0, 1.0, 1, 1, 0, {}, 0, 1.0, 1.0, *({"p50": 1.0, "p95": 1.0, "p99": 1.0, "mean": 1.0},) * 3)
    record = _sweep([level], Shape((1,), 8, 2, 1.0)).record()
    jsonschema.validate(record, load_schema())
    for broken in ({**record, "levels": []}, {**record, "target": "elsewhere"},
                   {**record, "levels": [{**record["levels"][0], "errors": -1}]},
                   {**record, "api_key": "sk-1234"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, load_schema())


# --------------------------------------------------------------------------- GuideLLM


def _guidellm_report() -> dict:
    return json.loads(GUIDELLM_REPORT.read_text())


def test_guidellms_report_is_read_into_our_levels_errors_included() -> None:
    shape = Shape((1, 2), 32, 8, 3.0)
    sweep = guidellm.parse(_guidellm_report(), shape, target="direct", url="http://x/v1", profile="local", seed=1)
    assert [lv.concurrency for lv in sweep.levels] == [1, 2]
    raw = _guidellm_report()["benchmarks"]
    for level, bench in zip(sweep.levels, raw, strict=True):
        totals = bench["metrics"]["request_totals"]
        assert (level.succeeded, level.errors) == (totals["successful"], totals["errored"])
        assert level.ttft_ms["p95"] == pytest.approx(
            bench["metrics"]["time_to_first_token_ms"]["successful"]["percentiles"]["p95"], abs=1e-3)
        assert level.e2e_ms["p50"] == pytest.approx(
            bench["metrics"]["request_latency"]["successful"]["percentiles"]["p50"] * 1000, abs=1e-3)
        assert level.error_kinds == ({"HTTP 500": level.errors} if level.errors else {})
    assert sum(lv.errors for lv in sweep.levels) > 0, "the stub failed some of GuideLLM's requests"
    jsonschema.validate(sweep.record(), load_schema())


def test_guidellms_own_requests_recomputed_give_our_percentiles_of_its_timings() -> None:
    shape = Shape((1, 2), 32, 8, 3.0)
    again = guidellm.parse(_guidellm_report(), shape, target="direct", url="http://x/v1", profile="local", seed=1,
                           recompute=True)
    bench = _guidellm_report()["benchmarks"][1]
    ttfts = [(r["info"]["timings"]["first_token_iteration"] - r["info"]["timings"]["request_start"]) * 1000
             for r in bench["requests"]["successful"]]
    assert again.levels[1].ttft_ms["p95"] == pytest.approx(stats.percentile(ttfts, 95), abs=1e-3)
    assert again.levels[1].ttft_ms["p50"] == pytest.approx(stats.percentile(ttfts, 50), abs=1e-3)
    assert again.percentile_method == stats.METHOD


def test_guidellm_gets_the_key_only_through_its_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUIDELLM__SPEC__BACKEND__TARGET", "http://elsewhere")  # a caller's setting is not inherited
    spec = guidellm.scenario("http://127.0.0.1:9", "m", Shape((1, 4), 64, 16, 5.0), "/models/m", 3, tmp_path / "r.json")
    assert "sk-" not in json.dumps(spec) and spec["spec"]["profile"] == {"kind": "concurrent", "streams": [1, 4]}
    assert spec["spec"]["data"] == [{"kind": "synthetic_text", "prompt_tokens": 64, "output_tokens": 16}]
    env = guidellm.environment("sk-secret", offline=True, max_worker_processes=1)
    assert env["GUIDELLM__SPEC__BACKEND__API_KEY"] == "sk-secret" and env["HF_HUB_OFFLINE"] == "1"
    assert "GUIDELLM__SPEC__BACKEND__TARGET" not in env and env["GUIDELLM__MAX_WORKER_PROCESSES"] == "1"
    assert "HF_HUB_OFFLINE" not in guidellm.environment("k", offline=False, max_worker_processes=None)


FAKE_GUIDELLM = """#!{python}
import json, os, sys
scenario = json.load(open(sys.argv[sys.argv.index("--scenario") + 1]))
if os.environ.get("GUIDELLM__SPEC__BACKEND__API_KEY") != "sk-fake" or "sk-fake" in " ".join(sys.argv):
    print("refused: the key came the wrong way, sk-fake"); sys.exit(3)
if os.environ.get("FAKE_FAIL"):
    print("Server error '401 Unauthorized' for key sk-fake"); sys.exit(1)
print("26-11-30|INFO|guidellm.benchmark.progress - Benchmark 1 (concurrent@1): completed | elapsed=3.0s")
with open(scenario["spec"]["outputs"][0]["path"], "w") as out:
    out.write(open({report!r}).read())
"""


def _fake_guidellm(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "guidellm"
    script.write_text(FAKE_GUIDELLM.format(python=sys.executable, report=str(GUIDELLM_REPORT)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir / "python"


def test_running_guidellm_returns_its_report_and_shows_its_progress(tmp_path: Path) -> None:
    said: list[str] = []
    found = guidellm.run("http://127.0.0.1:9", "stub-model", "sk-fake", Shape((1, 2), 32, 8, 3.0), tmp_path / "tok",
                         tmp_path / "out" / "report.json", seed=5, cache_dir=tmp_path, say=said.append,
                         python=_fake_guidellm(tmp_path))
    assert found["benchmarks"][0]["config"]["strategy"]["streams"] == 1
    assert said == ["guidellm: concurrent@1 completed | elapsed=3.0s"]


def test_a_failed_guidellm_run_shows_its_last_lines_with_the_key_masked(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(guidellm.GuideLLMFailed) as info:
        guidellm.run("http://127.0.0.1:9", "stub-model", "sk-fake", Shape((1,), 32, 8, 3.0), tmp_path,
                     tmp_path / "r.json", seed=5, cache_dir=tmp_path, say=lambda _: None,
                     python=_fake_guidellm(tmp_path))
    message = str(info.value)
    assert "status 1" in message and "401 Unauthorized" in message and "sk-fake" not in message


# --------------------------------------------------------------------------- verdicts and comparisons


def _made_level(concurrency: int, ttft: float, itl: float, e2e: float, rate: float, errors: int = 0,
                cancelled: int = 0, n: int = 40) -> Level:
    def figures(value: float) -> dict[str, float]:
        return {"p50": value * 0.8, "p95": value, "p99": value * 1.1, "mean": value * 0.85}

    return Level(concurrency, 10.0, 12.0, n + errors, n, errors, {"HTTP 500": errors} if errors else {}, 0, rate,
                 rate / 10, figures(ttft), figures(itl), figures(e2e), cancelled=cancelled)


SLO = {"ttft_p95_ms": 250, "itl_p95_ms": 20, "e2e_p95_ms": 1500}


def test_the_knee_is_the_highest_level_meeting_every_objective_without_error() -> None:
    shape = Shape((1, 8, 32, 64), 256, 128, 10.0)
    sweep = _sweep([_made_level(1, 100, 6, 800, 160), _made_level(8, 120, 8, 900, 1200),
                    _made_level(32, 240, 12, 1400, 3700, errors=1), _made_level(64, 400, 25, 3000, 4000)], shape)
    assert report.knee(sweep, SLO) == 8  # 32 meets the latencies but failed a request
    table = report.slo_table(sweep, SLO)
    assert table.loc[8, "verdict"] == "meets the SLOs"
    assert table.loc[32, "verdict"] == "misses: 1 error(s)"
    assert table.loc[64, "verdict"] == "misses: TTFT p95, ITL p95, E2E p95"
    assert report.knee(_sweep([_made_level(1, 300, 6, 800, 160)], Shape((1,), 8, 8, 1.0)), SLO) is None


def test_one_set_of_objectives_sets_the_alerts_and_the_knee(layout: Layout, tmp_path: Path) -> None:
    """The PrometheusRule's objectives and the benchmark's verdict read the same profile values: a copy of
    ``local`` with one objective changed moves both, and the observability load asks for the benchmark's answer
    length, the one the objectives hold for."""
    def rule_objectives(profile_ref: str) -> dict[str, str]:
        objects = layers.render("observability", load_profile(profile_ref, layout=layout), layout)
        return {r["labels"]["sli"]: r["expr"] for r in manifests.rules_of(objects)
                if r.get("record") == manifests.OBJECTIVE_RECORD}

    # TTFT p95 climbs with the queue; ITL and E2E stay within local's objectives at every level
    sweep = _sweep([_made_level(1, 1500, 130, 3500, 9), _made_level(2, 3000, 150, 5500, 14),
                    _made_level(4, 6000, 180, 8500, 16)], Shape((1, 2, 4), 64, 16, 12.0))
    text = (ROOT / "profiles" / "local.yaml").read_text()
    assert text.count("  ttft_p95_ms: 5000\n") == 1
    copy = tmp_path / "local-ttft-2s.yaml"
    copy.write_text(text.replace("  ttft_p95_ms: 5000\n", "  ttft_p95_ms: 2000\n"))

    for ref, ttft_s, knee in (("local", "5", 2), (str(copy), "2", 1)):
        profile = load_profile(ref, layout=layout)
        bench = Bench(profile, layout)
        assert rule_objectives(ref)["ttft_p95_seconds"] == f"vector({ttft_s})"
        assert {o.sli: o.target for o in manifests.objectives(profile)} == {
            "ttft_p95_seconds": bench.slo["ttft_p95_ms"] / 1000, "itl_p95_seconds": bench.slo["itl_p95_ms"] / 1000,
            "e2e_p95_seconds": bench.slo["e2e_p95_ms"] / 1000, "kv_cache_usage_ratio": bench.slo["kv_cache_usage_max"]}
        assert report.knee(sweep, bench.slo) == knee
        assert load.answer_tokens(profile) == bench.shape().output_tokens == 16


def test_the_gateways_cost_is_its_added_ttft_and_its_throughput_against_direct() -> None:
    shape = Shape((1, 4), 256, 128, 10.0)
    direct = _sweep([_made_level(1, 100, 6, 800, 160), _made_level(4, 150, 7, 900, 600)], shape)
    gateway = _sweep([_made_level(1, 130, 6, 830, 150), _made_level(4, 190, 7, 950, 540)], shape, target="gateway")
    cost = report.gateway_cost(direct, gateway)
    assert cost.loc[1, "added TTFT p95 (ms)"] == 30.0 and cost.loc[1, "added TTFT p50 (ms)"] == 24.0
    assert cost.loc[4, "throughput ratio (gateway / direct)"] == 0.9


def test_differences_over_ten_percent_are_flagged_with_their_likeliest_reason() -> None:
    shape = Shape((2,), 256, 128, 10.0)
    ours = _sweep([_made_level(2, 200, 10, 1000, 100)], shape)
    theirs = _sweep([_made_level(2, 240, 10.5, 1000, 80, cancelled=2)], shape, harness="guidellm 0.8.1")
    recomputed = _sweep([_made_level(2, 205, 10.5, 1000, 80)], shape, harness="guidellm 0.8.1 (recomputed)")
    table = report.compare(ours, theirs, recomputed)
    ttft = table.loc[(2, "TTFT p95 (ms)")]
    assert ttft["over 10%"] and ttft["difference"] == "+20%" and ttft["why"].startswith("percentile method")
    rate = table.loc[(2, "output tok/s")]
    assert rate["over 10%"] and "cancels the 2 request(s)" in rate["why"]
    assert not table.loc[(2, "ITL p95 (ms)")]["over 10%"] and table.loc[(2, "ITL p95 (ms)")]["why"] == ""


def test_the_l4_reference_is_labelled_as_other_hardware_beside_ours() -> None:
    ref = report.reference()
    assert [lv["concurrency"] for lv in ref["levels"]] == [1, 8, 32] and "L4" in ref["hardware"]
    ours = _sweep([_made_level(1, 900, 90, 4000, 12)], Shape((1,), 128, 32, 15.0))
    table = report.beside_reference(ours, "2 CPU cores (this machine)")
    assert set(table.index.get_level_values("hardware")) == {ref["hardware"], "2 CPU cores (this machine)"}
    assert table.loc[(ref["hardware"], 8), "output tok/s"] == 1312


def test_an_outcome_record_keeps_no_prompt() -> None:
    record = Outcome(1, 0.5, 0.1, 0.01, 0.2, 16, 4, None, [0.6]).record()
    assert record == {"concurrency": 1, "start_s": 0.5, "ttft_ms": 100.0, "itl_ms": 10.0, "e2e_ms": 200.0,
                      "prompt_tokens": 16, "output_tokens": 4, "error": None}


# --------------------------------------------------------------------------- the command


def test_inferbook_bench_sweeps_a_target_and_writes_json_and_csv(tokenizer_file: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from inferbook import cli
    from inferbook.layers.benchmarks import targets

    with StubOpenAI(Behaviour(tokenizer=tokenizer_file, fail_every=5)) as stub:
        def connect(profile, layout, name, say=print):  # the stub stands in for the running gateway
            return targets.Target(name, stub.url, "stub-model", lambda: "stub-key", "the stub", "a test key")

        monkeypatch.setattr(targets, "connect", connect)
        monkeypatch.setattr(targets, "model_dir", lambda profile, cache_dir, say=print: tokenizer_file.parent)
        code = cli.main(["bench", "--profile", "local", "--target", "gateway", "--concurrency", "1,2",
                         "--duration", "0.2", "--input-tokens", "16", "--output-tokens", "4",
                         "--json", str(tmp_path / "sweep.json"), "--csv", str(tmp_path / "sweep.csv")])
    out = capsys.readouterr().out
    assert code == 0
    record = json.loads((tmp_path / "sweep.json").read_text())
    # the stub answers at once, so a level misses only by a failed request; how many requests a 0.2 s level
    # gets depends on the machine, so the expected knee is read from the levels' own error counts
    clean = [lv["concurrency"] for lv in record["levels"] if lv["errors"] == 0]
    assert f"knee (highest concurrency meeting the SLOs): {max(clean) if clean else 'none'}" in out
    jsonschema.validate(record, load_schema())
    assert record["target"] == "gateway" and [lv["concurrency"] for lv in record["levels"]] == [1, 2]
    assert record["workload"]["input_tokens"] == 16 and all(lv["inexact"] == 0 for lv in record["levels"])
    assert sum(lv["errors"] for lv in record["levels"]) == len(stub.requests) // 5 > 0
    assert len((tmp_path / "sweep.csv").read_text().splitlines()) == 3


def test_inferbook_bench_refuses_a_malformed_level_list(capsys: pytest.CaptureFixture[str]) -> None:
    from inferbook import cli

    assert cli.main(["bench", "--profile", "local", "--concurrency", "1,x"]) == 1
    assert "give whole numbers separated by commas" in capsys.readouterr().err


def test_inferbook_bench_both_sweeps_each_target_and_shows_what_the_gateway_costs(
        tokenizer_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from inferbook import cli
    from inferbook.layers.benchmarks import targets

    connected: list[str] = []
    with StubOpenAI(Behaviour(tokenizer=tokenizer_file)) as stub:
        def connect(profile, layout, name, say=print):
            connected.append(name)
            return targets.Target(name, stub.url, "stub-model", lambda: "stub-key", "the stub", "a test key")

        monkeypatch.setattr(targets, "connect", connect)
        monkeypatch.setattr(targets, "model_dir", lambda profile, cache_dir, say=print: tokenizer_file.parent)
        code = cli.main(["bench", "--profile", "local", "--target", "both", "--concurrency", "1", "--duration", "0.1",
                         "--input-tokens", "8", "--output-tokens", "2", "--json", str(tmp_path / "sweep.json")])
    out = capsys.readouterr().out
    assert code == 0 and connected == ["direct", "gateway"]
    assert "what the gateway costs:" in out and "throughput ratio (gateway / direct)" in out
    for name in ("direct", "gateway"):
        record = json.loads((tmp_path / f"sweep-{name}.json").read_text())
        assert record["target"] == name and record["levels"][0]["succeeded"] > 0


def test_a_relative_report_path_lands_where_the_caller_means_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the book passes its run folder relative to the project root
    found = guidellm.run("http://127.0.0.1:9", "stub-model", "sk-fake", Shape((1,), 32, 8, 3.0), Path("tok"),
                         Path("out") / "report.json", seed=5, cache_dir=tmp_path, say=lambda _: None,
                         python=_fake_guidellm(tmp_path))
    assert found["benchmarks"] and (tmp_path / "out" / "report.json").is_file()


# --------------------------------------------------------------------------- the paired comparison


def _slice(tokens: list[int], errors: int = 0, ttft: float = 0.5, window: float = 10.0) -> Level:
    """A slice on known data: one successful request per entry of ``tokens`` (all arrived in the window)."""
    outcomes = [Outcome(1, float(i), ttft_s=ttft + i / 10, itl_s=0.1, e2e_s=2.0 + i, prompt_tokens=8, output_tokens=n,
                        token_times=[i + 1.0] * n) for i, n in enumerate(tokens)]
    outcomes += [Outcome(1, 9.0, error="HTTP 500") for _ in range(errors)]
    return Level.of(1, Shape((1,), 8, 5, window), outcomes, window + 1)


#: Four turns' slices: direct 10, 20, 10, 10 tokens, the gateway 9, 20, 11, 8, each in a 10 s window.
DIRECT_SLICES = [[5, 5], [10, 10], [5, 5], [5, 5]]
GATEWAY_SLICES = [[5, 4], [10, 10], [5, 6], [4, 4]]


def _paired(direct: list[list[int]], gateway: list[list[int]], errors: dict[tuple[str, int], int] | None = None,
            ran: list[tuple[str, int]] | None = None) -> paired.Paired:
    slices = {"direct": direct, "gateway": gateway}

    def run(path: str, turn: int) -> Level:
        if ran is not None:
            ran.append((path, turn))
        return _slice(slices[path][turn], errors=(errors or {}).get((path, turn), 0))

    return paired.Paired(1, Shape((1,), 8, 5, 10.0), paired.run_turns(run, len(direct)), "local",
                         targets={p: {"url": "http://127.0.0.1:1/v1", "model": "stub-model", "seed": 7}
                                  for p in paired.PATHS}, why="the knee of the direct sweep")


def test_the_paired_slices_alternate_which_path_goes_first() -> None:
    ran: list[tuple[str, int]] = []
    result = _paired(DIRECT_SLICES, GATEWAY_SLICES, ran=ran)
    assert ran == [("direct", 0), ("gateway", 0), ("gateway", 1), ("direct", 1),
                   ("direct", 2), ("gateway", 2), ("gateway", 3), ("direct", 3)]
    assert [t.order for t in result.turns] == [("direct", "gateway"), ("gateway", "direct")] * 2
    assert list(result.turns_table()["order"]) == ["direct then gateway", "gateway then direct"] * 2


def test_each_paths_totals_add_up_its_slices_and_count_every_error() -> None:
    result = _paired(DIRECT_SLICES, GATEWAY_SLICES, errors={("gateway", 1): 2, ("gateway", 3): 1})
    direct, gateway = result.totals("direct"), result.totals("gateway")
    assert (direct["requests"], direct["succeeded"], direct["errors"]) == (8, 8, 0)
    assert (gateway["requests"], gateway["succeeded"], gateway["errors"]) == (11, 8, 3)
    assert gateway["error_kinds"] == {"HTTP 500": 3}
    assert direct["output_tokens"] == 50 and gateway["output_tokens"] == 48
    assert direct["window_s"] == gateway["window_s"] == 40.0
    assert direct["output_tokens_per_s"] == 1.25 and gateway["output_tokens_per_s"] == 1.2
    # TTFT of a slice's i-th request is 0.5 + i/10 s: 0.5 and 0.6 in every slice, pooled
    assert direct["ttft_p50_ms"] == pytest.approx(550.0) and direct["e2e_p50_ms"] == pytest.approx(2500.0)
    table = result.table()
    assert table.loc["gateway", "errors"] == "3 (HTTP 500: 3)" and table.loc["direct", "errors"] == 0
    assert table.loc["gateway", "requests"] == 11 and table.loc["gateway", "completed"] == 8


def test_the_paired_ratio_and_its_spread_on_known_data() -> None:
    result = _paired(DIRECT_SLICES, GATEWAY_SLICES)
    assert result.ratio == 0.96  # 48 / 50 tokens in equal windows
    assert [round(t.ratio, 3) for t in result.turns] == [0.9, 1.0, 1.1, 0.8]
    assert result.spread == {"min": 0.8, "median": 0.95, "max": 1.1, "turns": 4}
    assert result.met is True
    assert result.verdict() == ("gateway / direct output tok/s at concurrency 1: 0.960 (per-turn ratios min 0.800, "
                                "median 0.950, max 1.100 over 4 turns): the 95% goal is met (single turns fall "
                                "either side of 95%)")
    assert result.summary().loc["goal: at least 95% of direct", "value"] == "met"
    lower = _paired([[5, 5], [5, 5]], [[4, 4], [5, 4]])
    assert lower.ratio == 0.85 and lower.met is False and lower.verdict().endswith("the 95% goal is not met")


def test_a_turn_whose_direct_slice_made_no_token_has_no_ratio_and_is_left_out_of_the_spread() -> None:
    result = _paired([[5, 5], [], [5, 5]], [[5, 5], [5], [4, 4]], errors={("direct", 1): 2})
    assert result.turns[1].ratio is None
    assert result.spread == {"min": 0.8, "median": 0.9, "max": 1.0, "turns": 2}
    assert result.ratio == pytest.approx(23 / 20, abs=1e-3) and result.totals("direct")["errors"] == 2
    nothing = _paired([[], []], [[5], [5]])
    assert nothing.ratio is None and nothing.met is None and nothing.verdict().startswith("no ratio")


def test_the_schema_takes_the_paired_artefact_and_refuses_a_broken_one(tmp_path: Path) -> None:
    result = _paired(DIRECT_SLICES, GATEWAY_SLICES, errors={("gateway", 0): 1})
    written = json.loads(result.write_json(tmp_path / "paired.json").read_text())
    jsonschema.validate(written, load_schema())
    assert written["schema"] == "inferbook-benchmark-paired/1" and written["ratio"]["output_tokens_per_s"] == 0.96
    assert written["goal"] == {"ratio": 0.95, "met": True}
    assert [t["order"] for t in written["turns"]] == [["direct", "gateway"], ["gateway", "direct"]] * 2
    assert sum(len(t["gateway"]["requests"]) for t in written["turns"]) == written["paths"]["gateway"]["requests"] == 9
    record = result.record()
    for broken in ({**record, "api_key": "sk-1234"}, {k: v for k, v in record.items() if k != "paths"},
                   {**record, "turns": []}, {**record, "turns": [{**record["turns"][0], "order": ["direct", "x"]}]},
                   {**record, "paths": {**record["paths"], "gateway": {**record["paths"]["gateway"], "errors": -1}}},
                   {**record, "schema": "inferbook-benchmark/1"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, load_schema())


def test_the_paired_goal_is_a_figure_in_the_verification_never_a_failed_check(layout: Layout) -> None:
    from inferbook.layers.benchmarks import verify

    shape = Shape((1,), 8, 5, 10.0)
    direct, gateway = (_sweep([_made_level(1, 100, 6, 800, 10)], shape, target=t) for t in ("direct", "gateway"))
    saved = pd.DataFrame({"file": ["a", "b", "c", "d"]}).set_index("file")
    slow = _paired([[5] * 5, [5] * 5], [[5, 5], [5, 5]])  # the gateway at 40% of direct: the goal is not met
    bench = Bench(load_profile("local"), layout)
    table = verify(bench, direct, gateway, None, saved, paired=slow)
    info = table.loc["gateway throughput at the knee, paired (information)"]
    assert bool(info["pass"]) and "not met" in info["observed"]
    assert bool(table.loc["paired at concurrency 1: every request answered", "pass"])
    failed = verify(bench, direct, gateway, None, saved, paired=_paired([[5]], [[5]], errors={("gateway", 0): 1}))
    row = failed.loc["paired at concurrency 1: every request answered"]
    assert not row["pass"] and "gateway: 1 of 2 failed {'HTTP 500': 1}" in row["observed"]
    figures = report.figures(direct, gateway, None, SLO, slow)
    assert figures.loc["gateway: throughput ratio, paired at concurrency 1 (per-turn min / median / max)",
                       "value"] == "0.4 (0.4 / 0.4 / 0.4, 2 turns): goal 95% not met"


def test_the_paired_level_is_the_direct_knee_else_the_lowest_level() -> None:
    shape = Shape((1, 2, 4), 8, 5, 10.0)
    sweep = _sweep([_made_level(1, 100, 6, 800, 10), _made_level(2, 120, 8, 900, 18),
                    _made_level(4, 400, 25, 3000, 20)], shape)
    assert report.paired_level(sweep, SLO) == (2, "the knee of the direct sweep")
    none = _sweep([_made_level(1, 300, 6, 800, 10), _made_level(2, 400, 8, 900, 18)], Shape((1, 2), 8, 5, 10.0))
    assert report.paired_level(none, SLO)[0] == 1


def test_paired_at_parses_knee_or_a_level_and_refuses_the_rest() -> None:
    assert paired.parse_level("knee") is None and paired.parse_level("4") == 4
    for text in ("0", "x", "-2"):
        with pytest.raises(WorkloadError, match="give knee or a concurrency"):
            paired.parse_level(text)
    assert paired.slice_shape(Shape((1, 2), 8, 5, 12.0), 2, 60, 6) == Shape((2,), 8, 5, 10.0)
    with pytest.raises(WorkloadError, match="whole slices"):
        paired.slice_shape(Shape((1,), 8, 5, 1.0), 1, 60, 0)


def test_the_profiles_size_the_paired_comparison() -> None:
    local, cluster = load_profile("local").data["benchmarks"], load_profile("gke-l4").data["benchmarks"]
    assert local["paired"] == {"seconds_per_path": 60, "slices": 6}
    assert cluster["paired"]["seconds_per_path"] > local["paired"]["seconds_per_path"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--paired-at"], "Fix: add --target both"),
    (["--target", "both", "--paired-at", "zero"], "give knee or a concurrency"),
    (["--target", "both", "--paired-at", "--paired-slices", "0"], "whole slices"),
    (["--target", "both", "--paired-seconds", "30"], "Fix: add --paired-at")])
def test_inferbook_bench_refuses_a_paired_option_it_cannot_run(argv: list[str], message: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from inferbook import cli

    assert cli.main(["bench", "--profile", "local", *argv]) == 1
    assert message in capsys.readouterr().err


def test_inferbook_bench_pairs_direct_and_the_gateway_after_the_sweeps(
        tokenizer_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from inferbook import cli
    from inferbook.layers.benchmarks import targets

    with StubOpenAI(Behaviour(tokenizer=tokenizer_file, fail_every=7)) as stub:
        def connect(profile, layout, name, say=print):
            return targets.Target(name, stub.url, "stub-model", lambda: "stub-key", "the stub", "a test key")

        monkeypatch.setattr(targets, "connect", connect)
        monkeypatch.setattr(targets, "model_dir", lambda profile, cache_dir, say=print: tokenizer_file.parent)
        code = cli.main(["bench", "--profile", "local", "--target", "both", "--concurrency", "1,2", "--duration", "0.1",
                         "--input-tokens", "8", "--output-tokens", "2", "--paired-at", "2", "--paired-seconds", "0.4",
                         "--paired-slices", "2", "--json", str(tmp_path / "sweep.json")])
        answered = len(stub.requests)
    out = capsys.readouterr().out
    assert code == 0 and "paired at concurrency 2 (given):" in out and "the 95% goal is" in out
    record = json.loads((tmp_path / "sweep-paired.json").read_text())
    jsonschema.validate(record, load_schema())
    assert record["concurrency"] == 2 and record["workload"]["slice_s"] == 0.2 and len(record["turns"]) == 2
    assert [t["order"] for t in record["turns"]] == [["direct", "gateway"], ["gateway", "direct"]]
    swept = sum(lv["requests"] for name in ("direct", "gateway")
                for lv in json.loads((tmp_path / f"sweep-{name}.json").read_text())["levels"])
    paired_requests = sum(p["requests"] for p in record["paths"].values())
    assert answered == swept + paired_requests + 4  # and one warm-up per path per run, kept out of the figures
    for name, totals in record["paths"].items():
        slices = [t[name]["level"] for t in record["turns"]]
        assert totals["requests"] == sum(lv["requests"] for lv in slices) > 0
        assert totals["errors"] == sum(lv["errors"] for lv in slices)


# --------------------------------------------------------------------------- the book set (benchmarks.book)


def _bench(layout: Layout, book_set: str, said: list[str] | None = None) -> Bench:
    """A session of ``local`` with the given book set; what it says is kept in ``said``."""
    profile = load_profile("local", overrides={"benchmarks.book": book_set})
    return Bench(profile, layout, say=said.append if said is not None else print)


def _local_sweeps() -> tuple[Sweep, Sweep]:
    """Both sweeps of ``local``'s shape on known data: every request answered, exact, with a throughput."""
    shape = Shape((1, 2, 4), 64, 16, 12.0)
    levels = lambda: [_made_level(1, 1500, 130, 3500, 9), _made_level(2, 3000, 150, 5500, 14),  # noqa: E731
                      _made_level(4, 6000, 180, 8500, 16)]
    return _sweep(levels(), shape), _sweep(levels(), shape, target="gateway")


def test_the_quick_set_runs_the_sweeps_only_and_the_full_set_every_optional_step(layout: Layout) -> None:
    from inferbook.layers.benchmarks import book

    quick, full = _bench(layout, "quick", []), _bench(layout, "full", [])
    assert [full.runs(step) for step in book.OPTIONAL] == [True, True, True]
    assert [quick.runs(step) for step in book.OPTIONAL] == [False, False, False]
    assert full.not_measured == {}
    assert set(quick.not_measured) == {"guidellm", "paired", "proxy_alone"}


def test_a_skipped_step_says_once_what_why_and_the_command_then_points_back(layout: Layout) -> None:
    said: list[str] = []
    bench = _bench(layout, "quick", said)
    assert bench.runs("paired") is False and bench.runs("paired") is False
    first, later = said
    assert first.startswith("The paired comparison of direct and the gateway at the knee was skipped: ")
    assert "the quick set (benchmarks.book: quick), the two sweeps only" in first
    assert "`make bench PROFILE=local` runs it" in first and first.endswith(".") and ". " not in first  # one sentence
    assert later == "(the paired comparison of direct and the gateway at the knee: skipped, quick set; see above)"
    full: list[str] = []
    assert _bench(layout, "full", full).runs("paired") is True and full == []


def test_an_unknown_optional_step_is_refused_rather_than_skipped(layout: Layout) -> None:
    with pytest.raises(ValueError, match="'guidelm' is not an optional step .* use one of guidellm, paired, "
                                         "proxy_alone"):
        _bench(layout, "quick", []).runs("guidelm")


def test_the_plan_names_the_book_set_and_what_it_leaves_to_make_bench(layout: Layout) -> None:
    quick = _bench(layout, "quick").plan()
    row = quick.loc["book set (benchmarks.book)", "value"]
    assert row.startswith("quick: the two sweeps; left to `make bench PROFILE=local`: GuideLLM's sweep beside ours")
    assert "skipped (quick set)" in quick.loc["harnesses", "value"]
    full = _bench(layout, "full").plan()
    assert "left to" not in full.loc["book set (benchmarks.book)", "value"]
    assert "skipped" not in full.loc["harnesses", "value"]


def test_the_verification_lists_a_skipped_step_as_skipped_neither_failed_nor_passed(layout: Layout) -> None:
    from inferbook.layers.benchmarks import verify

    direct, gateway = _local_sweeps()
    saved = pd.DataFrame({"file": ["a", "b", "c", "d"]}).set_index("file")
    table = verify(_bench(layout, "quick", []), direct, gateway, None, saved, None, None)
    skipped = table[table["status"] == "skipped (quick set)"]
    assert list(skipped.index) == ["GuideLLM ran the same sweep",
                                   "paired at the knee: every request answered; the ratio against the goal",
                                   "the proxy alone: every call answered, LiteLLM's overhead header on each"]
    assert all(o == "skipped (quick set): `make bench PROFILE=local` measures it" for o in skipped["observed"])
    done = table.drop(skipped.index)
    assert len(done) == 7 and set(done["status"]) == {"passed"} and done["pass"].all()


def test_a_step_the_set_runs_that_gave_no_result_fails_the_verification(layout: Layout) -> None:
    from inferbook.layers.benchmarks import verify

    direct, gateway = _local_sweeps()
    saved = pd.DataFrame({"file": ["a", "b", "c", "d"]}).set_index("file")
    table = verify(_bench(layout, "full", []), direct, gateway, None, saved, None, {"errors": 0, "requests": 200,
                                                                                   "header_p50": 3.0,
                                                                                   "wall_added_p50": 4.0})
    row = table.loc["GuideLLM ran the same sweep"]
    assert not row["pass"] and row["status"] == "failed"
    assert row["observed"] == "not measured, though the full set runs GuideLLM's sweep beside ours"
    assert not table.loc["paired at the knee: every request answered; the ratio against the goal", "pass"]
    assert table.loc["the proxy alone: every call answered, LiteLLM's overhead header on each", "status"] == "passed"


def test_the_figures_say_which_steps_were_not_measured_and_why(layout: Layout) -> None:
    direct, gateway = _local_sweeps()
    bench = _bench(layout, "quick", [])
    figures = report.figures(direct, gateway, None, bench.slo, None, None, not_measured=bench.not_measured)["value"]
    label = "skipped (quick set): `make bench PROFILE=local` measures it"
    assert figures["GuideLLM vs ours: figures over 10% apart"] == label
    assert figures["gateway: throughput ratio, paired at the knee (per-turn min / median / max)"] == label
    assert figures["the proxy alone: LiteLLM's overhead header p50 / wall-clock added p50 (ms)"] == label
    assert figures["knee, direct (highest concurrency meeting the SLOs)"] == 2
    plain = report.figures(direct, gateway, None, bench.slo)["value"]  # no reason given: not measured, no figure
    assert plain["GuideLLM vs ours: figures over 10% apart"] == "not measured"
    measured = report.figures(direct, gateway, None, bench.slo, alone={"header_p50": 2.25, "wall_added_p50": 3.5})
    assert measured.loc["the proxy alone: LiteLLM's overhead header p50 / wall-clock added p50 (ms)",
                        "value"] == "2.2 / 3.5"


def test_saving_writes_no_file_for_a_sweep_that_was_not_measured(layout: Layout, tmp_path: Path) -> None:
    direct, gateway = _local_sweeps()
    saved = _bench(layout, "quick", []).save(tmp_path, direct, gateway, None, None)
    assert sorted(saved.index) == ["bench-inferbook-direct.csv", "bench-inferbook-direct.json",
                                   "bench-inferbook-gateway.csv", "bench-inferbook-gateway.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(saved.index)
    nothing = _bench(layout, "quick", []).save(tmp_path / "none", None)
    assert nothing.empty and list(nothing.columns) == ["harness", "target", "bytes"]


def test_the_curves_draw_no_line_for_a_sweep_that_was_not_measured() -> None:
    direct, gateway = _local_sweeps()
    figure = report.plot([direct, gateway, None], SLO)
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["inferbook, direct", "inferbook, gateway"]


def _run_chapter(run_dir: Path, overrides: dict[str, str]) -> str:
    """The chapter's own code cells, run with the sweeps on known data (the cells that reach servers for the
    targets and the sweeps are replaced), the runner's parameters injected; what they printed."""
    import contextlib
    import io

    import nbformat

    cells = {c["id"]: c.source for c in nbformat.read(ROOT / "notebooks" / "90-benchmarks.ipynb", as_version=4).cells
             if c.cell_type == "code"}
    namespace: dict[str, object] = {}
    exec(cells.pop("90-03"), namespace)  # the parameters, then what the runner injects
    namespace.update(profile_name="local", overrides=overrides, run_dir=str(run_dir), known_sweeps=_local_sweeps)
    cells.pop("90-09"), cells.pop("90-12")
    cells["90-11"] = "direct, gateway = known_sweeps()"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for source in cells.values():
            exec(source, namespace)
    return printed.getvalue()


def test_the_chapter_runs_its_quick_set_with_each_skipped_step_said_and_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On ``local``'s quick set each optional step's cells run without error and without measuring, say once
    that the step was skipped, and the verification passes with those steps listed as skipped; no artefact of a
    skipped step is written."""
    from inferbook.layers.benchmarks import overhead

    def measured(*args: object, **kwargs: object) -> None:
        raise AssertionError("the quick set measured a step it skips")

    monkeypatch.setattr(Bench, "guidellm", measured)
    monkeypatch.setattr(Bench, "paired", measured)
    monkeypatch.setattr(overhead, "proxy_alone", measured)
    run_dir = tmp_path / "runs" / "local"
    out = _run_chapter(run_dir, {})
    for name in ("GuideLLM's sweep beside ours", "The paired comparison of direct and the gateway at the knee",
                 "The proxy alone against a stub upstream"):
        assert out.count(f"{name} was skipped: ") == 1, name
    assert out.count("skipped, quick set; see above)") == 4  # compare; the turns and the verdict; the py-spy plot
    checks = json.loads((run_dir / "artifacts" / "benchmarks-checks.json").read_text())
    assert [c["check"] for c in checks if c["status"] == "skipped (quick set)"] == [
        "GuideLLM ran the same sweep", "paired at the knee: every request answered; the ratio against the goal",
        "the proxy alone: every call answered, LiteLLM's overhead header on each"]
    assert all(c["pass"] for c in checks)
    written = sorted(p.name for p in (run_dir / "artifacts").iterdir())
    assert written == sorted(["benchmarks-checks.json", "benchmarks-figures.json", "bench-inferbook-direct.csv",
                              "bench-inferbook-direct.json", "bench-inferbook-gateway.csv",
                              "bench-inferbook-gateway.json"])


def test_the_chapter_runs_every_step_of_the_full_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``-p benchmarks.book=full`` the same cells measure every optional step (known results stand in for
    GuideLLM, the paired comparison and the proxy alone) and nothing is said to be skipped."""
    from inferbook.layers.benchmarks import overhead

    direct, _ = _local_sweeps()
    guide = _sweep(direct.levels, direct.shape, harness="guidellm 0.8.1")
    again = _sweep(direct.levels, direct.shape, harness="guidellm 0.8.1 (recomputed)")
    row = {"requests": 200, "errors": 0, "header_p50": 2.0, "header_p90": 3.0, "wall_added_p50": 3.0,
           "wall_added_p90": 4.5, "gateway_cpu_ms_per_call": 6.0}
    monkeypatch.setattr(Bench, "guidellm", lambda self, name, out, shape=None: (guide, again))
    exact = _paired([[5, 5], [5, 5, 5]], [[5, 5], [5, 5]])  # every answer of the slices' 5 tokens
    monkeypatch.setattr(Bench, "paired", lambda self, level, *args, why="", **kwargs: exact)
    monkeypatch.setattr(overhead, "proxy_alone", lambda profile, layout: overhead.ProxyAlone(row, None, "no ptrace"))
    run_dir = tmp_path / "runs" / "local"
    out = _run_chapter(run_dir, {"benchmarks.book": "full"})
    assert "skipped" not in out and "the 95% goal is not met" in out and "no ptrace" in out
    checks = json.loads((run_dir / "artifacts" / "benchmarks-checks.json").read_text())
    assert {c["status"] for c in checks} == {"passed"} and len(checks) == 12
    figures = {f["figure"]: f["value"] for f in json.loads((run_dir / "artifacts" / "benchmarks-figures.json")
                                                             .read_text())}
    assert figures["GuideLLM vs ours: figures over 10% apart"] == "0 of 24"
    assert figures["the proxy alone: LiteLLM's overhead header p50 / wall-clock added p50 (ms)"] == "2.0 / 3.0"
    written = {p.name for p in (run_dir / "artifacts").iterdir()}
    assert {"bench-guidellm-direct.json", "bench-guidellm-recomputed-direct.csv", "bench-inferbook-paired.json",
            "gateway-overhead.json"} <= written


def test_make_bench_brings_the_stack_up_then_runs_the_full_set_through_the_cli_into_build_bench() -> None:
    """``make bench`` (dry run: nothing is started) runs every optional step through commands the CLI accepts."""
    import shlex
    import subprocess

    from inferbook.cli import _parser

    dry = subprocess.run(["make", "-n", "bench", "PROFILE=local"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout.replace("\\\n", " ")
    commands = [shlex.split(line) for line in dry.splitlines() if "bin/inferbook " in line]
    assert [argv[1] for argv in commands] == ["up", "bench", "overhead"]
    parser, _ = _parser()
    up, bench, alone = (parser.parse_args(argv[1:]) for argv in commands)
    assert up.profile == bench.profile == alone.profile == "local"
    assert (bench.target, bench.guidellm, bench.paired_at, bench.concurrency) == ("both", True, "knee", None)
    assert (bench.json, bench.csv) == ("_build/bench/local/sweep.json", "_build/bench/local/sweep.csv")
    assert (alone.json, alone.csv, alone.settings) == ("_build/bench/local/overhead.json",
                                                       "_build/bench/local/overhead.csv", "shipped")
    assert "mkdir -p _build/bench/local" in dry.splitlines()
