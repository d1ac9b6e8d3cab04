"""The closed-loop sweep: N clients, each sending its next streamed request when the last one ends.

Per concurrency level, ``concurrency`` workers share one OpenAI client (no retries: a retried request
would hide an error) and send ``/v1/completions`` requests, streamed with usage in the last chunk, each
with a fresh prompt of the exact input length and ``max_tokens`` with ``ignore_eos`` for the exact output
length. A worker starts a request only before the level's deadline; requests still running at the
deadline are let finish (drained) and counted with their latencies, so nothing a server was asked is
lost. Throughput is measured over the level's window only (tokens and completions that arrived before
the deadline, divided by the window), so the drain's falling concurrency does not dilute it.

Per request: time to first token (from sending to the first chunk with text), inter-token latency (the
time from the first to the last text chunk over the output tokens less one, GuideLLM's definition),
end-to-end latency, the prompt and output tokens the server reported. A failed request is counted under
its kind (``HTTP 500``, ``stream error``, ``stream ended early``, the exception's class) and shown; it is
never dropped, and never part of a latency.

The clock is a parameter: the tests drive the harness on a virtual clock in lockstep with a stub server,
so the bookkeeping is checked to the exact figure without reading the wall clock.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import openai

from . import stats
from .workload import Shape, Tokenizer, exact_prompt

Clock = Callable[[], float]
#: Called after each request of a level: (concurrency, outcome, seconds into the level).
OnRequest = Callable[[int, "Outcome", float], None]
ENDPOINT = "/v1/completions"


@dataclass
class Outcome:
    """One request: when it started (seconds into its level), its latencies, its tokens, or its error."""

    concurrency: int
    start_s: float
    ttft_s: float | None = None
    itl_s: float | None = None
    e2e_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    #: Seconds into the level at which each text chunk arrived (for the window's throughput).
    token_times: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self) -> dict[str, Any]:
        """The request as the JSON artefact keeps it (milliseconds, no prompt text, no key)."""
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {"concurrency": self.concurrency, "start_s": round(self.start_s, 4), "ttft_ms": ms(self.ttft_s),
                "itl_ms": ms(self.itl_s), "e2e_ms": ms(self.e2e_s), "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens, "error": self.error}


def request_once(client: openai.OpenAI, model: str, prompt: str, output_tokens: int, clock: Clock,
                 origin: float, concurrency: int) -> Outcome:
    """Send one streamed completion and time it; every failure is an :class:`Outcome` with its kind."""
    start = clock()
    outcome = Outcome(concurrency, start - origin)
    usage = None
    finished = False
    try:
        with client.completions.create(model=model, prompt=prompt, max_tokens=output_tokens, temperature=0,
                                       stream=True, stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True}) as stream:  # closed even on a failure
            for chunk in stream:
                now = clock()
                if chunk.usage:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.text:
                        outcome.token_times.append(now - origin)
                    if choice.finish_reason:
                        finished = True
        end = clock()
    except openai.APIStatusError as exc:
        outcome.error = f"HTTP {exc.status_code}"
        return outcome
    except openai.APIError as exc:  # an error event inside the stream, a refused or timed-out connection
        outcome.error = "stream error" if type(exc) is openai.APIError else type(exc).__name__
        return outcome
    except Exception as exc:  # noqa: BLE001 - anything else the transport raises is still a counted failure
        outcome.error = type(exc).__name__
        return outcome
    if not finished or not outcome.token_times:
        outcome.error = "stream ended early"
        return outcome
    outcome.prompt_tokens = usage.prompt_tokens if usage else None
    outcome.output_tokens = usage.completion_tokens if usage else len(outcome.token_times)
    first, last = outcome.token_times[0] + origin, outcome.token_times[-1] + origin
    outcome.ttft_s = first - start
    outcome.e2e_s = end - start
    if outcome.output_tokens and outcome.output_tokens > 1:
        outcome.itl_s = (last - first) / (outcome.output_tokens - 1)
    return outcome


@dataclass
class Prompts:
    """Unique prompts of the shape's input length, numbered from ``first_seed`` (thread-safe)."""

    tokenizer: Tokenizer
    tokens: int
    first_seed: int
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> str:
        with self._lock:
            seed = self.first_seed + self._next
            self._next += 1
        return exact_prompt(self.tokenizer, self.tokens, seed)


def run_level(client: openai.OpenAI, model: str, prompts: Prompts, concurrency: int, shape: Shape,
              clock: Clock = time.perf_counter, on_request: OnRequest | None = None) -> "Level":
    """One closed-loop level: ``concurrency`` workers for ``shape.duration_s``, then the drain."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    origin = clock()
    deadline = origin + shape.duration_s

    def worker() -> None:
        while True:
            with lock:
                if clock() >= deadline:
                    return
            outcome = request_once(client, model, prompts.take(), shape.output_tokens, clock, origin, concurrency)
            with lock:
                outcomes.append(outcome)
                if on_request is not None:
                    on_request(concurrency, outcome, clock() - origin)

    workers = [threading.Thread(target=worker, name=f"bench-c{concurrency}-{i}", daemon=True)
               for i in range(concurrency)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    drained = clock() - origin
    return Level.of(concurrency, shape, sorted(outcomes, key=lambda o: o.start_s), drained)


@dataclass
class Level:
    """One level's figures: latencies (ms) by percentile, window throughput, requests, errors by kind."""

    concurrency: int
    window_s: float
    drained_s: float
    requests: int
    succeeded: int
    errors: int
    error_kinds: dict[str, int]
    inexact: int  # answers whose reported tokens differ from the shape (in or out)
    output_tokens_per_s: float
    requests_per_s: float
    ttft_ms: dict[str, float | None]
    itl_ms: dict[str, float | None]
    e2e_ms: dict[str, float | None]
    #: Requests cut off at the deadline and left out of every figure (GuideLLM's ``incomplete``; ours drains: 0).
    cancelled: int = 0
    outcomes: list[Outcome] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, concurrency: int, shape: Shape, outcomes: list[Outcome], drained_s: float) -> "Level":
        window = shape.duration_s
        good = [o for o in outcomes if o.ok]
        kinds = Counter(o.error for o in outcomes if o.error)
        in_window = sum(_tokens_before(o, window) for o in good)
        completed = sum(1 for o in good if o.start_s + (o.e2e_s or 0) <= window)
        inexact = sum(1 for o in good if o.output_tokens != shape.output_tokens
                      or (o.prompt_tokens is not None and o.prompt_tokens != shape.input_tokens))

        def ms(values: list[float]) -> dict[str, float | None]:
            return {k: (None if v is None else round(v * 1000, 3)) for k, v in stats.summary(values).items()}

        return cls(concurrency, window, round(drained_s, 3), len(outcomes), len(good), len(outcomes) - len(good),
                   dict(sorted(kinds.items())), inexact, round(in_window / window, 3), round(completed / window, 4),
                   ms([o.ttft_s for o in good if o.ttft_s is not None]),
                   ms([o.itl_s for o in good if o.itl_s is not None]),
                   ms([o.e2e_s for o in good if o.e2e_s is not None]), outcomes=outcomes)

    def record(self) -> dict[str, Any]:
        """The level as the JSON artefact keeps it (its requests are kept beside it, not here)."""
        return {"concurrency": self.concurrency, "window_s": self.window_s, "drained_s": self.drained_s,
                "requests": self.requests, "succeeded": self.succeeded, "errors": self.errors,
                "error_kinds": self.error_kinds, "inexact": self.inexact, "cancelled": self.cancelled,
                "output_tokens_per_s": self.output_tokens_per_s, "requests_per_s": self.requests_per_s,
                "ttft_ms": self.ttft_ms, "itl_ms": self.itl_ms, "e2e_ms": self.e2e_ms}


def window_tokens(level: Level) -> float:
    """The output tokens that arrived within a level's window: what its output tokens/s is made of."""
    return sum(_tokens_before(o, level.window_s) for o in level.outcomes if o.ok)


def _tokens_before(outcome: Outcome, window: float) -> float:
    """Output tokens that arrived within the window: all of them, or the arrived chunks' share of them."""
    if not outcome.token_times:
        return 0
    arrived = sum(1 for t in outcome.token_times if t <= window)
    return (outcome.output_tokens or len(outcome.token_times)) * arrived / len(outcome.token_times)


def new_seed() -> int:
    """A fresh first prompt number: a sweep against a server that ran an earlier one must not hit its cache."""
    return secrets.randbelow(10**9) * 1000
