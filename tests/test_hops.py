"""The routing chapter's hops, measured with the benchmarks layer's load harness (no live stack needed here)."""

from __future__ import annotations

import json

import pytest

from inferbook import load_profile
from inferbook.errors import InferbookError
from inferbook.layers.benchmarks import harness, hops
from inferbook.layers.routing import REPLICAS
from inferbook.paths import Layout

from .conftest import ROOT


def calls(*walls: float, fingerprint: str | None = REPLICAS[0], status: int = 200) -> list[harness.Call]:
    return [harness.Call(w, status, fingerprint=fingerprint) for w in walls]


def test_each_hop_adds_its_p50_over_the_path_before_it_and_canary_answers_are_left_out() -> None:
    made = {"direct (replica a)": calls(10, 12, 14),
            "router": calls(20, 22, 24, fingerprint=REPLICAS[1]),
            "front + router": calls(25, 26, 27) + calls(500, fingerprint="replica-canary"),
            "gateway + front + router": calls(60, 61, 62) + calls(5, status=502)}
    table = hops.table(made)
    assert list(table.index) == list(made)
    assert table.loc["front + router", "calls"] == 4 and table.loc["front + router", "kept"] == 3
    assert table.loc["front + router", "p50 ms"] == 26.0, "the canary's slow answer is not a hop's cost"
    assert table.loc["gateway + front + router", "failed"] == 1 and table.loc["gateway + front + router", "kept"] == 3
    assert table["added by this hop, p50 ms"].tolist()[1:] == [10.0, 4.0, 35.0]
    assert table["added by this hop, p50 ms"].isna().tolist()[0]


def test_a_call_whose_server_does_not_name_its_replica_is_kept() -> None:
    assert hops.in_pool(harness.Call(5, 200, fingerprint=None))
    assert not hops.in_pool(harness.Call(5, 200, fingerprint="replica-canary"))
    assert not hops.in_pool(harness.Call(5, 503, fingerprint=REPLICAS[0]))


def test_the_harness_reads_the_replica_from_the_answers_fingerprint() -> None:
    assert harness._fingerprint(json.dumps({"system_fingerprint": "replica-b", "choices": []}).encode()) == "replica-b"
    assert harness._fingerprint(json.dumps({"system_fingerprint": None}).encode()) is None
    assert harness._fingerprint(b"not json") is None


def test_the_hops_refuse_a_profile_without_routing_and_say_how_to_turn_it_on(tmp_path) -> None:
    profile = load_profile("local", overrides=["features.routing=false"])
    with pytest.raises(InferbookError, match=r"features.routing=true"):
        hops.measure(profile, Layout(root=ROOT, build_dir=tmp_path))
