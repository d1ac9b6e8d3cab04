"""Faults the gateway must survive, made on purpose: the spend ledger goes away (ADR-0029 SR3).

What fails open on the cost and dev tiers is budgets and spend, never authentication: while the
ledger is unreachable, a key the gateway has validated keeps working (within its models), and a key it
has never validated is refused with 401. On prod every virtual-key request is refused with 503 saying
why. LiteLLM alone does neither (any ``sk-`` key is served on a fail-open tier; a key still in its
60-second cache is served on a fail-closed one); inferbook's ledger guard does
(``proxy_hooks/ledger_guard.py``). :func:`check_ledger_outage` proves it on a running local gateway.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Iterator

import pandas as pd

from ... import targets, waiting
from ...errors import InferbookError
from ...jsonapi import call_json
from ...say import Say
from .admin import Admin
from .enforcement import Row
from .local import LocalGateway
from .manifests import CHAT_ALIAS, FIM_ALIAS

#: The demo keys of the outage checks, made afresh for each run and revoked after it.
KNOWN_ALIAS, UNSEEN_ALIAS = "ledger-outage-known", "ledger-outage-unseen"
#: How long LiteLLM keeps a validated key in its own cache (``user_api_key_cache_ttl``, unset: 60 s).
KEY_CACHE_SECONDS = 60


class FaultError(InferbookError):
    """A fault could not be made, or the gateway did not recover from it."""


def ledger_answers(base: str, master_key: str) -> bool:
    """The proxy reads its ledger again: readiness reports ``db: connected`` and a key listing answers.

    Readiness alone is not enough: LiteLLM restarts its query engine after repeated failures, and a
    restart that began during the outage can still be under way when the health probe first succeeds.
    """
    try:
        _, ready = call_json("GET", f"{base}/health/readiness", timeout=10)
        if not (isinstance(ready, dict) and ready.get("db") == "connected"):
            return False
        status, _ = call_json("GET", f"{base}/key/list?size=1", master_key, timeout=10)
    except (OSError, ValueError):
        return False
    return status == 200


@contextlib.contextmanager
def ledger_down(gateway: LocalGateway, say: Say = print, timeout: float = 180) -> Iterator[None]:
    """The local gateway's Postgres stopped for the block; started again after it, and the proxy reconnected.

    The proxy keeps running throughout, as it would through a database failover on a cluster. The
    ledger is restored even when the block fails, and the block's end waits until the proxy reports
    its database connected again, so the next step finds a whole gateway.
    """
    if not targets.kind_of(gateway.profile).local_processes:
        raise FaultError(f"ledger_down stops the local Postgres; profile {gateway.profile.name} targets a cluster. "
                         "Fix: on a cluster, hibernate the CloudNativePG Cluster litellm-db instead")
    master_key = gateway.master_key()
    if not gateway.postgres.running() or not ledger_answers(gateway.base, master_key):
        raise FaultError(f"the gateway at {gateway.url} has no connected ledger to take away. "
                         f"Fix: inferbook up --profile {gateway.profile.name} --until llm-gateway")
    gateway.postgres.stop()
    say("llm-gateway: the ledger (Postgres) is stopped; the proxy keeps running")
    try:
        yield
    finally:
        gateway.postgres.start()
        # LiteLLM reconnects on its own schedule; its readiness answer is the only signal
        took = waiting.wait_for(
            waiting.until(lambda: ledger_answers(gateway.base, master_key), "its readiness names no connected ledger"),
            timeout=timeout, what="the proxy to reconnect to its ledger", say=lambda line: say(f"llm-gateway: {line}"),
            error=FaultError,
            message=lambda _: f"the proxy at {gateway.url} did not reconnect to its ledger within {timeout:.0f} s. "
                              f"Fix: read {gateway.process.log_path}, or restart it with inferbook up")
        say(f"llm-gateway: the ledger is back, the proxy reconnected after {took:.0f} s")


def chat_status(base: str, key: str | None, model: str = CHAT_ALIAS) -> tuple[int, str]:
    """(HTTP status, the gateway's message) of a one-token chat call; no key sends no Authorization header."""
    code, body = call_json("POST", f"{base}/v1/chat/completions", key,
                           {"model": model, "messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 1},
                           timeout=120)
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error or (body or {}).get("detail")
    return code, "ok" if code == 200 else str(message)[:200]


def check_ledger_outage(gateway: LocalGateway, say: Say = print) -> pd.DataFrame:
    """What a tenant sees while the ledger is down, one row per kind of key (expected, observed, pass).

    Two keys are made afresh: one used before the outage (the gateway has validated it), one never used
    (the gateway has not). The expectations follow the profile's tier (``budget_mode``). On a fail-open
    tier the validated key is tried again once LiteLLM's key cache has let it go: from then on LiteLLM
    hands it the outage's fallback identity, and only the guard keeps it to its models.
    """
    admin = Admin(gateway.base, gateway.master_key())
    existing = {row["alias"] for row in admin.keys()}
    for alias in (KNOWN_ALIAS, UNSEEN_ALIAS):
        if alias in existing:
            admin.revoke(alias)
    known = admin.create_key(KNOWN_ALIAS, [CHAT_ALIAS])
    unseen = admin.create_key(UNSEEN_ALIAS, [CHAT_ALIAS])
    made_up = f"sk-never-issued-{secrets.token_hex(12)}"
    before = chat_status(gateway.base, known)
    if before[0] != 200:
        raise FaultError(f"the gateway refused a fresh key before any fault ({before[0]}: {before[1]}). "
                         "Fix: run the llm-gateway chapter's checks first")
    fail_open = gateway.profile.budget_mode == "fail-open"
    refused = 401 if fail_open else 503
    rows: list[Row] = []

    def row(check: str, expected: int, observed: tuple[int, str], says: str = "") -> None:
        passed = observed[0] == expected and says.lower() in observed[1].lower()
        wanted = f"{expected}" + (f", says '{says}'" if says else "")
        rows.append(Row(check, wanted, f"{observed[0]}: {observed[1]}", passed))

    def validated_key(when: str) -> None:
        row(f"key validated before the outage{when}", 200 if fail_open else 503, chat_status(gateway.base, known),
            "" if fail_open else "ledger")
        row(f"the same key, a model not on it ({FIM_ALIAS}){when}", 403 if fail_open else 503,
            chat_status(gateway.base, known, FIM_ALIAS), "" if fail_open else "ledger")

    say(f"llm-gateway: ledger outage on a {gateway.profile.budget_mode} gateway (tier {gateway.profile.tier})")
    with ledger_down(gateway, say):
        validated_key("")
        row("valid key the gateway never validated", refused, chat_status(gateway.base, unseen), "ledger")
        row("made-up sk- key", refused, chat_status(gateway.base, made_up), "ledger")
        row("no key", 401, chat_status(gateway.base, None))
        if fail_open:
            say(f"llm-gateway: waiting {KEY_CACHE_SECONDS} s for LiteLLM's key cache to let the validated key go")
            time.sleep(KEY_CACHE_SECONDS + 1)  # the cache's entry expires on LiteLLM's clock; nothing signals it
            validated_key(f", after LiteLLM's {KEY_CACHE_SECONDS} s key cache")
    row("the never-validated key, ledger back", 200, chat_status(gateway.base, unseen))
    for alias in (KNOWN_ALIAS, UNSEEN_ALIAS):
        admin.revoke(alias)
    return pd.DataFrame([r.__dict__ for r in rows]).rename(columns={"passed": "pass"}).set_index("check")
