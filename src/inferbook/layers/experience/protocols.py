"""The three protocols coding agents speak, through the gateway with a virtual key: what each returns.

OpenAI's Chat Completions (most IDE plug-ins), OpenAI's Responses API (newer agents) and Anthropic's Messages API
(Claude-style agents): LiteLLM serves all three on one ``/v1`` facade and bridges the last two to the alias's
chat completions, so one key, one budget and one ledger cover them. Each is asked for text, streamed text, and a
tool call (``required``: the model must call one of the offered tools), plain and streamed; a tool call passes
when its arguments decode to a JSON object. Each protocol carries them in its own shape, by its own spec: a JSON
string in Chat Completions' ``function.arguments`` and the Responses API's ``function_call.arguments`` (streamed
as string pieces), an object in the Messages API's ``tool_use.input`` (streamed as ``partial_json`` pieces).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pandas as pd

#: The tool offered on every protocol: one required string argument, so a call is easy to check.
TOOL = {"name": "get_time", "description": "The current local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ASK_TOOL = "What time is it in Paris? Use the tool."
ASK_TEXT = "In one short sentence: what is a unit test?"
PROTOCOLS = ("chat completions", "responses", "messages")


@dataclass
class Answer:
    """One call on one protocol: what came back, and whether it is what the protocol promises."""

    protocol: str
    call: str
    ok: bool
    seconds: float
    observed: str
    arguments: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "call": self.call, "ok": self.ok, "seconds": self.seconds,
                "observed": self.observed}


def post(base: str, path: str, key: str, body: dict[str, Any], timeout: float = 300) -> Any:
    """POST ``body`` to the gateway (``base`` without ``/v1``) with the key as OpenAI and Anthropic clients send it."""
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key, "anthropic-version": "2023-06-01",
               "Content-Type": "application/json"}
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    return urllib.request.urlopen(request, timeout=timeout)


def sse(answer: Any) -> list[dict[str, Any]]:
    """The JSON events of a server-sent-events answer (``data:`` lines, ``[DONE]`` left out)."""
    return [json.loads(line[5:]) for line in answer.read().decode().splitlines()
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]")]


def _request(protocol: str, model: str, tool: bool, stream: bool) -> tuple[str, dict[str, Any]]:
    """(path, body) of one call in ``protocol``'s own shape."""
    ask = ASK_TOOL if tool else ASK_TEXT
    if protocol == "chat completions":
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": ask}], "max_tokens": 60,
                                "temperature": 0}
        if tool:
            body.update(tools=[{"type": "function", "function": TOOL}], tool_choice="required")
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return "/v1/chat/completions", body
    if protocol == "responses":
        body = {"model": model, "input": ask, "max_output_tokens": 60, "temperature": 0, "stream": stream}
        if tool:
            body.update(tools=[{"type": "function", **TOOL}], tool_choice="required")
        return "/v1/responses", body
    body = {"model": model, "messages": [{"role": "user", "content": ask}], "max_tokens": 60, "temperature": 0,
            "stream": stream}
    if tool:
        body.update(tools=[{"name": TOOL["name"], "description": TOOL["description"],
                            "input_schema": TOOL["parameters"]}], tool_choice={"type": "any"})
    return "/v1/messages", body


def _read(protocol: str, stream: bool, answer: Any) -> tuple[str, str | None, Any]:
    """(text, tool name, arguments as the protocol carries them) of an answer, plain or streamed."""
    if not stream:
        data = json.loads(answer.read())
        if protocol == "chat completions":
            message = data["choices"][0]["message"]
            calls = message.get("tool_calls") or []
            return (message.get("content") or "", calls[0]["function"]["name"] if calls else None,
                    calls[0]["function"]["arguments"] if calls else None)
        if protocol == "responses":
            items = data.get("output") or []
            call = next((i for i in items if i.get("type") == "function_call"), None)
            text = "".join(c.get("text", "") for i in items if i.get("type") == "message" for c in i.get("content", []))
            return text, call["name"] if call else None, call["arguments"] if call else None
        blocks = data.get("content") or []
        use = next((b for b in blocks if b.get("type") == "tool_use"), None)
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        return text, use["name"] if use else None, use["input"] if use else None
    events = sse(answer)
    if protocol == "chat completions":
        deltas = [ch["delta"] for e in events for ch in e.get("choices") or []]
        calls = [c for d in deltas for c in d.get("tool_calls") or []]
        name = next((c["function"].get("name") for c in calls if c["function"].get("name")), None)
        arguments = "".join(c["function"].get("arguments") or "" for c in calls) if calls else None
        return "".join(d.get("content") or "" for d in deltas), name, arguments
    if protocol == "responses":
        items = [e["item"] for e in events if e.get("type") == "response.output_item.done"]
        call = next((i for i in items if i.get("type") == "function_call"), None)
        text = "".join(e.get("delta", "") for e in events if e.get("type") == "response.output_text.delta")
        return text, call["name"] if call else None, call["arguments"] if call else None
    starts = [e["content_block"] for e in events if e.get("type") == "content_block_start"]
    use = next((b for b in starts if b.get("type") == "tool_use"), None)
    partial = "".join(e["delta"].get("partial_json", "") for e in events if e.get("type") == "content_block_delta")
    text = "".join(e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta")
    return text, use["name"] if use else None, partial if use else None


def as_object(arguments: Any) -> dict[str, Any] | None:
    """The arguments as a JSON object: decoded from a JSON string, or as given; None when they are no object."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    return arguments if isinstance(arguments, dict) else None


def ask(base: str, key: str, model: str, protocol: str, tool: bool, stream: bool) -> Answer:
    """One call: text or a required tool call, plain or streamed, on ``protocol``."""
    call = f"{'tool call (required)' if tool else 'text'}{', streamed' if stream else ''}"
    path, body = _request(protocol, model, tool, stream)
    started = time.perf_counter()
    try:
        text, name, arguments = _read(protocol, stream, post(base, path, key, body))
    except urllib.error.HTTPError as exc:
        return Answer(protocol, call, False, round(time.perf_counter() - started, 2),
                      f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:120]}")
    seconds = round(time.perf_counter() - started, 2)
    if not tool:
        return Answer(protocol, call, bool(text.strip()), seconds, f"text: {text.strip()[:60]!r}")
    decoded = as_object(arguments)
    ok = name == TOOL["name"] and decoded is not None and isinstance(decoded.get("city"), str)
    shape = ("an object" if isinstance(arguments, dict) else "partial_json pieces" if protocol == "messages"
             else "a JSON string" if isinstance(arguments, str) else "nothing")
    observed = (f"{name}({json.dumps(decoded)}) as {shape}" if name  # short: a table cell shows 50 characters
                else f"no tool call; text {text.strip()[:30]!r}")
    return Answer(protocol, call, ok, seconds, observed, decoded)


def exercise(base: str, key: str, model: str) -> list[Answer]:
    """Every protocol, each with text and a required tool call, plain and streamed (twelve calls)."""
    return [ask(base, key, model, protocol, tool, stream)
            for protocol in PROTOCOLS for tool in (False, True) for stream in (False, True)]


def table(answers: list[Answer]) -> pd.DataFrame:
    """The answers as the chapter shows them, one row a call."""
    return pd.DataFrame([a.row() for a in answers]).set_index(["protocol", "call"])
