"""The gateway's promises, checked one by one: each outcome a row (expected, observed, pass).

A tenant holds a virtual key and the gateway's URL. The gateway promises that
a key reaches only its models, that an unknown or revoked key is refused, that
a spent budget stops calls before they reach the model, that a rate limit
answers 429, and that spend is booked from the usage the model reported. The
demo keys are made fresh for each run; their values live in memory only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import openai
import pandas as pd

from ... import smoke, targets, waiting
from ...errors import InferbookError
from ...profile import Profile
from ...say import Say
from ..routing import chat_bases
from .admin import Admin


@dataclass
class Tenants:
    """The demo team and its keys. ``keys`` maps alias to key: never print it, show :meth:`table`."""

    team: str
    team_id: str
    settings: dict[str, dict[str, Any]]
    keys: dict[str, str] = field(repr=False)
    label: str = ""  # keeps one chapter's keys apart from another's: demo-ide vs demo-session-ide

    def alias(self, name: str) -> str:
        return "-".join(part for part in (self.team, self.label, name) if part)

    def table(self) -> pd.DataFrame:
        rows = [{"key": self.alias(name), "models": ", ".join(s["models"]), "max_budget_usd": s.get("max_budget_usd"),
                 "budget_duration": s.get("budget_duration"), "rpm": s.get("rpm"), "tpm": s.get("tpm")}
                for name, s in self.settings.items()]
        return pd.DataFrame(rows).set_index("key").astype(object).fillna("-")  # an unset limit reads "-", not None


def ledger(admin: Admin, tenants: Tenants) -> pd.DataFrame:
    """Spend and limits of the demo keys, from the gateway's ledger (never the keys)."""
    table = admin.table()
    return table.loc[[a for a in (tenants.alias(n) for n in tenants.settings) if a in table.index]]


def provision_tenants(admin: Admin, profile: Profile, only: tuple[str, ...] | None = None,
                      label: str = "", keys: dict[str, dict[str, Any]] | None = None) -> Tenants:
    """The profile's demo team and keys (or the ``only`` ones), made afresh: a key can be read only when created.

    ``keys`` (alias -> settings, as in the profile's ``tenants.keys``) replaces the profile's keys, for a
    chapter whose keys must have given limits whatever the profile says (the observability chapter's load).
    """
    tenants = profile.data["tenants"]
    wanted = {n: s for n, s in (tenants["keys"] if keys is None else keys).items() if only is None or n in only}
    missing = sorted(set(only or ()) - set(wanted))
    if missing:
        raise InferbookError(f"profile {profile.name} has no demo key(s) {', '.join(missing)} under tenants.keys; "
                             f"it has: {', '.join(tenants['keys']) or 'none'}")
    # the MCP servers a key may use exist only with features.mcp (LiteLLM refuses a grant of an unknown server)
    mcp = "mcp" in profile.features
    servers = sorted({s for k in tenants["keys"].values() for s in k.get("mcp_servers", [])}) if mcp else None
    made = Tenants(tenants["team"], admin.team(tenants["team"], servers), wanted, {}, label)
    existing = {row["alias"] for row in admin.keys()}
    for name, s in wanted.items():
        alias = made.alias(name)
        if alias in existing:
            admin.revoke(alias)
        made.keys[name] = admin.create_key(alias, list(s["models"]), s.get("max_budget_usd"),
                                           s.get("budget_duration"), s.get("rpm"), s.get("tpm"), made.team_id,
                                           mcp_servers=s.get("mcp_servers") if mcp else None)
    return made


def chat_backends(profile: Profile, vllm_base: str) -> list[str]:
    """Every vLLM behind the gateway's coder-chat: on the local stack with routing on, each replica of the pool and
    the canary (a request lands on any of them); otherwise vLLM itself (a cluster's Service spreads over its pods)."""
    if targets.kind_of(profile).local_processes and "routing" in profile.features:
        return chat_bases(profile)
    return [vllm_base]


def vllm_requests(serving_bases: str | Sequence[str]) -> float:
    """Requests vLLM has finished (``vllm:request_success_total``, all reasons) over every replica that serves the
    model: proof a call reached the model, whichever replica the router chose."""
    return smoke.metric_total(serving_bases, "vllm:request_success_total")


@dataclass
class Row:
    check: str
    expected: str
    observed: str
    passed: bool


def call_status(call: Callable[[], Any]) -> tuple[int, str]:
    """Run an OpenAI call; (HTTP status, short message)."""
    try:
        call()
        return 200, "ok"
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        message = str(body.get("message") or body.get("error") or exc.message)
        return exc.status_code, message[:160]


def check_enforcement(url: str, admin: Admin, tenants: Tenants, serving_bases: str | Sequence[str],
                      prices: tuple[float, float], say: Say = print) -> pd.DataFrame:
    """Every promise of the gateway as a row; ``prices`` are (input, output) USD per token of coder-chat;
    ``serving_bases`` every vLLM that answers coder-chat (:func:`chat_backends`)."""
    rows: list[Row] = []
    keys = tenants.keys

    def chat(key: str, model: str = "coder-chat", max_tokens: int = 8) -> Any:
        return smoke.client(url, key).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Name one sorting algorithm."}],
            max_tokens=max_tokens, temperature=0)

    # 1. an allowed call succeeds, and its usage is what spend must book
    spent_usage = []
    response = chat(keys["ide"])
    spent_usage.append(response.usage)
    rows.append(Row("allowed call (ide key, coder-chat)", "200 with text",
                    f"200, {response.usage.completion_tokens} tokens",
                    bool(response.choices[0].message.content)))

    # 2. a model that is not on the key
    code, message = call_status(lambda: chat(keys["agent"], model="coder-fim"))
    rows.append(Row("model not on the key (agent key, coder-fim)", "403", f"{code}: {message}", code == 403))

    # 3. a key the gateway never issued
    code, message = call_status(lambda: chat("not-a-key-this-gateway-issued"))
    rows.append(Row("invalid key", "401", f"{code}: {message}", code == 401))

    # 4. a revoked key
    revoked_alias = tenants.alias("revoked")
    if revoked_alias in {r["alias"] for r in admin.keys()}:
        admin.revoke(revoked_alias)
    revoked = admin.create_key(revoked_alias, ["coder-chat"], team_id=tenants.team_id)
    before = call_status(lambda: chat(revoked))[0]
    admin.revoke(revoked_alias)
    code, message = call_status(lambda: chat(revoked))
    rows.append(Row("revoked key", "200 before, 401 after", f"{before} before, {code} after: {message}",
                    before == 200 and code == 401))

    # 5. the tiny budget: one call spends it; the next is refused before it reaches vLLM
    first = call_status(lambda: chat(keys["tiny"], max_tokens=64))[0]
    served_before = vllm_requests(serving_bases)
    code, message = call_status(lambda: chat(keys["tiny"], max_tokens=64))
    served_after = vllm_requests(serving_bases)
    rows.append(Row("tiny budget exhausted", "refused (budget exceeded), vLLM's request counter unchanged",
                    f"first call {first}; then {code}: {message}; "
                    f"vLLM requests {served_before:.0f} -> {served_after:.0f}",
                    first == 200 and code >= 400 and "budget" in message.lower() and served_after == served_before))

    # 6. the rpm limit
    limit = int(tenants.settings["limited"]["rpm"])
    codes = [call_status(lambda: chat(keys["limited"], max_tokens=1))[0] for _ in range(limit + 1)]
    rows.append(Row(f"rpm limit ({limit}/min)", f"{limit} x 200, then 429", ", ".join(map(str, codes)),
                    codes[:limit] == [200] * limit and codes[-1] == 429))

    # 7. spend is booked from the usage the model reported (the ledger is written in batches: wait for it)
    expected = sum(u.prompt_tokens * prices[0] + u.completion_tokens * prices[1] for u in spent_usage)
    booked = wait_for_spend(admin, tenants.alias("ide"), expected, say)
    rows.append(Row("spend matches usage (ide key)", f"{expected:.8f} USD", f"{booked:.8f} USD",
                    abs(booked - expected) <= max(1e-9, 0.01 * expected)))
    return pd.DataFrame([r.__dict__ for r in rows]).rename(columns={"passed": "pass"}).set_index("check")


def wait_for_spend(admin: Admin, alias: str, expected: float, say: Say, timeout: float = 90) -> float:
    """The key's booked spend, once it reaches ``expected`` or ``timeout`` passes (LiteLLM writes spend in batches)."""
    booked = 0.0

    def reached() -> str | None:
        nonlocal booked
        booked = next((row["spend_usd"] or 0.0 for row in admin.keys() if row["alias"] == alias), 0.0)
        return None if booked >= expected * 0.99 else f"{booked:.8f} of {expected:.8f} USD booked"

    with contextlib.suppress(waiting.WaitTimedOut):  # short of it at the timeout: the caller's check shows by how much
        # the ledger has no change notification to wait on; poll at its batch cadence
        waiting.wait_for(reached, timeout=timeout, what="the spend ledger", interval=5,
                         say=lambda line: say(f"llm-gateway: {line}"))
    return booked


def prices(config: dict[str, Any], alias: str = "coder-chat") -> tuple[float, float]:
    """(input, output) USD per token of an alias, from the rendered proxy config."""
    for entry in config.get("model_list", []):
        if entry.get("model_name") == alias:
            info = {**entry.get("model_info", {}), **entry.get("litellm_params", {})}
            return float(info["input_cost_per_token"]), float(info["output_cost_per_token"])
    raise KeyError(f"no alias {alias} in the gateway config")
