"""inferbook's backend-error hook for the LiteLLM proxy, loaded from the proxy's config folder (a callback).

Shipped like the ledger guard: a key of the ``litellm-config`` ConfigMap on a cluster, beside config.yaml;
written beside it by the local target. It runs inside the proxy, on LiteLLM's own interpreter: standard
library, LiteLLM and FastAPI only.

- A backend that cannot be reached (vLLM restarting, scaled to zero, its Service without endpoints) is a
  503 that names it, not LiteLLM's generic 500: a client retries a 503, and an operator knows where to look.
- Presidio (the PII guardrail, features.guardrails) that cannot be reached: the request is refused before any
  model call, as LiteLLM's guardrail does, but with a 503 that names Presidio instead of a generic 500.
- MCP session ids in LiteLLM's warnings are cut to their first characters (:class:`RedactSessionIds`).
- An MCP server that cannot be reached: LiteLLM answers the tool call with an error result that says only
  ``ConnectError: All connection attempts failed``; the result is rewritten to name the server and the tool
  (still an MCP tool error, ``isError: true``, as the protocol wants).
"""

from __future__ import annotations

import logging
import re
from typing import Any

try:  # inside the proxy
    from fastapi import HTTPException
    from litellm.integrations.custom_logger import CustomLogger
except ModuleNotFoundError:  # inferbook's tests, outside LiteLLM's environment

    class CustomLogger:  # type: ignore[no-redef]
        """Stand-in: the hook is a plain coroutine."""

    class HTTPException(Exception):  # type: ignore[no-redef]
        """Stand-in with FastAPI's fields."""

        def __init__(self, status_code: int, detail: Any = None) -> None:
            super().__init__(detail)
            self.status_code, self.detail = status_code, detail

#: What LiteLLM's message says when the model server refused or dropped the connection.
UNREACHABLE = ("Cannot connect to host", "Connection refused", "Connect call failed", "Server disconnected",
               "ConnectError", "RemoteProtocolError")


def backend_unreachable(exc: BaseException) -> bool:
    """Whether a failed call never got an answer from the model server (as opposed to an error it answered)."""
    text = f"{type(exc).__name__}: {exc}"
    return getattr(exc, "status_code", 500) in (500, 502, 503) and any(marker in text for marker in UNREACHABLE)


def guardrail_unreachable(exc: BaseException) -> bool:
    """Whether LiteLLM's presidio guardrail failed because Presidio could not be reached (it then refuses the
    request with a generic 500 that says ``Presidio PII analysis failed: ClientConnectorError``)."""
    text = str(getattr(exc, "detail", "") or exc)
    return "Presidio" in text and any(marker in text for marker in (*UNREACHABLE, "ClientConnectorError",
                                                                     "ServerDisconnectedError", "TimeoutError"))


class BackendErrors(CustomLogger):
    """The proxy-side behaviour inferbook adds to LiteLLM."""

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> Any:
        if guardrail_unreachable(original_exception):
            return HTTPException(status_code=503, detail={"error": (
                "the PII guardrail's Presidio service is not reachable, so the prompt was not sent to any model "
                "(the guardrail fails closed); the gateway is up. Retry shortly, or check the guardrails layer "
                "(presidio-analyzer and presidio-anonymizer)")})
        if backend_unreachable(original_exception):
            model = request_data.get("model", "?")
            provider = getattr(original_exception, "llm_provider", "") or "the model server"
            return HTTPException(status_code=503, detail={"error": (
                f"the model server behind '{model}' ({'vLLM' if 'vllm' in provider else provider}) is not reachable; "
                "the gateway is up. Retry shortly: the server is restarting or scaled to zero")})
        return None


    async def async_post_mcp_tool_call_hook(self, kwargs: dict, response_obj: Any, start_time: Any,
                                            end_time: Any) -> Any:
        return name_unreachable_mcp_server(kwargs, response_obj)


#: How LiteLLM words a tool call it could not deliver: the exception's type, a colon, its message.
_EXCEPTION_TEXT = ("ConnectError:", "ConnectTimeout:", "RemoteProtocolError:", "ReadError:", "ClientConnectorError:",
                   "ConnectionRefusedError:", "OSError:")


def name_unreachable_mcp_server(kwargs: dict, response: Any) -> Any:
    """A tool call's result, rewritten to name the MCP server when the gateway could not reach it (else None).

    LiteLLM hands the hook the result's content (``mcp_tool_call_response``; a CallToolResult's ``content``
    elsewhere). Only a text that is LiteLLM's own rendering of a connection failure is rewritten; what the
    server itself returned (a path outside its repository) reaches the caller as the server wrote it.
    """
    parts = getattr(response, "mcp_tool_call_response", None)
    if parts is None:
        parts = getattr(response, "content", None) or []
    texts = [p for p in parts if isinstance(getattr(p, "text", None), str)]
    if len(texts) != 1 or not texts[0].text.startswith(_EXCEPTION_TEXT):
        return None
    call = kwargs.get("mcp_tool_call_metadata") or {}
    server = call.get("mcp_server_name") or "?"
    tool = call.get("name") or "?"
    texts[0].text = (f"the MCP server '{server}' is not reachable from the gateway (tool '{tool}' was not run: "
                     f"{texts[0].text}); the gateway is up. Retry once the server is back")
    return response


#: An MCP session id as LiteLLM's MCP server words it in a warning (``MCP session ID '<32 hex>' not found``).
_SESSION_ID = re.compile(r"(session ID ')([0-9a-f]{4})[0-9a-f]{12,}(')", re.IGNORECASE)


class RedactSessionIds(logging.Filter):
    """Keeps MCP session ids out of the proxy's log: LiteLLM's MCP server names each stale one it drops in full,
    a value that looks like a token (and the run's secret scan treats as one). Its first characters stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "session ID" in str(record.msg):
            record.msg = _SESSION_ID.sub(r"\1\2…\3", record.getMessage())
            record.args = ()
        return True


logging.getLogger("LiteLLM").addFilter(RedactSessionIds())

hook = BackendErrors()
