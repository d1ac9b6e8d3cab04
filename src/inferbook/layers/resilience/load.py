"""A load run through the gateway: concurrent streams for a while, every error counted, spend checked against usage.

Faults are one half of staying up; the other is holding steady under load. Streams run closed-loop (each
starts its next request when the last one ends) with a fresh key; each stream asks for its usage, and the
sum of usage times the alias' prices is what the gateway's ledger must book for that key, to the micro-dollar.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import openai
import pandas as pd

from ... import smoke, waiting
from ...say import Say
from ..llm_gateway.admin import Admin


@dataclass
class LoadResult:
    """What the clients saw and what the ledger booked."""

    streams: int
    seconds: float
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    expected_usd: float = 0.0
    booked_usd: float = 0.0

    @property
    def spend_matches(self) -> bool:
        return abs(self.booked_usd - self.expected_usd) <= 1e-6

    def table(self) -> pd.DataFrame:
        rows = [("concurrent streams", self.streams), ("duration", f"{self.seconds:.0f} s"),
                ("requests completed", self.requests),
                ("errors", ", ".join(f"{k}: {v}" for k, v in self.errors.items()) or "0"),
                ("tokens in / out", f"{self.prompt_tokens} / {self.completion_tokens}"),
                ("spend from usage", f"{self.expected_usd:.8f} USD"),
                ("spend booked", f"{self.booked_usd:.8f} USD")]
        return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")


def run_load(url: str, key: str, model: str, prices: tuple[float, float], streams: int, seconds: float,
             admin: Admin, alias: str, say: Say = print, max_tokens: int = 16) -> LoadResult:
    """``streams`` closed-loop streams for ``seconds``; then wait for the ledger to book the key's spend."""
    result = LoadResult(streams, seconds)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    client = smoke.client(url, key, timeout=120).with_options(max_retries=0)

    def worker(index: int) -> None:
        while time.monotonic() < deadline:
            try:
                usage = None
                for chunk in client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": f"Stream {index}: name a prime number."}],
                        max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True}):
                    usage = chunk.usage or usage
                with lock:
                    result.requests += 1
                    if usage is None:
                        result.errors["no usage reported"] += 1
                    else:
                        result.prompt_tokens += usage.prompt_tokens
                        result.completion_tokens += usage.completion_tokens
            except openai.APIStatusError as exc:
                with lock:
                    result.errors[f"HTTP {exc.status_code}"] += 1
            except (openai.APIError, OSError) as exc:
                with lock:
                    result.errors[type(exc).__name__] += 1

    say(f"resilience: {streams} streams for {seconds:.0f} s through the gateway")
    with ThreadPoolExecutor(max_workers=streams) as pool:
        list(pool.map(worker, range(streams)))
    result.expected_usd = result.prompt_tokens * prices[0] + result.completion_tokens * prices[1]
    result.booked_usd = booked_spend(admin, alias, result.expected_usd, say)
    say(f"resilience: {result.requests} requests, {sum(result.errors.values())} errors; "
        f"booked {result.booked_usd:.8f} USD for {result.expected_usd:.8f} USD of usage")
    return result


def booked_spend(admin: Admin, alias: str, expected: float, say: Say, timeout: float = 120) -> float:
    """The key's booked spend once it equals ``expected`` (to the micro-dollar), or whatever it is at ``timeout``.

    LiteLLM writes spend to its ledger in batches every few seconds and has no change notification: poll.
    """
    booked = 0.0

    def equal() -> str | None:
        nonlocal booked
        booked = next((k["spend_usd"] or 0.0 for k in admin.keys() if k["alias"] == alias), 0.0)
        return None if abs(booked - expected) <= 1e-6 else f"{booked:.8f} of {expected:.8f} USD booked"

    with contextlib.suppress(waiting.WaitTimedOut):  # whatever it is at the timeout: the chapter's row compares
        waiting.wait_for(equal, timeout=timeout, what="the ledger to book the load's spend", interval=5,
                         say=lambda line: say(f"resilience: {line}"))
    return booked
