"""A test double of the model server: an OpenAI-compatible upstream that answers at once.

The gateway's own cost is hidden behind the model's time on a real vLLM (and, on a small machine, behind
the CPU the two share). Pointed at this stub instead, the proxy does all its work (authentication, the
key's budget and rate checks, routing, the request to the upstream, spend booking, metrics) while the
upstream's share of a call shrinks to about a millisecond, so what remains is the proxy's.

It is NOT a model: every answer is the word ``ok`` repeated ``max_tokens`` times (16 when none is asked),
with a usage block counting prompt words as tokens, so the gateway prices and books each call like a real
one. It ignores authentication (the gateway sends vLLM's key). Its ``/metrics`` has the one vLLM counter
the gateway's checks read (``vllm:request_success_total``), so they can prove a refused call never reached
it. Standard library only: it runs in the project's interpreter, in its own process (:class:`StubProcess`)
so that a measuring client in the same interpreter never competes with it for the GIL.

``delay_ms`` (before the first byte) and ``token_interval_ms`` (between streamed tokens) let it stand in
for a model's time when a measurement wants the upstream, not the proxy, to be the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from ... import waiting
from ...errors import InferbookError
from ...say import silent

#: The answer's one token, repeated.
TOKEN = "ok"
#: Tokens answered when the request names no max_tokens.
DEFAULT_TOKENS = 16
#: Never answer more than this, whatever is asked.
MAX_TOKENS = 4096
ROUTES = ("/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions")


class StubError(InferbookError):
    """The stub upstream would not start."""


def prompt_tokens(request: dict[str, Any]) -> int:
    """Words of the prompt (or of every message's text), counted as tokens: enough for the gateway to price."""
    if "messages" in request:
        texts = []
        for message in request.get("messages") or []:
            content = message.get("content")
            if isinstance(content, list):  # content parts
                texts.extend(part.get("text", "") for part in content if isinstance(part, dict))
            elif content:
                texts.append(str(content))
        text = " ".join(texts)
    else:
        prompt = request.get("prompt", "")
        text = " ".join(prompt) if isinstance(prompt, list) else str(prompt)
    return max(1, len(text.split()))


def answer_tokens(request: dict[str, Any]) -> int:
    """How many tokens to answer: the request's max_tokens (or max_completion_tokens), bounded."""
    asked = request.get("max_tokens") or request.get("max_completion_tokens") or DEFAULT_TOKENS
    return max(1, min(int(asked), MAX_TOKENS))


def _usage(request: dict[str, Any], completion: int) -> dict[str, int]:
    prompt = prompt_tokens(request)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(request: dict[str, Any], chat: bool, ident: str = "stub-0", created: int = 0) -> dict[str, Any]:
    """The whole (non-streamed) answer, as vLLM shapes it."""
    tokens = answer_tokens(request)
    text = " ".join([TOKEN] * tokens)
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
    return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": request.get("model", "stub"), "choices": [choice], "usage": _usage(request, tokens)}


def stream_events(request: dict[str, Any], chat: bool, ident: str = "stub-0", created: int = 0) -> Iterator[bytes]:
    """The streamed answer as server-sent events: a chunk per token, a usage chunk when asked, ``[DONE]``."""
    tokens = answer_tokens(request)
    model = request.get("model", "stub")
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        chunk = {"id": ident, "object": kind, "created": created, "model": model, "choices": choices}
        if usage is not None:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk)}\n\n".encode()

    for i in range(tokens):
        last = i == tokens - 1
        piece = TOKEN if i == 0 else f" {TOKEN}"
        if chat:
            delta: dict[str, Any] = {"content": piece, **({"role": "assistant"} if i == 0 else {})}
            choice = {"index": 0, "delta": delta, "finish_reason": "length" if last else None}
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": "length" if last else None}
        yield event([choice])
    if (request.get("stream_options") or {}).get("include_usage"):
        yield event([], _usage(request, tokens))
    yield b"data: [DONE]\n\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the gateway's and the client's pools expect
    disable_nagle_algorithm = True  # a small answer goes out at once, not after a delayed ACK (40 ms)
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: a log line per call costs time
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "stub"}]})
        elif self.path in ("/health", "/ping"):
            self._send(200, {"status": "ok"})
        elif self.path == "/metrics":
            data = f'vllm:request_success_total{{model_name="stub"}} {self.server.requests}\n'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, {"error": {"message": "the body is not JSON"}})
            return
        path = self.path.split("?")[0]
        if path not in ROUTES:
            self._send(404, {"error": {"message": f"no route {path}"}})
            return
        self.server.count()
        chat = path.endswith("chat/completions")
        if self.server.delay_ms:
            time.sleep(self.server.delay_ms / 1000)
        if not request.get("stream"):
            self._send(200, completion_body(request, chat, created=int(time.time())))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, data in enumerate(stream_events(request, chat, created=int(time.time()))):
            if i and self.server.token_interval_ms:
                time.sleep(self.server.token_interval_ms / 1000)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, host: str, port: int, delay_ms: float, token_interval_ms: float,
                 parent: int | None = None) -> None:
        super().__init__((host, port), _Handler)
        self.delay_ms = delay_ms
        self.token_interval_ms = token_interval_ms
        self.parent = parent
        self.requests = 0
        self._lock = threading.Lock()

    def service_actions(self) -> None:
        """Between polls: a stub whose parent died (killed, so it could not stop its child) ends too."""
        if self.parent is not None and os.getppid() != self.parent:
            raise SystemExit(0)

    def count(self) -> None:
        with self._lock:
            self.requests += 1


class StubUpstream:
    """The stub in a thread of this process (tests; a measurement uses :class:`StubProcess`)."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", delay_ms: float = 0.0,
                 token_interval_ms: float = 0.0) -> None:
        self._server = _Server(host, port, delay_ms, token_interval_ms)
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="stub-upstream", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> int:
        """Completion requests answered so far."""
        return self._server.requests

    def __enter__(self) -> "StubUpstream":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class StubProcess:
    """The stub as a child process on ``port`` (``python -m inferbook.layers.benchmarks.stub_upstream``)."""

    def __init__(self, port: int, host: str = "127.0.0.1", delay_ms: float = 0.0,
                 token_interval_ms: float = 0.0) -> None:
        self.host, self.port = host, port
        self.argv = [sys.executable, "-m", __name__, f"--host={host}", f"--port={port}", f"--delay-ms={delay_ms}",
                     f"--token-interval-ms={token_interval_ms}", f"--parent={os.getpid()}"]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> "StubProcess":
        if _answers(self.url):
            raise StubError(f"something already answers at {self.url}. Fix: choose another port for the stub upstream")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen(self.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proc = self._proc

        def give_up(err: str) -> StubError:
            """Stop the stub; the error to raise."""
            self.__exit__()
            return StubError(f"the stub upstream did not start on {self.url}: {err}. Fix: free the port")

        def answers() -> str | None:  # readiness: it answers /v1/models
            if _answers(self.url):
                return None
            if proc.poll() is not None:
                raise give_up(proc.stderr.read().decode()[-800:])
            return "no answer on /v1/models yet"

        try:
            waiting.wait_for(answers, timeout=30, what="the stub upstream", say=silent, interval=0.05)
        except waiting.WaitTimedOut:
            raise give_up("timed out") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--token-interval-ms", type=float, default=0.0)
    parser.add_argument("--parent", type=int, help="end when this process (the one that started the stub) ends")
    args = parser.parse_args(argv)
    server = _Server(args.host, args.port, args.delay_ms, args.token_interval_ms, args.parent)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
