"""GuideLLM, the reference harness of ADR-0032: the same server, the same load shape, its report read into ours.

GuideLLM 0.8.1 runs from its own pinned environment (``envs/guidellm.txt``, with the CPU torch), offline:
its synthetic text data, the served model's local tokenizer folder, the model hub switched off
(``HF_HUB_OFFLINE``). It is given one scenario file (no secret in it): the OpenAI HTTP backend on
``/v1/completions``, the ``concurrent`` profile with our levels as its streams, a ``max_duration``
constraint of our per-level duration, synthetic prompts and outputs of our token counts, a seed. It sends
``ignore_eos`` and streams with usage, as ours does.

How it authenticates: its backend takes an ``api_key`` and sends it as ``Authorization: Bearer``, the
header vLLM's ``--api-key`` and LiteLLM's virtual keys both read. The key is handed to it in the
environment (``GUIDELLM__SPEC__BACKEND__API_KEY``, its settings' prefix), never on the command line or in
the scenario file, and its report shows it masked.

Its report is read twice: as GuideLLM reports it (its percentiles are the lower, non-interpolated kind,
its rates are over the benchmark's window, and requests still running at the deadline are cancelled and
left out), and recomputed from its own per-request timings with our percentile method, so that a
difference between the harnesses can be told apart from a difference in arithmetic.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ... import envs
from ...errors import InferbookError
from ...say import Say
from . import stats
from .result import Sweep
from .sweep import Level, Outcome
from .workload import Shape

VERSION = "0.8.1"
HARNESS = f"guidellm {VERSION}"
LOAD = "closed-loop (GuideLLM's concurrent profile), requests running at the deadline cancelled"
_PROGRESS = re.compile(r"Benchmark \d+ \((?P<strategy>[^)]+)\): (?P<state>completed|started)\b(?P<rest>.*)")


class GuideLLMFailed(InferbookError):
    """GuideLLM exited with an error or wrote no report."""


def scenario(base: str, model: str, shape: Shape, tokenizer: str, seed: int, out: Path) -> dict[str, Any]:
    """GuideLLM's scenario for one sweep: our levels, durations, token counts and endpoint (no key)."""
    return {"spec": {
        "backend": {"kind": "openai_http", "target": base, "model": model, "request_format": "/v1/completions"},
        "profile": {"kind": "concurrent", "streams": list(shape.concurrency)},
        "constraints": [{"kind": "max_duration", "seconds": shape.duration_s}],
        "tokenizer": {"kind": "huggingface_auto", "model": tokenizer},
        "data": [{"kind": "synthetic_text", "prompt_tokens": shape.input_tokens,
                  "output_tokens": shape.output_tokens}],
        "seed": {"kind": "static", "value": seed},
        "outputs": [{"kind": "json", "path": str(out)}],
    }}


def environment(key: str, offline: bool, max_worker_processes: int | None) -> dict[str, str]:
    """The process environment: ours without any GUIDELLM setting, the key, the hub off for a local tokenizer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUIDELLM")}
    env["GUIDELLM__SPEC__BACKEND__API_KEY"] = key
    if offline:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if max_worker_processes:
        env["GUIDELLM__MAX_WORKER_PROCESSES"] = str(max_worker_processes)
    return env


def run(base: str, model: str, key: str, shape: Shape, tokenizer: Path | str, out: Path, *, seed: int,
        cache_dir: Path, say: Say = print, max_worker_processes: int | None = None,
        timeout: float | None = None, python: Path | None = None) -> dict[str, Any]:
    """Run GuideLLM's sweep against ``base`` and return its report (also left at ``out``).

    ``tokenizer`` is the model's local folder (the hub is then switched off) or a hub id.
    """
    python = python or envs.GUIDELLM.ensure(cache_dir, say)
    out = out.resolve()  # GuideLLM runs in a folder of its own: a relative path would land there
    if isinstance(tokenizer, Path):
        tokenizer = tokenizer.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    offline = isinstance(tokenizer, Path)
    with tempfile.TemporaryDirectory(prefix="inferbook-guidellm-") as tmp:
        file = Path(tmp) / "scenario.json"
        file.write_text(json.dumps(scenario(base, model, shape, str(tokenizer), seed, out), indent=2))
        argv = [str(python.with_name("guidellm")), "run", "--scenario", str(file), "--disable-progress"]
        proc = subprocess.Popen(argv, cwd=tmp, env=environment(key, offline, max_worker_processes),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                tail = (tail + [line.rstrip()])[-30:]
                match = _PROGRESS.search(line)
                if match:
                    say(f"guidellm: {match['strategy']} {match['state']}{match['rest']}".rstrip())
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise GuideLLMFailed(f"GuideLLM ran longer than {timeout:.0f} s and was stopped. Fix: shorten the "
                                 f"sweep (levels, duration) or raise the limit") from None
    if code != 0 or not out.is_file():
        shown = "\n".join(tail).replace(key, "***") if key else "\n".join(tail)
        raise GuideLLMFailed(f"GuideLLM exited with status {code} and {'wrote' if out.is_file() else 'no'} report; "
                             f"its last lines:\n{shown}\nFix: read the message above; a refused key is a 401")
    return json.loads(out.read_text(encoding="utf-8"))


def _error_kind(text: str | None) -> str:
    """GuideLLM's error text as one of our kinds: ``HTTP 500`` for a status error, else the exception's class."""
    if not text:
        return "error"
    status = re.search(r"'(\d{3}) [A-Za-z]", text)
    if status and text.startswith("HTTPStatusError"):
        return f"HTTP {status.group(1)}"
    return text.split("(", 1)[0] or "error"


def _outcomes(bench: dict[str, Any], concurrency: int) -> list[Outcome]:
    """GuideLLM's per-request records as ours: timings relative to the benchmark's start, tokens, errors."""
    origin = bench["start_time"]
    requests = bench.get("requests") or {}
    found = []
    for status in ("successful", "errored"):
        for request in requests.get(status) or []:
            info = request["info"]
            t = info["timings"]
            start = t.get("request_start") or t.get("resolve_start") or origin
            outcome = Outcome(concurrency, start - origin)
            if status == "errored":
                outcome.error = _error_kind(info.get("error"))
            else:
                out_tokens = (request.get("output_metrics") or {}).get("text_tokens")
                outcome.prompt_tokens = (request.get("input_metrics") or {}).get("text_tokens")
                outcome.output_tokens = out_tokens
                first, last, end = t.get("first_token_iteration"), t.get("last_token_iteration"), t.get("request_end")
                if first is not None:
                    outcome.ttft_s = first - start
                if end is not None:
                    outcome.e2e_s = end - start
                if first is not None and last is not None and out_tokens and out_tokens > 1:
                    outcome.itl_s = (last - first) / (out_tokens - 1)
            found.append(outcome)
    return sorted(found, key=lambda o: o.start_s)


def _reported(distribution: dict[str, Any], scale: float = 1.0) -> dict[str, float | None]:
    if not distribution or not distribution.get("count"):
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    p = distribution["percentiles"]
    return {"p50": round(p["p50"] * scale, 3), "p95": round(p["p95"] * scale, 3), "p99": round(p["p99"] * scale, 3),
            "mean": round(distribution["mean"] * scale, 3)}


def _recomputed(values: list[float | None]) -> dict[str, float | None]:
    return {k: (None if v is None else round(v * 1000, 3))
            for k, v in stats.summary([v for v in values if v is not None]).items()}


def parse(report: dict[str, Any], shape: Shape, *, target: str, url: str, profile: str, seed: int | None,
          recompute: bool = False) -> Sweep:
    """GuideLLM's report as a :class:`Sweep`: its own figures, or (``recompute``) ours from its requests."""
    levels = []
    for bench in report["benchmarks"]:
        concurrency = int(bench["config"]["strategy"]["streams"])
        metrics = bench["metrics"]
        totals = metrics["request_totals"]
        outcomes = _outcomes(bench, concurrency)
        good = [o for o in outcomes if o.ok]
        kinds = Counter(o.error for o in outcomes if o.error)
        inexact = sum(1 for o in good if o.output_tokens != shape.output_tokens
                      or (o.prompt_tokens is not None and o.prompt_tokens != shape.input_tokens))
        if recompute:
            ttft, itl, e2e = (_recomputed([o.ttft_s for o in good]), _recomputed([o.itl_s for o in good]),
                              _recomputed([o.e2e_s for o in good]))
        else:
            ttft = _reported(metrics["time_to_first_token_ms"]["successful"])
            itl = _reported(metrics["inter_token_latency_ms"]["successful"])
            e2e = _reported(metrics["request_latency"]["successful"], scale=1000)
        duration = float(bench["duration"])
        levels.append(Level(
            concurrency=concurrency, window_s=round(duration, 3), drained_s=round(duration, 3),
            requests=int(totals["successful"]) + int(totals["errored"]), succeeded=int(totals["successful"]),
            errors=int(totals["errored"]), error_kinds=dict(sorted(kinds.items())), inexact=inexact,
            output_tokens_per_s=round(metrics["output_tokens_per_second"]["successful"]["mean"], 3),
            requests_per_s=round(metrics["requests_per_second"]["successful"]["mean"], 4),
            ttft_ms=ttft, itl_ms=itl, e2e_ms=e2e, cancelled=int(totals.get("incomplete") or 0), outcomes=outcomes))
    method = stats.METHOD if recompute else "GuideLLM's: the smallest value whose cumulative share reaches q (no " \
                                            "interpolation)"
    harness = f"{HARNESS} (recomputed with our percentiles)" if recompute else HARNESS
    model = str(report.get("config", {}).get("spec", {}).get("backend", {}).get("model") or "unknown")
    return Sweep(harness, target, url, model, profile, shape, levels, LOAD, seed=seed, percentile_method=method)
