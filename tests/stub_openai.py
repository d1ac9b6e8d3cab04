"""StubOpenAI: a TEST DOUBLE of an OpenAI-compatible streaming server (vLLM's ``/v1/completions``).

The benchmark harness is developed and tested against this stub, never against a live model: it answers
in microseconds, on a free loopback port, and it does exactly what a test tells it to. What it speaks,
as vLLM does:

- ``GET /health`` (200, empty) and ``GET /v1/models`` (the one served model);
- ``POST /v1/completions``, streamed (``stream: true``, Server-Sent Events: one chunk per token with
  ``choices[0].text``, ``finish_reason: "length"`` on the last, a usage chunk with empty ``choices`` when
  ``stream_options.include_usage`` asks for it, usage in every chunk with ``continuous_usage_stats``,
  then ``data: [DONE]``) or not; it generates exactly ``max_tokens`` tokens, as vLLM does with
  ``ignore_eos: true``, and one token without it;
- a bearer key: any other key is a 401 with an OpenAI error body.

What a test controls (:class:`Behaviour`):

- ``fail_every=k``: every k-th completion request is refused with HTTP 500 before anything streams;
- ``error_event_every=k``: every k-th streams one token, then an ``error`` event (vLLM's mid-stream error);
- ``cut_every=k``: every k-th streams one token, then the connection closes with no ``[DONE]``;
- ``ttft_s`` and ``itl_s``: the time before the first token and between tokens, slept in real time, or
  advanced on a :class:`StepClock` in lockstep with the harness, so that a test can assert exact
  figures without reading the wall clock;
- ``tokenizer``: a ``tokenizer.json`` to count prompt tokens with (whitespace words otherwise).

Every request's body is kept (``requests``), so a test can see what the harness sent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class StepClock:
    """Virtual time shared by the stub and the harness under test (the harness's ``clock``).

    The stub advances it before each token and then waits until the harness has read it, so each token's
    arrival is stamped with exactly the time the stub meant. Good for one stream at a time.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0
        self._cond = threading.Condition()

    def __call__(self) -> float:
        with self._cond:
            self.reads += 1
            self._cond.notify_all()
            return self.now

    def advance(self, seconds: float) -> int:
        """Move time on; returns the read count to wait past (see :meth:`wait_for_read`)."""
        with self._cond:
            self.now += seconds
            return self.reads

    def wait_for_read(self, since: int, timeout: float = 10) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.reads > since, timeout)


@dataclass
class Behaviour:
    key: str = "stub-key"
    model: str = "stub-model"
    ttft_s: float = 0.0
    itl_s: float = 0.0
    fail_every: int = 0
    error_event_every: int = 0
    cut_every: int = 0
    tokenizer: Path | None = None
    clock: StepClock | None = None


@dataclass
class StubOpenAI:
    """The stub server: ``with StubOpenAI(Behaviour(...)) as stub: stub.url`` (``.../v1``)."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._tokenizer = None
        if self.behaviour.tokenizer is not None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(self.behaviour.tokenizer))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.base}/v1"

    def __enter__(self) -> "StubOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count_tokens(self, prompt: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(prompt, add_special_tokens=True).ids)
        return len(prompt.split())

    def take_number(self, body: dict[str, Any], headers: dict[str, str]) -> int:
        with self._lock:
            self._count += 1
            self.requests.append(body)
            self.headers.append(headers)
            return self._count

    def wait(self, seconds: float) -> int | None:
        """Let ``seconds`` pass before the next token: advance the step clock, or sleep."""
        clock = self.behaviour.clock
        if clock is not None:
            return clock.advance(seconds)
        if seconds:
            time.sleep(seconds)
        return None


def _every(k: int, n: int) -> bool:
    return k > 0 and n % k == 0


def _handler(stub: StubOpenAI) -> type[BaseHTTPRequestHandler]:
    b = stub.behaviour

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # a streamed answer ends when the connection closes

        def log_message(self, *args: Any) -> None:  # quiet: the test output is the test's
            pass

        def _json(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._json(status, {"error": {"message": message, "type": kind, "code": status}})

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {b.key}":
                return True
            self._error(401, "stub: wrong or missing key", "authentication_error")
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/health":
                self._json(200, {})
            elif self.path == "/v1/models" and self._authorised():
                self._json(200, {"object": "list", "data": [{"id": b.model, "object": "model", "owned_by": "stub"}]})
            elif self.path != "/v1/models":
                self._error(404, f"stub: no route {self.path}", "not_found")

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/v1/completions":
                self._error(404, f"stub: no route {self.path}", "not_found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            number = stub.take_number(body, dict(self.headers))
            if not self._authorised():
                return
            if body.get("model") != b.model:
                self._error(404, f"stub: the model {body.get('model')!r} does not exist", "not_found")
                return
            if _every(b.fail_every, number):
                self._error(500, "stub: a failure the test asked for", "server_error")
                return
            prompt = body.get("prompt", "")
            prompt_tokens = stub.count_tokens(prompt if isinstance(prompt, str) else " ".join(map(str, prompt)))
            tokens = int(body.get("max_tokens") or 16) if body.get("ignore_eos") else 1
            if body.get("stream"):
                try:
                    self._stream(number, body, prompt_tokens, tokens)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away mid-stream (a harness cancels at its deadline): not the stub's error
            else:
                for i in range(tokens):
                    stub.wait(b.ttft_s if i == 0 else b.itl_s)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                         "total_tokens": prompt_tokens + tokens}
                self._json(200, {"id": f"cmpl-{number}", "object": "text_completion", "model": b.model,
                                 "choices": [{"index": 0, "text": " tok" * tokens, "finish_reason": "length"}],
                                 "usage": usage})

        def _send(self, data: Any) -> None:
            line = data if isinstance(data, str) else json.dumps(data)
            self.wfile.write(f"data: {line}\n\n".encode())
            self.wfile.flush()

        def _stream(self, number: int, body: dict[str, Any], prompt_tokens: int, tokens: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            options = body.get("stream_options") or {}
            continuous = bool(options.get("continuous_usage_stats"))
            for i in range(tokens):
                mark = stub.wait(b.ttft_s if i == 0 else b.itl_s)
                last = i == tokens - 1
                chunk: dict[str, Any] = {
                    "id": f"cmpl-{number}", "object": "text_completion", "created": 0, "model": b.model,
                    "choices": [{"index": 0, "text": " tok", "logprobs": None,
                                 "finish_reason": "length" if last else None}]}
                if continuous:
                    chunk["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": i + 1,
                                      "total_tokens": prompt_tokens + i + 1}
                self._send(chunk)
                if mark is not None and b.clock is not None:
                    b.clock.wait_for_read(mark)
                if i == 0 and _every(b.error_event_every, number):
                    self._send({"error": {"message": "stub: the engine failed mid-stream", "type": "server_error",
                                          "code": 500}})
                    return
                if i == 0 and _every(b.cut_every, number):
                    return  # the connection closes: no finish_reason, no usage, no [DONE]
            if options.get("include_usage"):
                self._send({"id": f"cmpl-{number}", "object": "text_completion", "created": 0, "model": b.model,
                            "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                                                     "total_tokens": prompt_tokens + tokens}})
            self._send("[DONE]")

    return Handler
