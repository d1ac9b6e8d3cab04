"""inferbook's llama.cpp provider for the LiteLLM proxy: real tool calls from a model that writes them as text.

Qwen2.5-Coder-1.5B-Instruct (the GGUF served by llama.cpp's ``llama-server --jinja``) never writes the
``<tool_call>`` tags llama-server parses: for ``tool_choice`` auto, required and a named function alike it
writes the call as a JSON object in the content, often inside a ```json fence; ``required`` is not
constrained (it rambles on after the object until max_tokens) and a named choice is ignored. This file is
a LiteLLM custom provider (``litellm_settings.custom_provider_map``: provider ``llamacpp``, handler
``llamacpp_tools.provider``); an alias served by llama-server names ``model: llamacpp/<served name>`` with
its ``api_base``. For every call it

* rewrites the request: for ``required`` and a named function it adds llama-server's per-request
  ``json_schema`` (one object ``{"name": <a tool>, "arguments": <that tool's parameters>}``; the named
  choice allows its tool only), so the answer is exactly one valid call;
* parses the answer: content that is a bare or fenced JSON object (or several, or a list of them; also in
  the doubled braces the GGUF's template shows the model) whose ``name`` is one of the request's tools and
  whose ``arguments`` is an object becomes ``tool_calls``, with ``finish_reason`` ``tool_calls``; anything
  else stays text. Streamed content is held back only while it
  can still be a call (it starts, after whitespace, with ``{``, ``[`` or a ```json fence); a call leaves
  as one tool-call delta carrying its whole arguments; other text passes through as it comes.

LiteLLM bridges ``/v1/responses`` and ``/v1/messages`` to chat completions for a provider it has no
native Responses or Messages config for (a custom provider), so this one parser serves all three of the
proxy's protocols. (A deployment on ``openai/`` or ``hosted_vllm/`` would have ``/v1/responses`` sent to
the engine's own Responses endpoint, past any chat-completions parsing.)

The file is self-contained: the proxy loads it from its config's folder (standard library, httpx and
LiteLLM only). The request rewrite and the parsing are plain functions, which inferbook's tests load
outside LiteLLM's environment, hence the stand-ins below.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, AsyncIterator, Iterable

try:  # inside the proxy
    import httpx
    from litellm.litellm_core_utils.llm_response_utils.convert_dict_to_response import convert_to_model_response_object
    from litellm.llms.custom_llm import CustomLLM, CustomLLMError

    IN_PROXY = True
except ModuleNotFoundError:  # inferbook's tests, outside LiteLLM's environment
    IN_PROXY = False

    class CustomLLM:  # type: ignore[no-redef]
        """Stand-in: the provider's parsing is plain functions."""

    class CustomLLMError(Exception):  # type: ignore[no-redef]
        """Stand-in with LiteLLM's fields."""

        def __init__(self, status_code: int, message: str) -> None:
            super().__init__(message)
            self.status_code, self.message = status_code, message


FENCE = "```"
#: A fence's language that may hold a call: none, or json.
FENCE_LANGUAGES = ("", "json")
#: The keys a call object starts with (the model writes ``name`` first; ``arguments`` first is tolerated).
CALL_KEYS = ("name", "arguments")
#: How long a call to llama-server may take when LiteLLM passes no timeout (LiteLLM's own default).
DEFAULT_TIMEOUT_SECONDS = 600.0
#: What LiteLLM leaves among a custom provider's optional params that is its own, not the model server's.
LITELLM_ONLY = ("max_retries",)
_FIRST_KEY = re.compile(r'\{\s*(?:"([^"\\]*)("?))?')
_LIST_START = re.compile(r"\[\s*(\S?)")


# -- the request ---------------------------------------------------------------------------------------------


class ToolChoiceError(ValueError):
    """A tool_choice the request's tools cannot satisfy (a 400 for the caller)."""


def function_tools(tools: Iterable[Any] | None) -> dict[str, dict[str, Any]]:
    """The request's function tools: name -> its parameters' JSON schema (an empty object schema if none)."""
    found: dict[str, dict[str, Any]] = {}
    for tool in tools or ():
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            found[function["name"]] = parameters if isinstance(parameters, dict) else {"type": "object"}
    return found


def named_choice(tool_choice: Any) -> str | None:
    """The function a tool_choice names (``{"type": "function", "function": {"name": ...}}``), if it names one."""
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return function["name"]
        if tool_choice.get("type") == "function" and isinstance(tool_choice.get("name"), str):
            return tool_choice["name"]  # the Responses API's flat form, should it arrive unconverted
    return None


def forced_tools(body: dict[str, Any]) -> list[str] | None:
    """The tools an answer must call one of (``required``: any; a named choice: that one), or None if free."""
    tools = function_tools(body.get("tools"))
    choice = body.get("tool_choice")
    name = named_choice(choice)
    if name is not None:
        if name not in tools:
            raise ToolChoiceError(f"tool_choice names the function {name!r}, which is not among the request's "
                                  f"tools ({', '.join(sorted(tools)) or 'none'})")
        return [name]
    if choice == "required" or (isinstance(choice, dict) and choice.get("type") in ("required", "any")):
        if not tools:
            raise ToolChoiceError("tool_choice is 'required' but the request has no function tools")
        return sorted(tools)
    return None


def callable_tools(body: dict[str, Any]) -> frozenset[str]:
    """The tool names an answer's content may call: none when tool_choice is 'none' or there are no tools."""
    if body.get("tool_choice") == "none":
        return frozenset()
    forced = forced_tools(body)
    return frozenset(forced if forced is not None else function_tools(body.get("tools")))


def call_schema(tools: dict[str, dict[str, Any]], names: Iterable[str]) -> dict[str, Any]:
    """The JSON schema of one call to one of ``names``: llama-server turns it into a grammar."""
    return {"anyOf": [{"type": "object",
                       "properties": {"name": {"const": name}, "arguments": tools[name]},
                       "required": ["name", "arguments"]} for name in names]}


def rewrite_request(body: dict[str, Any]) -> dict[str, Any]:
    """The body llama-server gets: for a required or named tool_choice, the call's schema constrains the answer.

    llama-server ignores an object tool_choice (with a warning) and does not constrain ``required`` for a
    model that writes no ``<tool_call>`` tags; its per-request ``json_schema`` works beside ``tools`` (the
    chat template still shows the tools to the model). The schema replaces any ``response_format``; the
    tool_choice sent on is ``auto``, since the schema does the constraining.
    """
    forced = forced_tools(body)
    if forced is None:
        return body
    rewritten = {key: value for key, value in body.items() if key not in ("response_format", "json_schema")}
    rewritten["json_schema"] = call_schema(function_tools(body.get("tools")), forced)
    rewritten["tool_choice"] = "auto"
    return rewritten


def request_body(model: str, messages: list[Any], optional_params: dict[str, Any], stream: bool) -> dict[str, Any]:
    """The chat-completions body from what LiteLLM hands a custom provider (before :func:`rewrite_request`).

    A stream always asks for usage (the last chunk), so the proxy records spend whatever the client asked.
    """
    body: dict[str, Any] = {"model": model, "messages": messages}
    for key, value in optional_params.items():
        if value is not None and key not in ("extra_body", "stream", *LITELLM_ONLY):
            body[key] = value
    extra = optional_params.get("extra_body")
    if isinstance(extra, dict):
        body.update(extra)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    else:
        body.pop("stream_options", None)
    return body


def prepare(model: str, messages: list[Any], optional_params: dict[str, Any],
            stream: bool) -> tuple[dict[str, Any], frozenset[str]]:
    """What llama-server gets, and the tools its answer may call (:class:`ToolChoiceError` for an impossible
    tool_choice)."""
    body = request_body(model, messages, optional_params, stream)
    return rewrite_request(body), callable_tools(body)


# -- the answer ----------------------------------------------------------------------------------------------


def value_end(text: str, start: int) -> int | None:
    """The index just past the JSON object or array that opens at ``start``; None while it is still open."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def cannot_be_call(text: str, start: int) -> bool:
    """Whether an unfinished object or array at ``start`` is already plainly not a call (so it streams as text)."""
    rest = text[start:]
    if rest.startswith("{{"):  # a call in doubled braces: judge the object inside
        return cannot_be_call(text, start + 1)
    if rest.startswith("["):
        following = _LIST_START.match(rest)
        return bool(following and following.group(1)) and following.group(1) != "{"
    first = _FIRST_KEY.match(rest)
    if first is None:
        return True
    after = rest[first.end():]
    if first.group(1) is None:  # no key begun: only whitespace may follow the brace
        return bool(after)
    key, closed = first.group(1), first.group(2)
    if closed:
        return key not in CALL_KEYS
    return bool(after) or not any(candidate.startswith(key) for candidate in CALL_KEYS)


def as_call(value: Any, names: frozenset[str]) -> dict[str, Any] | None:
    """A call ``{"name": ..., "arguments": {...}}`` if ``value`` is one to a tool of ``names``, else None."""
    if (isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"] in names
            and isinstance(value.get("arguments"), dict)):
        return {"name": value["name"], "arguments": value["arguments"]}
    return None


def as_calls(values: list[Any], names: frozenset[str]) -> list[dict[str, Any]] | None:
    """Calls from JSON values (objects, or lists of them), or None if any of them is not a call."""
    calls: list[dict[str, Any]] = []
    for value in values:
        for item in (value if isinstance(value, list) and value else [value]):
            call = as_call(item, names)
            if call is None:
                return None
            calls.append(call)
    return calls


def _decode(text: str, start: int, end: int) -> tuple[bool, Any]:
    """The JSON value in ``text[start:end]``; a call in doubled braces (``{{"name": ...}}``, as the GGUF's own
    chat template shows the model, which copies it) is read as the object inside."""
    candidates = [text[start:end]]
    if text.startswith("{{", start) and text.endswith("}}", start, end):
        candidates.append(text[start + 1:end - 1])
    for candidate in candidates:
        try:
            return True, json.loads(candidate)
        except ValueError:
            continue
    return False, None


def leading_segment(text: str, names: frozenset[str], final: bool) -> tuple[str, list[dict[str, Any]], int]:
    """What the start of ``text`` is: ``("calls", calls, end)``, ``("text", [], 0)``, ``("more", [], 0)``
    (it can still become a call: wait for more) or ``("blank", [], 0)`` (whitespace only).

    ``final``: no more text will come, so what is unfinished is text.
    """
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return "blank", [], 0
    undecided = ("text", [], 0) if final else ("more", [], 0)
    rest = text[start:]
    if rest[0] in "{[":
        end = value_end(text, start)
        if end is None:
            return ("text", [], 0) if cannot_be_call(text, start) else undecided
        ok, value = _decode(text, start, end)
        calls = as_calls([value], names) if ok else None
        return ("calls", calls, end) if calls else ("text", [], 0)
    if not rest.startswith(FENCE):
        return undecided if FENCE.startswith(rest) else ("text", [], 0)
    newline = text.find("\n", start + len(FENCE))
    if newline < 0:
        language = text[start + len(FENCE):].strip().lower()
        could_be = "`" not in language and any(known.startswith(language) for known in FENCE_LANGUAGES if known)
        return undecided if could_be or not language else ("text", [], 0)
    if text[start + len(FENCE):newline].strip().lower() not in FENCE_LANGUAGES:
        return "text", [], 0
    values: list[Any] = []
    position = newline + 1
    while True:
        while position < len(text) and (text[position].isspace() or (values and text[position] == ",")):
            position += 1
        if position == len(text):
            return undecided
        if text[position] in "{[":
            end = value_end(text, position)
            if end is None:
                return ("text", [], 0) if cannot_be_call(text, position) else undecided
            ok, value = _decode(text, position, end)
            if not ok:
                return "text", [], 0
            values.append(value)
            position = end
        elif values and text.startswith(FENCE, position):
            calls = as_calls(values, names)
            return ("calls", calls, position + len(FENCE)) if calls else ("text", [], 0)
        elif values and FENCE.startswith(text[position:]):
            return undecided
        else:
            return "text", [], 0


class CallScanner:
    """Content in, events out: ``("text", str)`` as soon as it cannot be a call, ``("call", call)`` when whole.

    Calls are looked for at the start of the content and right after a call; once text has begun, the rest
    of the content is text (it passes through as it comes). With no callable tools, everything is text.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.buffer = ""
        self.passing = not self.names
        self.calls = 0

    def feed(self, text: str) -> list[tuple[str, Any]]:
        if self.passing:
            return [("text", text)] if text else []
        self.buffer += text
        return self._drain(final=False)

    def finish(self) -> list[tuple[str, Any]]:
        return [] if self.passing else self._drain(final=True)

    def _drain(self, final: bool) -> list[tuple[str, Any]]:
        events: list[tuple[str, Any]] = []
        while True:
            verdict, calls, end = leading_segment(self.buffer, self.names, final)
            if verdict == "calls":
                events.extend(("call", call) for call in calls)
                self.calls += len(calls)
                self.buffer = self.buffer[end:]
                continue
            if verdict == "text" or (verdict == "blank" and final and not self.calls):
                text = self.buffer.lstrip() if self.calls else self.buffer
                self.buffer, self.passing = "", True
                if text:
                    events.append(("text", text))
            elif verdict == "blank" and final:
                self.buffer = ""  # whitespace after the last call
            return events


def tool_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    """A parsed call as an OpenAI tool call (arguments: the JSON text of the object, as the spec has it)."""
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function", "index": index,
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}}


def parse_content(content: str | None, names: Iterable[str]) -> tuple[str | None, list[dict[str, Any]]]:
    """An answer's content split into its text (None if none) and its tool calls."""
    scanner = CallScanner(names)
    events = scanner.feed(content or "") + scanner.finish()
    text = "".join(value for kind, value in events if kind == "text")
    calls = [tool_call(value, index) for index, value in enumerate(v for k, v in events if k == "call")]
    return (text or (None if calls else content)), calls


def translate_answer(answer: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """llama-server's chat completion with the calls its content holds turned into ``tool_calls``."""
    names = frozenset(names)
    choices = []
    for choice in answer.get("choices") or []:
        message = dict(choice.get("message") or {})
        choice = dict(choice)
        if names and not message.get("tool_calls"):
            text, calls = parse_content(message.get("content"), names)
            if calls:
                message["content"], message["tool_calls"] = text, calls
                choice["finish_reason"] = "tool_calls"
        choice["message"] = message
        choices.append(choice)
    return {**answer, "choices": choices}


def stream_chunk(text: str = "", tool_use: dict[str, Any] | None = None, finish_reason: str = "",
                 usage: dict[str, int] | None = None) -> dict[str, Any]:
    """One of LiteLLM's generic streaming chunks (``litellm.types.utils.GenericStreamingChunk``)."""
    return {"text": text, "tool_use": tool_use, "is_finished": bool(finish_reason), "finish_reason": finish_reason,
            "usage": usage, "index": 0}


class StreamTranslator:
    """llama-server's chat-completion chunks in, LiteLLM's generic streaming chunks out (tool calls parsed).

    The last chunk carries the finish reason (``tool_calls`` when a call was made) and the usage.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.scanner = CallScanner(names)
        self.calls = 0
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None

    def push(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = {key: int(usage.get(key) or 0)
                          for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.extend(self._chunks(self.scanner.feed(delta["content"])))
            for native in delta.get("tool_calls") or []:  # llama-server parsed a call itself: pass it on
                function = native.get("function") or {}
                self.calls = max(self.calls, int(native.get("index", 0)) + 1)  # one call spans several deltas
                out.append(stream_chunk(tool_use={"id": native.get("id"), "type": "function",
                                                  "index": native.get("index", 0),
                                                  "function": {"name": function.get("name"),
                                                               "arguments": function.get("arguments") or ""}}))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def close(self) -> list[dict[str, Any]]:
        out = self._chunks(self.scanner.finish())
        finish = "tool_calls" if self.calls else (self.finish_reason or "stop")
        out.append(stream_chunk(finish_reason=finish, usage=self.usage))
        return out

    def _chunks(self, events: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for kind, value in events:
            if kind == "text":
                out.append(stream_chunk(text=value))
            else:
                out.append(stream_chunk(tool_use=tool_call(value, self.calls)))
                self.calls += 1
        return out


def sse_events(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    """The JSON chunks of a server-sent-event stream's ``data:`` lines (up to ``[DONE]``)."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        if data:
            yield json.loads(data)


# -- the provider --------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None) or getattr(value, "dict", None)
    if dump is None:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return dump()


def _endpoint(api_base: str | None) -> str:
    if not api_base:
        raise CustomLLMError(status_code=500, message="the llamacpp provider needs the deployment's api_base "
                                                      "(llama-server's URL, ending in /v1)")
    return api_base.rstrip("/") + "/chat/completions"


def _headers(api_key: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    out = {"Content-Type": "application/json", **(headers or {})}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out


def _timeout(timeout: Any) -> Any:
    if timeout is None:
        return httpx.Timeout(DEFAULT_TIMEOUT_SECONDS)
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(float(timeout))


def _unreachable(url: str, exc: Exception) -> CustomLLMError:
    # The words "ConnectError" and "Cannot connect to host" let the backend-errors hook answer 503 naming it.
    return CustomLLMError(status_code=503, message=f"ConnectError: Cannot connect to host of llama-server "
                                                   f"({url}): {type(exc).__name__}: {exc}")


class LlamaCppTools(CustomLLM):
    """The ``llamacpp`` provider: llama-server's chat completions with tool calls made real."""

    def _prepare(self, model: str, messages: list, optional_params: dict, stream: bool) -> tuple[bytes, frozenset]:
        try:
            body, names = prepare(model, messages, dict(optional_params or {}), stream)
        except ToolChoiceError as exc:
            raise CustomLLMError(status_code=400, message=str(exc)) from exc
        return json.dumps(body, default=_json_default).encode(), names

    async def acompletion(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
                          encoding, api_key, logging_obj, optional_params, acompletion=None, litellm_params=None,
                          logger_fn=None, headers={}, timeout=None, client=None):  # noqa: B006 (LiteLLM's signature)
        payload, names = self._prepare(model, messages, optional_params, stream=False)
        url = _endpoint(api_base)
        try:
            async with httpx.AsyncClient(timeout=_timeout(timeout)) as http:
                response = await http.post(url, content=payload, headers=_headers(api_key, headers))
        except httpx.TimeoutException as exc:
            raise CustomLLMError(status_code=408, message=f"llama-server ({url}) timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise _unreachable(url, exc) from exc
        if response.status_code >= 400:
            raise CustomLLMError(status_code=response.status_code, message=response.text)
        answer = translate_answer(response.json(), names)
        return convert_to_model_response_object(response_object=answer, model_response_object=model_response)

    async def astreaming(self, model, messages, api_base, custom_prompt_dict, model_response, print_verbose,
                         encoding, api_key, logging_obj, optional_params, acompletion=None, litellm_params=None,
                         logger_fn=None, headers={}, timeout=None, client=None  # noqa: B006
                         ) -> AsyncIterator[dict[str, Any]]:
        payload, names = self._prepare(model, messages, optional_params, stream=True)
        url = _endpoint(api_base)
        translator = StreamTranslator(names)
        try:
            async with httpx.AsyncClient(timeout=_timeout(timeout)) as http:
                async with http.stream("POST", url, content=payload, headers=_headers(api_key, headers)) as response:
                    if response.status_code >= 400:
                        raise CustomLLMError(status_code=response.status_code,
                                             message=(await response.aread()).decode(errors="replace"))
                    async for line in response.aiter_lines():
                        for event in sse_events([line]):
                            if "error" in event:
                                raise CustomLLMError(status_code=500, message=f"llama-server: {event['error']}")
                            for chunk in translator.push(event):
                                yield chunk
        except httpx.TimeoutException as exc:
            raise CustomLLMError(status_code=408, message=f"llama-server ({url}) timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise _unreachable(url, exc) from exc
        for chunk in translator.close():
            yield chunk

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        raise CustomLLMError(status_code=501, message="the llamacpp provider answers async calls only (the proxy's)")

    def streaming(self, *args: Any, **kwargs: Any) -> Any:
        raise CustomLLMError(status_code=501, message="the llamacpp provider answers async calls only (the proxy's)")


provider = LlamaCppTools()
