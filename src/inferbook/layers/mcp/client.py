"""An MCP client over streamable HTTP with a virtual key: what the agent and the chapter's checks use.

The ``mcp`` SDK's own client (``mcp.Client`` over ``streamable_http_client``), with the key as a bearer token,
wrapped into plain calls: :meth:`McpTools.list_tools` and :meth:`McpTools.call_tool`. Each call opens its own
session (the book's server is stateless; LiteLLM's /mcp opens one to the server per call anyway) on a thread
of its own, so the calls work inside a notebook, whose kernel already runs an event loop.

A refusal (no key, a revoked key, a key without the server) and an unreachable server come back as
:class:`McpRefused` / :class:`McpUnavailable` with what the gateway said, never as a hang: every request has
a deadline.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from ...errors import InferbookError

T = TypeVar("T")

#: Seconds one MCP request may take (a test run included) before the client gives up with an error.
DEFAULT_TIMEOUT = 60.0


class McpError(InferbookError):
    """An MCP request failed; the message says what the gateway or server answered."""


class McpRefused(McpError):
    """The gateway refused the caller: no key, a revoked key, or a key without the server (HTTP 401/403)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"refused (HTTP {status}): {message}")


class McpUnavailable(McpError):
    """The endpoint could not be reached, or did not answer within the deadline."""


@dataclass(frozen=True)
class ToolResult:
    """A tool call's outcome as MCP returns it: its text, and whether the server (or gateway) flagged an error."""

    text: str
    is_error: bool
    seconds: float


def _run(make: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run a coroutine to completion on a thread of its own (a notebook's kernel already runs a loop)."""
    import anyio

    async def bounded() -> T:
        with anyio.fail_after(timeout):
            return await make()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, bounded).result()


def _unwrap(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio task groups wrap what the transport raised)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class McpTools:
    """The tools an MCP endpoint offers one caller (``key``, sent as ``Authorization: Bearer``)."""

    def __init__(self, url: str, key: str | None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.key = key
        self.timeout = timeout

    async def _session(self, work: Callable[[Any], Awaitable[T]], failures: list[tuple[int, str]]) -> T:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        async def note(response: Any) -> None:
            # The SDK reports an HTTP error as a bare "Server returned an error response": keep what the gateway said.
            if response.status_code >= 400:
                await response.aread()
                failures.append((response.status_code, _detail(response)))

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        async with httpx2.AsyncClient(headers=headers, timeout=self.timeout, event_hooks={"response": [note]}) as http:
            async with Client(streamable_http_client(self.url, http_client=http), mode="legacy") as client:
                return await work(client)

    def _call(self, work: Callable[[Any], Awaitable[T]]) -> T:
        failures: list[tuple[int, str]] = []
        try:
            return _run(lambda: self._session(work, failures), self.timeout)
        except TimeoutError:
            raise McpUnavailable(f"{self.url} did not answer within {self.timeout:.0f} s") from None
        except BaseException as exc:  # noqa: B036 - task groups wrap the transport's error in a group
            leaf = _unwrap(exc)
            if isinstance(leaf, (KeyboardInterrupt, SystemExit)):
                raise
            if failures:
                status, detail = failures[0]
                if status in (401, 403):
                    raise McpRefused(status, detail) from None
                raise McpError(f"{self.url} answered HTTP {status}: {detail}") from None
            raise McpUnavailable(f"{self.url}: {type(leaf).__name__}: {leaf}") from None

    def list_tools(self) -> list[dict[str, Any]]:
        """The tools this caller may use, in the OpenAI tool format (name, description, JSON-schema parameters)."""
        async def work(client: Any) -> Any:
            return await client.list_tools()

        listed = self._call(work)
        return [{"type": "function", "function": {
            "name": tool.name, "description": tool.description or "",
            "parameters": dict(tool.input_schema or {"type": "object", "properties": {}})}} for tool in listed.tools]

    def call_tool(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Call one tool; a tool's own refusal (a path outside the repository) is a result with ``is_error``."""
        async def work(client: Any) -> Any:
            return await client.call_tool(name, arguments)

        started = time.perf_counter()
        result = self._call(work)
        text = "\n".join(getattr(part, "text", "") for part in result.content or [])
        return ToolResult(text, bool(result.is_error), round(time.perf_counter() - started, 3))


def _detail(response: Any) -> str:
    """What an HTTP error response says, shortly (LiteLLM answers JSON with ``error`` or ``detail``)."""
    try:
        text = response.text if hasattr(response, "text") else ""
    except Exception:  # noqa: BLE001 - a streamed body may not be readable any more
        text = ""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200] or "(no body)"
    if isinstance(body, dict):
        found = body.get("error") or body.get("detail") or body
        if isinstance(found, dict):
            found = found.get("message") or found
        return str(found)[:300]
    return str(body)[:300]
