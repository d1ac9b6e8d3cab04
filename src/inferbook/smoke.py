"""Smoke calls against an OpenAI-compatible endpoint, each measured and recorded as a row.

Used by the serving chapter (straight at vLLM) and later chapters (through the
gateway with a virtual key). A row says what was called, whether it worked,
and the latency, time to first token, tokens out and tokens per second.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import openai
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from .fim import FORMATS, FimFormat

#: The metric names the SLOs of ADR-0003 are written on (vLLM V1 names).
SLO_METRICS = (
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:generation_tokens_total",
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}


@dataclass
class Call:
    """One measured call."""

    call: str
    ok: bool
    latency_s: float
    ttft_s: float | None = None
    tokens_out: int | None = None
    tokens_per_s: float | None = None
    detail: str = ""
    output: str = field(default="", repr=False)
    tokens_in: int | None = field(default=None, repr=False)  # prompt tokens, where a caller books usage


def client(url: str, api_key: str, timeout: float = 180) -> openai.OpenAI:
    """An OpenAI client with no retries: a smoke test must see the first answer, not a retried one."""
    return openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=timeout)


def rate(tokens: int | None, seconds: float) -> float | None:
    return round(tokens / seconds, 1) if tokens and seconds > 0 else None


def list_models(c: openai.OpenAI) -> Call:
    started = time.perf_counter()
    ids = [m.id for m in c.models.list().data]
    return Call("GET /v1/models", bool(ids), round(time.perf_counter() - started, 3), detail=", ".join(ids))


def chat(c: openai.OpenAI, model: str, prompt: str, max_tokens: int = 64) -> Call:
    started = time.perf_counter()
    response = c.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                         max_tokens=max_tokens, temperature=0)
    elapsed = time.perf_counter() - started
    text = response.choices[0].message.content or ""
    tokens = response.usage.completion_tokens if response.usage else None
    return Call("chat", bool(text), round(elapsed, 3), None, tokens, rate(tokens, elapsed),
                f"finish_reason={response.choices[0].finish_reason}", text)


def chat_stream(c: openai.OpenAI, model: str, prompt: str, max_tokens: int = 64) -> Call:
    """Streamed chat with usage in the last chunk; time to first token is the first content delta."""
    return chat_stream_usage(c, model, prompt, max_tokens)[0]


def chat_stream_usage(c: openai.OpenAI, model: str, prompt: str, max_tokens: int = 64) -> tuple[Call, Any]:
    """:func:`chat_stream`, plus the usage the last chunk reported (None when it reported none)."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage = None
    chunks = 0
    stream = c.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=max_tokens, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    for chunk in stream:
        chunks += 1
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                if first is None:
                    first = time.perf_counter() - started
                parts.append(choice.delta.content)
    elapsed = time.perf_counter() - started
    tokens = usage.completion_tokens if usage else None
    decode = elapsed - (first or 0)
    return Call("chat (streamed)", bool(parts) and usage is not None, round(elapsed, 3),
                round(first, 3) if first is not None else None, tokens, rate(tokens, decode),
                f"{chunks} chunks, usage {'in last chunk' if usage else 'missing'}", "".join(parts)), usage


FIM_STYLES = tuple((f.prefix, f.suffix, f.middle) for f in FORMATS.values() if f.native)


def fim_tokens(base: str, api_key: str, model: str, engine: str = "vllm") -> tuple[str, str, str] | None:
    """The served model's FIM tokens, asked of the server itself (``/tokenize``), or None when it has none.

    A style counts only when each of its markers is a single token: a marker the
    tokenizer splits into pieces is plain text to the model, not a FIM control. vLLM and llama-server both
    answer ``/tokenize``, in their own shapes (``engine``: ``vllm`` or ``llama.cpp``).
    """
    for style in FIM_STYLES:
        single = True
        for marker in style:
            asked = ({"content": marker, "add_special": False} if engine == "llama.cpp"
                     else {"model": model, "prompt": marker, "add_special_tokens": False})
            request = urllib.request.Request(f"{base}/tokenize", data=json.dumps(asked).encode(), method="POST",
                                             headers={"Content-Type": "application/json",
                                                      "Authorization": f"Bearer {api_key}"})
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            if answer.get("count", len(answer.get("tokens", ()))) != 1:
                single = False
                break
        if single:
            return style
    return None


def fim_prompt(prefix: str, suffix: str, tokens: tuple[str, str, str]) -> str:
    """A fill-in-the-middle prompt in prefix-suffix-middle order, as IDE autocompletion sends it."""
    return FimFormat("probed", *tokens).prompt(prefix, suffix)


def fim(c: openai.OpenAI, model: str, prefix: str, suffix: str, tokens: tuple[str, str, str] | None,
        max_tokens: int = 48) -> Call:
    """FIM with the model's own tokens on /v1/completions, or a prompt-based fallback when it has none."""
    started = time.perf_counter()
    if tokens:
        response = c.completions.create(model=model, prompt=fim_prompt(prefix, suffix, tokens),
                                        max_tokens=max_tokens, temperature=0)
        text = response.choices[0].text
        usage = response.usage
        detail = f"native FIM with {tokens[0]} {tokens[1]} {tokens[2]}"
    else:
        instruction = (
            "Fill in the missing code between PREFIX and SUFFIX. Reply with the missing code only.\n"
            f"PREFIX:\n{prefix}\nSUFFIX:\n{suffix}"
        )
        response = c.chat.completions.create(model=model, messages=[{"role": "user", "content": instruction}],
                                             max_tokens=max_tokens, temperature=0)
        text = response.choices[0].message.content or ""
        usage = response.usage
        detail = "the model has no FIM tokens: prompt-based fallback through chat"
    elapsed = time.perf_counter() - started
    tokens_out = usage.completion_tokens if usage else None
    return Call("fill-in-the-middle", bool(text.strip()), round(elapsed, 3), None, tokens_out,
                rate(tokens_out, elapsed), detail, text)


def tool_call_modes(tool_calls: str) -> list[str]:
    """The ``how`` of the chapter's tool calls for a profile's ``tool_calls`` setting.

    A model whose template renders tools is asked the two ways clients force a call (by name, and
    ``required``); one that never sees them (``grammar``) is constrained to a hermes block.
    """
    return ["grammar"] if tool_calls == "grammar" else ["named", "required"]


def runs_to(code: str, expected_stdout: str, timeout: float = 20) -> bool:
    """Whether ``code`` (a completed snippet) runs in a fresh interpreter and prints ``expected_stdout``.

    For checking an autocompletion: the model's middle between its prefix and suffix must be code that
    works. It runs in a subprocess with a timeout, in an empty temporary folder.
    """
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
    return proc.returncode == 0 and proc.stdout.strip() == expected_stdout


#: Hermes-format tool call for WEATHER_TOOL, as a regex for vLLM's structured outputs: the model must emit
#: it, and the server's tool-call parser (hermes) must still turn it into ``tool_calls``.
WEATHER_CALL_REGEX = (
    r'<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "[A-Za-z][A-Za-z .-]{0,30}"\}\}\n</tool_call>'
)


def tool_call(c: openai.OpenAI, model: str, how: str = "grammar") -> Call:
    """A tool call; the parsed ``tool_calls`` are the detail.

    ``how``: ``auto`` lets the model choose (small models rarely do); ``named``
    forces the tool by name and ``required`` forces some tool call (vLLM's own
    forcing, through structured outputs); ``grammar`` constrains the
    output to a hermes ``<tool_call>`` block with structured outputs, so the
    server's parser is exercised even with a model too small to call tools.
    """
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    choice: Any = "required" if how == "required" else "auto"
    if how == "named":
        choice = {"type": "function", "function": {"name": "get_weather"}}
    elif how == "grammar":
        extra = {"structured_outputs": {"regex": WEATHER_CALL_REGEX}}
    response = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=[WEATHER_TOOL], tool_choice=choice, max_tokens=64, temperature=0, extra_body=extra or None,
    )
    elapsed = time.perf_counter() - started
    calls = response.choices[0].message.tool_calls or []
    detail = "; ".join(f"{t.function.name}({t.function.arguments})" for t in calls) or "no tool call"
    tokens = response.usage.completion_tokens if response.usage else None
    ok = bool(calls) and all(_is_json_object(t.function.arguments) for t in calls)
    return Call(f"tool call ({how})", ok, round(elapsed, 3), None, tokens, rate(tokens, elapsed), detail,
                tokens_in=response.usage.prompt_tokens if response.usage else None)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _metrics_text(base: str, timeout: float, api_key: str | None = None) -> str:
    """``base/metrics`` (Prometheus text format); llama-server asks for its key there, vLLM does not."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/metrics", headers=headers),
                                timeout=timeout) as response:
        return response.read().decode()


def exposed_names(text: str) -> set[str]:
    """Metric names in a Prometheus exposition as its TYPE lines give them (a counter with its ``_total``)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def sample_total(text: str, sample: str) -> float:
    """The sum of one sample's values over all its label sets, unlabelled ones included."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == sample)


def metric_names(base: str, timeout: float = 10, api_key: str | None = None) -> set[str]:
    """Metric names exposed at ``base/metrics``."""
    return exposed_names(_metrics_text(base, timeout, api_key))


def metric_total(base: str | Sequence[str], sample: str, timeout: float = 10) -> float:
    """The sum of one sample's values over all its label sets, e.g. ``vllm:request_success_total``; over every
    server of ``base`` when it names several (the replicas of a pool)."""
    bases = [base] if isinstance(base, str) else list(base)
    return sum(sample_total(_metrics_text(b, timeout), sample) for b in bases)


#: llama-server's own metrics (counters and gauges; it has no latency histograms): tokens in and out, the time
#: spent on each, and how busy its slots are.
LLAMACPP_METRICS = ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total",
                    "llamacpp:prompt_seconds_total", "llamacpp:tokens_predicted_seconds_total",
                    "llamacpp:requests_processing")


def metrics(base: str, expected: tuple[str, ...] = SLO_METRICS, what: str = "SLO metrics",
            api_key: str | None = None) -> Call:
    """``GET /metrics`` and whether every name of ``expected`` is exposed (vLLM's SLO metrics by default)."""
    started = time.perf_counter()
    names = metric_names(base, api_key=api_key)
    missing = [m for m in expected if m not in names]
    detail = f"all {len(expected)} {what} present" if not missing else f"missing: {', '.join(missing)}"
    return Call("GET /metrics", not missing, round(time.perf_counter() - started, 3), detail=detail)


def table(calls: list[Call]) -> pd.DataFrame:
    """The smoke table the chapter shows."""
    rows = [{k: v for k, v in asdict(c).items() if k != "output"} for c in calls]
    return pd.DataFrame(rows).set_index("call")
