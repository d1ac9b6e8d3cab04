"""The scaling signals of a live vLLM under a short load: its /metrics sampled while concurrent requests run.

The chapter computes, from these samples, the replica count the ScaledObject would ask for (:mod:`.scaling`). The
load goes straight to vLLM through the OpenAI client (the gateway's limits and the router's choices are other
chapters' business); a sampler thread reads ``/metrics`` every ``interval_s`` until the load is done, with one
sample before the first request and one after the last.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from ... import smoke
from ...errors import InferbookError
from .manifests import KV_CACHE, RUNNING, WAITING

#: What one sample holds, in the table's order.
COLUMNS = ("t_s", "waiting", "running", "kv_cache")
PROMPT = "In one sentence, why does a queue of waiting requests tell an autoscaler more than GPU utilisation?"


class SamplingError(InferbookError):
    """The server's metrics could not be read, or the load failed."""


@dataclass(frozen=True)
class Load:
    """The load the chapter puts on the server: ``requests`` chat calls, ``concurrency`` at a time."""

    requests: int = 8
    concurrency: int = 8
    max_tokens: int = 16
    interval_s: float = 0.5


@dataclass
class Sampled:
    """The samples (one row per read of /metrics) and the load's outcome."""

    samples: pd.DataFrame
    ok: int
    failed: int
    seconds: float
    errors: list[str]


def read_signals(base: str, timeout: float = 5.0) -> dict[str, float]:
    """The three signals from ``base/metrics``, each summed over its label sets (one server: its own value)."""
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError as exc:
        raise SamplingError(f"could not read {base}/metrics ({exc}). Fix: check the serving layer is up "
                            "(`inferbook status`), or run the serving chapter first") from exc
    return {"waiting": smoke.sample_total(text, WAITING), "running": smoke.sample_total(text, RUNNING),
            "kv_cache": smoke.sample_total(text, KV_CACHE)}


def sample_under_load(base: str, url: str, api_key: str, model: str, load: Load = Load(),
                      read: Callable[[str], dict[str, float]] = read_signals) -> Sampled:
    """Run ``load`` against ``url`` while sampling ``base``'s metrics; every sample, and how the requests fared."""
    if load.requests < 1 or load.concurrency < 1 or load.interval_s <= 0:
        raise SamplingError(f"a load of {load.requests} request(s), {load.concurrency} at a time, sampled every "
                            f"{load.interval_s} s cannot run. Fix: positive numbers")
    client = smoke.client(url, api_key, timeout=120)
    rows: list[dict[str, Any]] = []
    done = threading.Event()
    started = time.monotonic()

    def take() -> None:
        rows.append({"t_s": round(time.monotonic() - started, 2), **read(base)})

    def sampler() -> None:
        while not done.is_set():
            take()
            done.wait(load.interval_s)  # wakes at once when the load ends

    def one(i: int) -> str | None:
        try:
            call = smoke.chat(client, model, f"{PROMPT} ({i})", max_tokens=load.max_tokens)
        except Exception as exc:  # noqa: BLE001 - a failed request is counted and shown, not raised mid-load
            return f"{type(exc).__name__}: {exc}"
        return None if call.ok else "empty answer"

    thread = threading.Thread(target=sampler, name="autoscaling-sampler", daemon=True)
    thread.start()
    try:
        with ThreadPoolExecutor(max_workers=load.concurrency) as pool:
            outcomes = list(pool.map(one, range(load.requests)))
    finally:
        done.set()
        thread.join(timeout=30)
    seconds = time.monotonic() - started
    take()  # after the last answer: the queue has drained
    errors = [o for o in outcomes if o]
    frame = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values("t_s").reset_index(drop=True)
    return Sampled(frame, ok=len(outcomes) - len(errors), failed=len(errors), seconds=round(seconds, 1),
                   errors=errors)
