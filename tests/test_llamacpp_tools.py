"""The llama.cpp provider for LiteLLM: tool calls made real from the JSON Qwen2.5-Coder-1.5B writes as text.

The parsing and the request rewrite are plain functions of the provider file (run outside LiteLLM), tested
on llama-server's recorded answers (tests/data/llamacpp: the GGUF's own chat template and the corrected one,
plain and SSE-streamed) and on the shapes the model writes. tests/test_llamacpp_gateway.py runs the provider
live (slow).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

PROVIDER = Path(__file__).parents[1] / "src/inferbook/layers/llm_gateway/proxy_hooks/llamacpp_tools.py"
RECORDS = Path(__file__).parent / "data/llamacpp"
TEMPLATES = ("gguf", "fixed")
#: Each recorded tool case: the call the model meant.
EXPECTED = {"auto-time": ("get_time", {"city": "Paris"}), "auto-read": ("read_file", {"path": "src/app.py"}),
            "required-time": ("get_time", {"city": "Paris"}), "named-time": ("get_time", {"city": "Paris"})}
TOOLS = frozenset({"get_time", "read_file"})


@pytest.fixture(scope="module")
def lt():
    spec = importlib.util.spec_from_file_location("llamacpp_tools", PROVIDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(template: str, case: str, stream: bool) -> dict[str, Any]:
    records = json.loads((RECORDS / f"tool-answers-{template}-template.json").read_text())["records"]
    return next(r for r in records if r["case"] == case and r["stream"] is stream)


def prepared(lt, rec: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """What the provider would send for a recorded request, and the tools the answer may call."""
    request = rec["request"]
    params = {k: v for k, v in request.items() if k not in ("model", "messages", "stream")}
    return lt.prepare(request["model"], request["messages"], params, rec["stream"])


def replay(lt, rec: dict[str, Any], names: frozenset[str]) -> list[dict[str, Any]]:
    """The recorded SSE stream through the provider's translator: LiteLLM's generic chunks."""
    translator = lt.StreamTranslator(names)
    out = []
    for event in lt.sse_events(rec["response"].splitlines()):
        out.extend(translator.push(event))
    return out + translator.close()


def content_of(rec: dict[str, Any]) -> str:
    return json.loads(rec["response"])["choices"][0]["message"]["content"]


# -- the answer, plain -------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_recorded_answer_becomes_a_call_of_the_tool_it_names_with_object_arguments(lt, template, case):
    rec = record(template, case, stream=False)
    _, names = prepared(lt, rec)
    choice = lt.translate_answer(json.loads(rec["response"]), names)["choices"][0]
    [call] = choice["message"]["tool_calls"]
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == EXPECTED[case]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert choice["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_recorded_answer_that_is_only_a_call_has_no_text_left(lt, template):
    for case in ("auto-time", "auto-read", "named-time"):
        _, names = prepared(lt, record(template, case, stream=False))
        text, _ = lt.parse_content(content_of(record(template, case, stream=False)), names)
        assert text is None, case


def test_what_the_unconstrained_model_rambled_after_its_call_stays_text(lt):
    rec = record("gguf", "required-time", stream=False)
    text, [call] = lt.parse_content(content_of(rec), TOOLS)
    assert call["function"]["name"] == "get_time"
    assert text.startswith('What is the content of the file "example.txt"')


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_recorded_text_answer_stays_text(lt, template):
    rec = record(template, "auto-text", stream=False)
    _, names = prepared(lt, rec)
    choice = lt.translate_answer(json.loads(rec["response"]), names)["choices"][0]
    assert choice["message"]["content"] == "Hello!"
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"


# -- the answer, streamed ----------------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_a_recorded_stream_yields_the_call_once_with_its_whole_arguments(lt, template, case):
    rec = record(template, case, stream=True)
    _, names = prepared(lt, rec)
    chunks = replay(lt, rec, names)
    calls = [c["tool_use"] for c in chunks if c["tool_use"]]
    assert len(calls) == 1
    assert (calls[0]["function"]["name"], json.loads(calls[0]["function"]["arguments"])) == EXPECTED[case]
    streamed_text = "".join(c["text"] for c in chunks)
    assert '"name"' not in streamed_text and "get_time" not in streamed_text  # no part of the call leaked as text
    assert chunks[-1]["is_finished"] and chunks[-1]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_stream_ends_with_llama_servers_usage_so_spend_is_recorded(lt, template):
    rec = record(template, "auto-time", stream=True)
    _, names = prepared(lt, rec)
    last = replay(lt, rec, names)[-1]
    assert last["usage"]["prompt_tokens"] > 0 and last["usage"]["completion_tokens"] > 0
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_recorded_streamed_text_passes_through_chunk_by_chunk(lt, template):
    rec = record(template, "auto-text", stream=True)
    _, names = prepared(lt, rec)
    chunks = replay(lt, rec, names)
    assert [c["text"] for c in chunks if c["text"]] == ["Hello", "!"]
    assert chunks[-1]["finish_reason"] == "stop" and not any(c["tool_use"] for c in chunks)


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("case", [*sorted(EXPECTED), "auto-text"])
def test_a_stream_split_at_every_character_parses_like_the_whole_answer(lt, template, case):
    content = content_of(record(template, case, stream=False))
    scanner = lt.CallScanner(TOOLS)
    pieces = [event for char in content for event in scanner.feed(char)] + scanner.finish()
    whole_scanner = lt.CallScanner(TOOLS)
    whole = whole_scanner.feed(content) + whole_scanner.finish()
    assert [v for k, v in pieces if k == "call"] == [v for k, v in whole if k == "call"]
    assert "".join(v for k, v in pieces if k == "text") == "".join(v for k, v in whole if k == "text")
    assert any(k == "call" for k, _ in whole) is (case != "auto-text")


# -- the shapes the model writes ---------------------------------------------------------------------------


def test_several_calls_in_one_fence_become_several_calls(lt):
    # What the model wrote, live, for "What time is it in Paris and in Tokyo? Call the tool once per city."
    content = ('```json\n{\n  "name": "get_time",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n'
               '{\n  "name": "get_time",\n  "arguments": {\n    "city": "Tokyo"\n  }\n}\n```')
    text, calls = lt.parse_content(content, TOOLS)
    assert text is None
    assert [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Paris", "Tokyo"]
    assert [c["index"] for c in calls] == [0, 1] and len({c["id"] for c in calls}) == 2


@pytest.mark.parametrize("content", [
    '{"name": "get_time", "arguments": {"city": "Paris"}}\n{"name": "read_file", "arguments": {"path": "a.py"}}',
    '[{"name": "get_time", "arguments": {"city": "Paris"}}, {"name": "read_file", "arguments": {"path": "a.py"}}]',
    '```json\n[{"name": "get_time", "arguments": {"city": "Paris"}},\n {"name": "read_file", '
    '"arguments": {"path": "a.py"}}]\n```',
    '```\n{"name": "get_time", "arguments": {"city": "Paris"}}\n```\n```json\n'
    '{"name": "read_file", "arguments": {"path": "a.py"}}\n```',
])
def test_several_calls_bare_listed_or_in_fences_become_several_calls(lt, content):
    text, calls = lt.parse_content(content, TOOLS)
    assert text is None and [c["function"]["name"] for c in calls] == ["get_time", "read_file"]


@pytest.mark.parametrize("content", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',           # not one of the request's tools
    '```json\n{"name": "delete_repo", "arguments": {}}\n```',
    '{"name": "get_time", "arguments": "{\\"city\\": \\"Paris\\"}"}',    # arguments not an object
    '{"name": "get_time"}',
    '{"tool": "get_time", "arguments": {"city": "Paris"}}',
    '[{"name": "get_time", "arguments": {"city": "Paris"}}, {"name": "nope", "arguments": {}}]',
    '```python\n{"name": "get_time", "arguments": {"city": "Paris"}}\n```',  # a code block, not a call
    '{"name": "get_time", "arguments": {"city": "Par',                    # cut by max_tokens
    '```json\n{"name": "get_time", "arguments": {"city": "Paris"}}\n',    # fence never closed
    '{"a": 1}',
    "[1, 2, 3]",
    "```",
    "",
])
def test_what_is_not_a_call_to_a_request_tool_stays_text_unchanged(lt, content):
    text, calls = lt.parse_content(content, TOOLS)
    assert calls == [] and text == content


def test_an_unknown_tool_name_in_a_stream_comes_out_as_the_text_it_was(lt):
    content = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    scanner = lt.CallScanner(TOOLS)
    events = [e for piece in (content[:9], content[9:30], content[30:]) for e in scanner.feed(piece)]
    events += scanner.finish()
    assert all(kind == "text" for kind, _ in events) and "".join(v for _, v in events) == content


def test_a_call_in_the_doubled_braces_of_the_ggufs_template_is_a_call(lt):
    # What the model wrote live (the GGUF's own template, after a tool result came back through /v1/messages).
    content = '{{"name": "get_time", "arguments": {"city": "Paris"}}}'
    text, [call] = lt.parse_content(content, TOOLS)
    assert text is None and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    scanner = lt.CallScanner(TOOLS)
    assert scanner.feed(content[:12]) == []  # held back while it can be a call
    assert [k for k, _ in scanner.feed(content[12:]) + scanner.finish()] == ["call"]
    assert lt.parse_content("{{ x }}", TOOLS) == ("{{ x }}", [])


def test_text_before_a_call_makes_the_whole_answer_text(lt):
    content = 'Sure:\n{"name": "get_time", "arguments": {"city": "Paris"}}'
    assert lt.parse_content(content, TOOLS) == (content, [])


def test_a_call_is_parsed_only_when_the_request_lets_the_model_call(lt):
    content = '{"name": "get_time", "arguments": {"city": "Paris"}}'
    tools = record("gguf", "auto-time", stream=False)["request"]["tools"]
    assert lt.callable_tools({"tools": tools, "tool_choice": "none"}) == frozenset()
    assert lt.callable_tools({"messages": []}) == frozenset()
    assert lt.parse_content(content, lt.callable_tools({"tools": tools, "tool_choice": "none"})) == (content, [])
    named = {"tools": tools, "tool_choice": {"type": "function", "function": {"name": "read_file"}}}
    assert lt.callable_tools(named) == frozenset({"read_file"})
    assert lt.parse_content(content, lt.callable_tools(named)) == (content, [])


def test_prose_streams_before_it_ends(lt):
    scanner = lt.CallScanner(TOOLS)
    assert scanner.feed("Hel") == [("text", "Hel")]
    assert scanner.feed("lo") == [("text", "lo")]


@pytest.mark.parametrize("opening", ["```python\n", '{"config', "{\n  key", "[1", "```py"])
def test_an_opening_that_cannot_be_a_call_streams_without_waiting_for_its_end(lt, opening):
    scanner = lt.CallScanner(TOOLS)
    assert scanner.feed(opening) == [("text", opening)]
    assert scanner.feed("x") == [("text", "x")]


@pytest.mark.parametrize("opening", ["  ", "`", "``", "```", "```js", "```json", "```json\n", "```json\n{",
                                     '{"na', '{"name": "get_time", "arguments": {"city": "Pa', "[", "[{"])
def test_an_opening_that_can_still_be_a_call_is_held_back(lt, opening):
    assert lt.CallScanner(TOOLS).feed(opening) == []


def test_a_json_string_holding_a_fence_or_braces_does_not_end_the_call(lt):
    content = '```json\n{"name": "read_file", "arguments": {"path": "a ```}] \\" b.md"}}\n```'
    text, [call] = lt.parse_content(content, TOOLS)
    assert text is None and json.loads(call["function"]["arguments"]) == {"path": 'a ```}] " b.md'}


def test_non_ascii_arguments_survive_as_they_were(lt):
    _, [call] = lt.parse_content('{"name": "read_file", "arguments": {"path": "café/日本.py"}}', TOOLS)
    assert json.loads(call["function"]["arguments"]) == {"path": "café/日本.py"}


def test_tool_calls_llama_server_parsed_itself_pass_through(lt):
    native = [{"id": "abc", "type": "function", "function": {"name": "get_time", "arguments": '{"city":"Oslo"}'}}]
    answer = {"choices": [{"index": 0, "finish_reason": "tool_calls",
                           "message": {"role": "assistant", "content": None, "tool_calls": native}}]}
    assert lt.translate_answer(answer, TOOLS)["choices"][0]["message"]["tool_calls"] == native
    translator = lt.StreamTranslator(TOOLS)
    [chunk] = translator.push({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **native[0]}]}}]})
    assert chunk["tool_use"]["id"] == "abc" and chunk["tool_use"]["function"]["arguments"] == '{"city":"Oslo"}'
    more = {"index": 0, "function": {"arguments": " "}}  # the same call, continued
    translator.push({"choices": [{"index": 0, "delta": {"tool_calls": [more]}}]})
    [parsed] = [c["tool_use"] for c in translator.push(
        {"choices": [{"index": 0, "delta": {"content": '{"name": "read_file", "arguments": {"path": "a"}}'}}]})]
    assert parsed["index"] == 1  # after the one native call, however many deltas it took
    assert translator.close()[-1]["finish_reason"] == "tool_calls"


# -- the request -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("stream", [False, True])
def test_required_is_constrained_to_one_call_of_any_request_tool(lt, template, stream):
    rec = record(template, "required-time", stream)
    body, names = prepared(lt, rec)
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in rec["request"]["tools"]}
    assert body["json_schema"] == {"anyOf": [
        {"type": "object", "properties": {"name": {"const": name}, "arguments": tools[name]},
         "required": ["name", "arguments"]} for name in sorted(tools)]}
    assert body["tool_choice"] == "auto" and body["tools"] == rec["request"]["tools"]
    assert names == frozenset(tools)


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_named_choice_is_constrained_to_its_tool_alone(lt, template):
    rec = record(template, "named-time", stream=False)
    body, names = prepared(lt, rec)
    [only] = body["json_schema"]["anyOf"]
    assert only["properties"]["name"] == {"const": "get_time"}
    assert only["properties"]["arguments"] == rec["request"]["tools"][0]["function"]["parameters"]
    assert names == frozenset({"get_time"}) and body["tool_choice"] == "auto"


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("case", ["auto-time", "auto-text"])
def test_an_auto_request_goes_to_llama_server_unconstrained(lt, template, case):
    rec = record(template, case, stream=False)
    body, names = prepared(lt, rec)
    assert "json_schema" not in body and body["tool_choice"] == "auto" and names == TOOLS


def test_the_call_schema_replaces_a_response_format(lt):
    tools = record("gguf", "required-time", stream=False)["request"]["tools"]
    body = lt.rewrite_request({"tools": tools, "tool_choice": "required", "response_format": {"type": "json_object"}})
    assert "response_format" not in body and "json_schema" in body


@pytest.mark.parametrize("choice", [{"type": "function", "function": {"name": "rm_rf"}}, "required"])
def test_a_tool_choice_the_tools_cannot_satisfy_is_refused(lt, choice):
    tools = [] if choice == "required" else record("gguf", "auto-time", stream=False)["request"]["tools"]
    with pytest.raises(lt.ToolChoiceError):
        lt.prepare("m", [], {"tools": tools, "tool_choice": choice}, stream=False)


def test_a_stream_always_asks_llama_server_for_usage_and_extra_body_is_sent_as_fields(lt):
    body, _ = lt.prepare("m", [{"role": "user", "content": "hi"}],
                         {"max_tokens": 5, "top_k": None, "extra_body": {"cache_prompt": True}}, stream=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["cache_prompt"] is True and "extra_body" not in body and "top_k" not in body
    assert "max_retries" not in lt.prepare("m", [], {"max_retries": 0}, stream=False)[0]
    plain, _ = lt.prepare("m", [], {"stream_options": {"include_usage": True}}, stream=False)
    assert plain["stream"] is False and "stream_options" not in plain


def test_the_provider_file_loads_outside_litellm(lt):
    assert lt.IN_PROXY is False and isinstance(lt.provider, lt.LlamaCppTools)

