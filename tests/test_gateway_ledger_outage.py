"""A real LiteLLM with its ledger stopped: fail-open covers budgets and spend, never authentication (slow).

The stack is this module's own (vLLM, LiteLLM, Postgres on ports of its own), so stopping its Postgres
touches no other gateway; the proxy is restarted once with the prod tier's settings. What each kind of
key gets while the ledger is down is :func:`inferbook.layers.llm_gateway.faults.check_ledger_outage`'s
table, the one the resilience chapter shows.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

import pandas as pd
import pytest

from inferbook import load_profile
from inferbook.layers.llm_gateway import LocalGateway, faults
from inferbook.layers.serving import LocalServing
from inferbook.paths import Layout

from .conftest import ROOT

pytestmark = pytest.mark.slow
# This module's own stack, on its own ports; without the routing layer, so its gateway talks to its own vLLM; and
# without the guardrails, whose Presidio it does not start (on prod they would refuse every call before the ledger
# is asked: tests/test_guardrails.py proves that fault).
PORTS = {"local.ports.serving": 8102, "local.ports.coder": 8103, "local.ports.llm-gateway": 4102,
         "local.ports.postgres": 5534, "local.ports.prometheus": 9192, "features.routing": False,
         "features.guardrails": False}
PROD = {"tier": "prod", "serving.replicas": 2, "database.instances": 3, "database.redis": True}


def say(message: str) -> None:
    print(message, file=sys.stderr)


def gateway(layout: Layout, **overrides: Any) -> LocalGateway:
    return LocalGateway(load_profile("local", {**PORTS, **overrides}, layout=layout), layout, say=say)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    """vLLM of this module, started here and stopped at the end with the gateway and its ledger."""
    layout = Layout(root=ROOT, build_dir=tmp_path_factory.mktemp("ledger-outage"))
    serving = LocalServing(load_profile("local", PORTS, layout=layout), layout, say=say)
    serving.start()
    try:
        yield layout
    finally:
        gateway(layout).stop()
        serving.stop()


def outage(gw: LocalGateway) -> pd.DataFrame:
    gw.start()
    rows = faults.check_ledger_outage(gw, say=say)
    say(rows.to_string())
    return rows


def test_on_a_fail_open_tier_only_keys_the_gateway_validated_are_served_while_the_ledger_is_down(stack) -> None:
    rows = outage(gateway(stack))
    assert rows["pass"].all(), rows.to_string()
    observed = rows["observed"].str[:3]
    assert observed["made-up sk- key"] == "401" and observed["valid key the gateway never validated"] == "401"
    assert observed["key validated before the outage, after LiteLLM's 60 s key cache"] == "200"
    assert observed["the same key, a model not on it (coder-fim), after LiteLLM's 60 s key cache"] == "403"


def test_on_the_prod_tier_every_virtual_key_is_refused_while_the_ledger_is_down_and_told_why(stack) -> None:
    rows = outage(gateway(stack, **PROD))
    assert rows["pass"].all(), rows.to_string()
    during = rows.drop(index=["no key", "the never-validated key, ledger back"])
    assert set(during["observed"].str[:3]) == {"503"}
    assert during["observed"].str.contains("fails closed").all()
