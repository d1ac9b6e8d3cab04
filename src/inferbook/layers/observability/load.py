"""A short load through the gateway, as a tenant sends it, so the metrics have something to show.

Two keys of the chapter's own (whatever the profile's demo keys are): ``load``, with a budget and an rpm
limit, sends chats of at most the profile's ``benchmarks.output_tokens`` (:func:`answer_tokens`: the shape the
profile's objectives hold for, so one end-to-end objective judges this load and the benchmark's sweep)
one after another for a bounded time, streamed as an IDE's chat panel asks and plain as many agents do
(LiteLLM measures its own overhead on plain requests only); ``limited`` (2 requests a minute) sends one request past
its limit, so the gateway's refusals and rate-limit metrics have a series too. Every call is a row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from ... import smoke
from ...profile import Profile
from ...say import Say
from ..llm_gateway.admin import Admin
from ..llm_gateway.enforcement import Tenants, call_status, provision_tenants
from ..llm_gateway.manifests import serving_alias


def keys(profile: Profile) -> dict[str, dict[str, Any]]:
    """The load's keys, a budget and a limit each (so the spend, budget and rate-limit panels have a series), on
    vLLM's model by its served name: the dashboards read vLLM's histograms, whatever model the IDE aliases serve."""
    alias = serving_alias(profile)
    return {"load": {"models": [alias], "max_budget_usd": 1, "budget_duration": "30d", "rpm": 60},
            "limited": {"models": [alias], "rpm": 2}}
PROMPTS = (
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain in three sentences what a KV cache is.",
    "Write a unit test for a function that reverses a string.",
    "What does HTTP status 429 mean? Answer in two sentences.",
)


def issue_keys(admin: Admin, profile: Profile) -> Tenants:
    """The operator's step: the load's keys, ``<team>-observability-load`` and ``<team>-observability-limited``."""
    return provision_tenants(admin, profile, label="observability", keys=keys(profile))


@dataclass
class Load:
    """What the load sent: its calls, the limited key's statuses, and when it ran (unix seconds)."""

    calls: list[smoke.Call]
    limited: list[int]
    started: float
    ended: float
    tenants: Tenants = field(repr=False)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def table(self) -> pd.DataFrame:
        """One row per call: the load's chats, then the limited key's calls with their HTTP status."""

        def shown(value: Any) -> Any:
            return "-" if value is None else value

        rows = [{"key": self.tenants.alias("load"), "call": c.call, "status": 200, "answered": c.ok,
                 "latency_s": c.latency_s, "ttft_s": shown(c.ttft_s), "tokens_out": shown(c.tokens_out),
                 "tokens_per_s": shown(c.tokens_per_s)} for c in self.calls]
        rows += [{"key": self.tenants.alias("limited"), "call": "chat (1 token)", "status": code,
                  "answered": code == 200, "latency_s": "-",
                  "ttft_s": "-", "tokens_out": "-", "tokens_per_s": "-"} for code in self.limited]
        return pd.DataFrame(rows)


#: Fewest requests, even past the time budget: two plain ones a scrape apart, so a rate of LiteLLM's
#: per-key overhead histogram (a series born with the key's first request) has an increase to show.
MIN_REQUESTS = 4


def answer_tokens(profile: Profile) -> int:
    """The load's ``max_tokens``: the benchmark shape's output length, which the profile's ``slo`` holds for.

    The end-to-end objective means something only for a stated answer length; asking for the benchmark's lets
    the one objective judge both chapters' traffic. The chats' prompts are about 45 tokens with a chat template
    (SmolLM2's and Qwen2.5's), no longer than a shipped profile's benchmark prompt (64 or 256), so their first
    token comes no later.
    """
    return int(profile.data["benchmarks"]["output_tokens"])


def drive(url: str, tenants: Tenants, *, max_tokens: int, requests: int = 8, budget_s: float = 45,
          scraped: Callable[[], Any] | None = None, say: Say = print) -> Load:
    """``requests`` chats of at most ``max_tokens`` (:func:`answer_tokens`: no default, so no caller sends an
    answer length the objectives were not set for) on the ``load`` key, streamed and plain in turn, stopping
    early once ``budget_s`` has passed (after :data:`MIN_REQUESTS`), then the ``limited`` key's calls until one
    past its limit.

    ``scraped`` waits for Prometheus' next scrape of the gateway; it is called after the first plain chat. A
    series LiteLLM creates with the load (its overhead histogram, recorded for plain calls, per alias) needs a
    sample before the load's other plain calls for a rate to show them: on a fast CPU the whole load can
    otherwise fit between two scrapes."""
    client = smoke.client(url, tenants.keys["load"])
    alias = tenants.settings["load"]["models"][0]  # the model the key was issued for
    started = time.time()
    calls: list[smoke.Call] = []
    for i in range(requests):
        if i >= MIN_REQUESTS and time.time() - started > budget_s:
            say(f"observability: load stopped after {i} requests ({budget_s:.0f} s budget)")
            break
        send = smoke.chat_stream if i % 2 == 0 else smoke.chat
        calls.append(send(client, alias, PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens))
        if i == 1 and scraped is not None:
            scraped()
    limited = smoke.client(url, tenants.keys["limited"])
    limit = int(tenants.settings["limited"]["rpm"])

    def one() -> Any:
        return limited.chat.completions.create(model=alias, messages=[{"role": "user", "content": "Say hi."}],
                                               max_tokens=1, temperature=0)

    codes = [call_status(one)[0] for _ in range(limit + 1)]
    return Load(calls, codes, started, time.time(), tenants)
