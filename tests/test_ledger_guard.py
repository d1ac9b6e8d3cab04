"""The ledger guard's decisions, without a proxy: fail-open covers budgets and spend, never authentication.

The guard file is loaded the way LiteLLM loads it (executed from its path, never registered in
sys.modules); outside LiteLLM's environment its stand-ins for ``CustomLogger`` and ``ProxyException``
apply. The live proof against a real LiteLLM is tests/test_gateway_ledger_outage.py (slow).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from datetime import datetime, timedelta, timezone
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from .conftest import ROOT

GUARD = ROOT / "src" / "inferbook" / "layers" / "llm_gateway" / "proxy_hooks" / "ledger_guard.py"
MASTER = "sk-master-of-this-proxy"
KNOWN, OTHER = "sk-validated-before", "sk-never-seen"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ledger_guard", GUARD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lg(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The guard module, with the proxy-wide guard it registers removed again afterwards."""
    monkeypatch.delitem(sys.modules, "inferbook_ledger_guard", raising=False)
    module = load()
    monkeypatch.delitem(sys.modules, "inferbook_ledger_guard")
    return module


class Ledger:
    """A ledger that is up or down; counts the probes the guard makes."""

    def __init__(self, up: bool = True) -> None:
        self.up, self.probes = up, 0

    async def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise ConnectionError("All connection attempts failed")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(lg: ModuleType, ledger: Ledger, fails_open: bool = True, clock: Clock | None = None) -> Any:
    return lg.LedgerGuard(fails_open=lambda: fails_open, probe=ledger.probe, master_key=lambda: MASTER,
                          clock=clock or Clock(), remember_seconds=3600)


def identity(lg: ModuleType, key: str, models: list[str] | None = None, **fields: Any) -> SimpleNamespace:
    """What LiteLLM hands a hook for a validated virtual key: its hash as token (and api_key)."""
    token = lg.digest(key)
    return SimpleNamespace(**{"token": token, "api_key": token, "user_id": "u1", "models": models or [],
                              "team_models": [], "expires": None, **fields})


def fallback() -> SimpleNamespace:
    """LiteLLM 1.108.7's identity for any sk- key whose lookup hit a ledger outage."""
    return SimpleNamespace(token="failed-to-connect-to-db", api_key=None, user_id="__db_unavailable_fallback__",
                           models=[], team_models=[], expires=None)


def call(headers: dict[str, str], model: str = "coder-chat") -> dict[str, Any]:
    return {"model": model, "secret_fields": {"raw_headers": headers}}


def refusal(coroutine: Any) -> tuple[str, str]:
    """(HTTP status, message) of what the guard raised."""
    with pytest.raises(Exception) as caught:
        asyncio.run(coroutine)
    return caught.value.code, caught.value.message


# --------------------------------------------------------------------------- loading


def test_the_proxy_loading_the_file_twice_gets_one_guard_and_one_memory(lg: ModuleType,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """custom_auth and callbacks each load the file anew: both must reach the same remembered keys."""
    first = load()
    second = load()
    monkeypatch.delitem(sys.modules, "inferbook_ledger_guard")
    assert first.guard is second.guard
    assert first.authenticate.__self__ is second.guard


def test_a_litellm_whose_custom_auth_cannot_defer_fails_at_start_naming_the_fix(lg: ModuleType) -> None:
    """Without litellm-enterprise, LiteLLM would read the guard's None as an identity and refuse everyone."""
    with pytest.raises(ImportError, match="needs litellm-enterprise"):
        lg.require_deferring_custom_auth(lambda name: None)
    lg.require_deferring_custom_auth(lambda name: object())


# --------------------------------------------------------------------------- custom auth, every route


def test_fail_open_refuses_a_key_it_never_validated_while_the_ledger_is_down(lg: ModuleType) -> None:
    ledger = Ledger(up=False)
    g = guard(lg, ledger)
    code, message = refusal(g.authenticate(None, OTHER))
    assert code == "401" and "ledger is unreachable" in message


def test_fail_open_lets_a_validated_key_through_to_litellm_without_asking_the_ledger(lg: ModuleType) -> None:
    ledger = Ledger(up=False)
    g = guard(lg, ledger)
    asyncio.run(g.async_pre_call_hook(identity(lg, KNOWN), None, call({}), "completion"))
    assert asyncio.run(g.authenticate(None, KNOWN)) is None
    assert ledger.probes == 0


def test_with_the_ledger_up_litellm_decides_every_key(lg: ModuleType) -> None:
    g = guard(lg, Ledger(up=True))
    assert asyncio.run(g.authenticate(None, OTHER)) is None
    assert asyncio.run(guard(lg, Ledger(up=True), fails_open=False).authenticate(None, OTHER)) is None


def test_fail_closed_refuses_every_virtual_key_while_the_ledger_is_down_and_says_why(lg: ModuleType) -> None:
    g = guard(lg, Ledger(up=False), fails_open=False)
    asyncio.run(g.async_pre_call_hook(identity(lg, KNOWN), None, call({}), "completion"))
    for key in (KNOWN, OTHER):
        code, message = refusal(g.authenticate(None, key))
        assert code == "503" and "fails closed" in message and "ledger is unreachable" in message


def test_the_master_key_and_malformed_keys_are_left_to_litellm(lg: ModuleType) -> None:
    ledger = Ledger(up=False)
    g = guard(lg, ledger, fails_open=False)
    for key in (MASTER, "not-an-sk-key", "", None):
        assert asyncio.run(g.authenticate(None, key)) is None
    assert ledger.probes == 0


def test_a_failed_probe_stands_for_a_moment_and_a_good_one_is_never_reused(lg: ModuleType) -> None:
    ledger, clock = Ledger(up=False), Clock()
    g = guard(lg, ledger, fails_open=False, clock=clock)
    for _ in range(3):
        refusal(g.authenticate(None, OTHER))
    assert ledger.probes == 1
    clock.now += lg.PROBE_VALID_SECONDS
    ledger.up = True
    for _ in range(2):
        assert asyncio.run(g.authenticate(None, OTHER)) is None
    assert ledger.probes == 3  # the ledger may go away at any moment: each request asks again
    ledger.up = False
    refusal(g.authenticate(None, OTHER))


def test_a_probe_that_does_not_answer_in_time_counts_as_a_ledger_down(lg: ModuleType,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def hangs() -> None:
        await asyncio.sleep(5)

    monkeypatch.setattr(lg, "PROBE_TIMEOUT_SECONDS", 0.01)
    g = lg.LedgerGuard(fails_open=lambda: False, probe=hangs, master_key=lambda: MASTER)
    assert refusal(g.authenticate(None, OTHER))[0] == "503"


# --------------------------------------------------------------------------- pre-call hook, model calls


def test_the_fallback_identity_is_served_only_for_a_remembered_key(lg: ModuleType) -> None:
    g = guard(lg, Ledger(up=False))
    asyncio.run(g.async_pre_call_hook(identity(lg, KNOWN, ["coder-chat"]), None, call({}), "completion"))
    served = asyncio.run(g.async_pre_call_hook(fallback(), None, call({"Authorization": f"Bearer {KNOWN}"}),
                                               "completion"))
    assert served is None
    code, message = refusal(g.async_pre_call_hook(fallback(), None, call({"Authorization": f"Bearer {OTHER}"}),
                                                  "completion"))
    assert code == "401" and "not validated it recently" in message
    assert refusal(g.async_pre_call_hook(fallback(), None, call({}), "completion"))[0] == "401"


def test_the_fallback_identity_keeps_a_remembered_key_to_its_models(lg: ModuleType) -> None:
    """LiteLLM's fallback identity has no model list; the guard applies the key's own."""
    g = guard(lg, Ledger(up=False))
    asyncio.run(g.async_pre_call_hook(identity(lg, KNOWN, ["coder-chat"]), None, call({}), "completion"))
    code, message = refusal(g.async_pre_call_hook(fallback(), None,
                                                  call({"authorization": f"Bearer {KNOWN}"}, "coder-fim"),
                                                  "completion"))
    assert code == "403" and "coder-fim" in message


def test_a_key_without_a_model_list_or_with_a_wildcard_reaches_every_model(lg: ModuleType) -> None:
    g = guard(lg, Ledger(up=False))
    for key, models in ((KNOWN, []), (OTHER, ["all-proxy-models"])):
        asyncio.run(g.async_pre_call_hook(identity(lg, key, models), None, call({}), "completion"))
        assert asyncio.run(g.async_pre_call_hook(fallback(), None, call({"Authorization": f"Bearer {key}"},
                                                                        "coder-fim"), "completion")) is None


def test_the_key_litellm_reads_first_is_the_one_checked(lg: ModuleType) -> None:
    """x-litellm-api-key supersedes Authorization in LiteLLM; a remembered key in the other header does not count."""
    g = guard(lg, Ledger(up=False))
    asyncio.run(g.async_pre_call_hook(identity(lg, KNOWN), None, call({}), "completion"))
    headers = {"X-LiteLLM-API-Key": OTHER, "Authorization": f"Bearer {KNOWN}"}
    assert refusal(g.async_pre_call_hook(fallback(), None, call(headers), "completion"))[0] == "401"
    assert lg.presented_key(call({"x-api-key": KNOWN})) == KNOWN


def test_an_expired_key_is_refused_and_forgotten(lg: ModuleType) -> None:
    g = guard(lg, Ledger(up=False))
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    asyncio.run(g.async_pre_call_hook(identity(lg, KNOWN, expires=past.isoformat()), None, call({}), "completion"))
    bearer = call({"Authorization": f"Bearer {KNOWN}"})
    assert refusal(g.async_pre_call_hook(fallback(), None, bearer, "completion"))[0] == "401"
    assert g.known(lg.digest(KNOWN)) is None


def test_neither_the_master_key_nor_the_fallback_identity_is_remembered(lg: ModuleType) -> None:
    g = guard(lg, Ledger(up=False))
    alias = "litellm_proxy_master_key"  # what LiteLLM puts in an identity in place of the master key
    master = SimpleNamespace(token=alias, api_key=alias, user_id="admin", models=[], team_models=[], expires=None)
    asyncio.run(g.async_pre_call_hook(master, None, call({}), "completion"))
    g.remember(fallback())
    assert g.known(alias) is None and g.known("failed-to-connect-to-db") is None


def test_a_key_is_remembered_for_its_window_after_its_last_validation(lg: ModuleType) -> None:
    clock = Clock()
    g = guard(lg, Ledger(up=False), clock=clock)
    asyncio.run(g.async_pre_call_hook(identity(lg, KNOWN), None, call({}), "completion"))
    clock.now += 3000
    asyncio.run(g.async_pre_call_hook(identity(lg, KNOWN), None, call({}), "completion"))  # used again: renewed
    clock.now += 3000
    assert asyncio.run(g.authenticate(None, KNOWN)) is None
    clock.now += 601
    assert refusal(g.authenticate(None, KNOWN))[0] == "401"


# --------------------------------------------------------------------------- failure hook


def test_a_key_litellm_refuses_as_unknown_or_blocked_is_forgotten_and_a_spent_one_is_not(lg: ModuleType) -> None:
    g = guard(lg, Ledger(up=False))
    refusals = {
        "revoked": lg.ProxyException("Authentication Error, Invalid API key provided.", "token_not_found_in_db",
                                     "key", 401),
        "blocked": Exception("Key is blocked. Update via `/key/unblock` if you're an admin."),
        "spent": lg.ProxyException("Budget has been exceeded!", "budget_exceeded", None, 400),
    }
    for name, error in refusals.items():
        key = f"sk-{name}"
        asyncio.run(g.async_pre_call_hook(identity(lg, key), None, call({}), "completion"))
        # LiteLLM hands the failure hook the key's hash as api_key when the lookup found nothing.
        who = SimpleNamespace(token=None, api_key=lg.digest(key), user_id=None) if name == "revoked" \
            else identity(lg, key)
        asyncio.run(g.async_post_call_failure_hook({}, error, who))
    assert {name for name in refusals if g.known(lg.digest(f"sk-{name}"))} == {"spent"}
