"""What the gateway adds to a request: the same one-token call, straight to vLLM and through LiteLLM.

A one-token completion keeps the model's own time small and constant, so the
difference between the two paths is mostly the gateway's: authentication, the
key's budget and rate checks, routing, and the spend it books. The calls
alternate between the paths so that a slow moment of the machine hits both.
"""

from __future__ import annotations

import statistics
import time

import openai
import pandas as pd


def _once(client: openai.OpenAI, model: str) -> float:
    started = time.perf_counter()
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say OK."}], max_tokens=1,
                                   temperature=0)
    return time.perf_counter() - started


def measure(direct: openai.OpenAI, direct_model: str, gateway: openai.OpenAI, alias: str,
            requests: int = 10) -> pd.DataFrame:
    """Latency of ``requests`` one-token calls per path (after one warm-up each), in milliseconds."""
    _once(direct, direct_model), _once(gateway, alias)  # warm-up: connections, caches
    timings: dict[str, list[float]] = {"vLLM directly": [], "through the gateway": []}
    for _ in range(requests):
        timings["vLLM directly"].append(_once(direct, direct_model))
        timings["through the gateway"].append(_once(gateway, alias))
    rows = []
    for path, values in timings.items():
        ms = sorted(v * 1000 for v in values)
        rows.append({"path": path, "requests": len(ms), "median_ms": round(statistics.median(ms), 1),
                     "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 1), "min_ms": round(ms[0], 1)})
    table = pd.DataFrame(rows).set_index("path")
    table["added_median_ms"] = (table["median_ms"] - table.loc["vLLM directly", "median_ms"]).round(1)
    return table
