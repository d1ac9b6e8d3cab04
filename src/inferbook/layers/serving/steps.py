"""The serving chapter's steps on either target: bring vLLM up or reach it, and check what it answered."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from ... import cpu, smoke, targets
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from . import models
from .declaration import DECLARATION
from .endpoint import Endpoint

if TYPE_CHECKING:
    from .cluster import ClusterServing
    from .local import LocalServing


def _part(profile: Profile, layout: Layout, say: Say) -> "LocalServing | ClusterServing":
    """The serving layer's own part on the profile's target: its local processes, or its cluster steps."""

    return targets.of(profile, layout, say).part(DECLARATION)


def provision(profile: Profile, layout: Layout, objects: list[dict[str, Any]], say: Say = print,
              timeout: float = 900) -> Endpoint:
    """Bring the serving layer up on the profile's target and return its endpoint."""
    return _part(profile, layout, say).provision(objects, timeout=timeout)


def connect(profile: Profile, layout: Layout, say: Say = print, timeout: float = 300) -> Endpoint:
    """Reach the serving layer an earlier chapter brought up, on either target, without applying or starting it.

    Later chapters read vLLM itself (its /metrics) to prove what the gateway kept from it; on a
    cluster that needs a port-forward (:meth:`.cluster.ClusterServing.connect`), locally the process.
    """
    return _part(profile, layout, say).connect(timeout=timeout)


def verify(calls: list[Any], endpoint: Endpoint, fim_tokens: tuple[str, str, str] | None,
           fim_works: bool | None = None) -> pd.DataFrame:
    """The chapter's checks as rows (expected, observed, pass); one row per tool call asked.

    ``fim_works``: whether the completed snippet ran and printed what it should (None: not checked).
    """
    by_name = {c.call: c for c in calls}
    rows = []

    def row(check: str, expected: str, observed: str, ok: bool) -> None:
        rows.append({"check": check, "expected": expected, "observed": observed, "pass": bool(ok)})

    models_call = by_name["GET /v1/models"]
    row("model is served", endpoint.model, models_call.detail, endpoint.model in models_call.detail.split(", "))
    chat_call = by_name["chat"]
    row("chat answers", "non-empty text", f"{chat_call.tokens_out} tokens", chat_call.ok)
    stream = by_name["chat (streamed)"]
    row("streaming reports usage", "usage in the last chunk", stream.detail, stream.ok)
    fim_call = by_name["fill-in-the-middle"]
    row("fill-in-the-middle", "native FIM tokens, or the stated fallback",
        fim_call.detail, fim_call.ok and (("native" in fim_call.detail) == bool(fim_tokens)))
    if fim_works is not None and fim_tokens:  # a fallback's middle is chat text, not code to run
        row("the completed code runs", "prefix + middle + suffix prints 2.0",
            "it does" if fim_works else f"it does not: {fim_call.output[:60]!r}", fim_works)
    for tool in (c for c in calls if c.call.startswith("tool call")):
        row(f"tool call parsed ({tool.call.removeprefix('tool call (').rstrip(')')})",
            "tool_calls with JSON object arguments", tool.detail, tool.ok)
    metrics_call = by_name["GET /metrics"]
    row("SLO metrics exposed", "ADR-0003 metric names", metrics_call.detail, metrics_call.ok)
    return pd.DataFrame(rows).set_index("check")


def provenance(profile: Profile, endpoint: Endpoint) -> pd.DataFrame:
    """Which model answers and where its weights came from: packages and checksums locally, the id on a cluster."""
    if endpoint.launch is not None and hasattr(endpoint.launch, "model_dir"):
        return models.provenance(endpoint.launch.model_dir)
    model_id = profile.data["models"]["chat"]["id"]
    rows = [("model", model_id), ("weights", "staged in the pod by the stage-weights init container (ADR-0016)")]
    return pd.DataFrame(rows, columns=["what", "value"]).set_index("what")


def machine(profile: Profile, endpoint: Endpoint) -> pd.DataFrame:
    """The CPU this chapter detected and the precision vLLM was started with, with the reason for it.

    Locally the precision follows the CPU (bf16 only where it runs in hardware) unless the profile names one; on
    a cluster the rendered ``--dtype`` decides, and the CPU shown is the one that rendered, not the nodes'.
    """
    table = cpu.detect().table()
    precision = getattr(endpoint.launch, "precision", None)
    if precision is not None:
        rows = [("vLLM dtype", precision.dtype), ("why", precision.reason)]
    else:
        dtype = profile.data["serving"].get("dtype", "auto")
        rows = [("vLLM dtype", f"{dtype} (as rendered)"),
                ("why", "on a cluster the nodes' hardware decides; set serving.dtype in the profile to choose")]
    chosen = pd.DataFrame(rows, columns=["detected", "value"]).set_index("detected")
    return pd.concat([table, chosen.rename_axis("detected")])


def coder(profile: Profile, layout: Layout, say: Say = print) -> Endpoint | None:
    """The coder's llama-server (models.coder), brought up with the layer: its endpoint, or None without a coder."""
    if not profile.data["models"].get("coder"):
        return None
    return _part(profile, layout, say).reach_coder()


def exercise_coder(endpoint: Endpoint) -> list[Any]:
    """The coder's calls, straight to llama-server: models, chat (plain, streamed), native FIM, its metrics.

    Tool calls are the gateway's part (the experience chapter): this model writes them as JSON in the text, which
    llama-server does not parse.
    """
    client = smoke.client(endpoint.url, endpoint.api_key())
    tokens = smoke.fim_tokens(endpoint.base, endpoint.api_key(), endpoint.model, engine="llama.cpp")
    prefix, suffix = CODER_FIM
    return [smoke.list_models(client),
            smoke.chat(client, endpoint.model, "Write a Python function that reverses a string."),
            smoke.chat_stream(client, endpoint.model, "Explain in two sentences what a KV cache is."),
            smoke.fim(client, endpoint.model, prefix, suffix, tokens),
            smoke.metrics(endpoint.base, smoke.LLAMACPP_METRICS, "llama.cpp metrics", endpoint.api_key())]


#: The coder's fill-in-the-middle task: the middle must make the snippet print 2.0.
CODER_FIM = ("def mean(values):\n    ", "\n\nprint(mean([1, 2, 3]))\n")


def verify_coder(calls: list[Any], endpoint: Endpoint) -> pd.DataFrame:
    """The coder's checks as rows: served, chat, stream usage, native FIM whose completed code runs, metrics."""
    by_name = {c.call: c for c in calls}
    fim = by_name["fill-in-the-middle"]
    prefix, suffix = CODER_FIM
    runs = smoke.runs_to(prefix + fim.output + suffix, "2.0") if "native" in fim.detail else False
    rows = [("coder is served", endpoint.model, by_name["GET /v1/models"].detail,
             endpoint.model in by_name["GET /v1/models"].detail.split(", ")),
            ("coder chat answers", "non-empty text", f"{by_name['chat'].tokens_out} tokens", by_name["chat"].ok),
            ("coder streams with usage", "usage in the last chunk", by_name["chat (streamed)"].detail,
             by_name["chat (streamed)"].ok),
            ("coder FIM is native", "the model's own FIM tokens", fim.detail, "native" in fim.detail and fim.ok),
            ("the coder's middle runs", "prefix + middle + suffix prints 2.0",
             "it does" if runs else f"it does not: {fim.output[:60]!r}", runs),
            ("llama.cpp metrics exposed", "tokens, seconds, busy slots", by_name["GET /metrics"].detail,
             by_name["GET /metrics"].ok)]
    return pd.DataFrame(rows, columns=["check", "expected", "observed", "pass"]).set_index("check")
