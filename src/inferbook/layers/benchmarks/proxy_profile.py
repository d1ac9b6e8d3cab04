"""Where the LiteLLM proxy spends its CPU on a call: py-spy samples of a running proxy, sorted into its stages.

When configuration cannot bring the proxy's added latency down to a goal, the next question is what the
time is spent on. py-spy (PyPI ``py-spy``, a sampling profiler that reads another process's Python stacks
without changing it) samples the proxy while calls go through it; each sample's stack is put in the first
:data:`STAGES` entry whose marker it contains, so the table reads as "of every CPU millisecond per call,
this much went to authentication, this much to the metrics callback, ...".

Attaching to another process needs ptrace: root, or ``kernel.yama.ptrace_scope`` 0 for a process of the
same user. Without it py-spy is refused and :class:`ProfileRefused` says how to allow it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from ...errors import InferbookError

#: (stage, markers): a sample belongs to the first stage one of whose markers appears in its stack.
#: Specific stages come before the ones that enclose them (the metrics callback runs inside the success
#: handler, which runs inside the event loop).
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authentication: key, budget and limit checks", ("user_api_key_auth",)),
    ("metrics callback (Prometheus)", ("PrometheusLogger", "prometheus_client")),
    ("spend booking: ledger rows and counters", ("_ProxyDBLogger", "DBSpendUpdateWriter", "update_spend",
                                                "monitor_spend_logs_queue", "spend_log", "prisma")),
    ("rate-limit and budget counters after the call", ("MaxParallelRequestsHandler", "deployment_callback_on_success",
                                                       "_PROXY_")),
    ("request hooks before the call", ("_pre_call_with_fallbacks", "common_processing_pre_call_logic",
                                       "pre_call_hook")),
    ("routing and the upstream call", ("Router.acompletion", "acompletion (litellm", "aiohttp", "httpx",
                                       "make_call", "get_llm_provider")),
    ("other logging after the call", ("Logging.async_success_handler", "success_handler", "_success_handler_helper_fn",
                                      "Logging.")),
    ("HTTP, middleware and the response", ("run_asgi", "uvicorn", "starlette", "fastapi")),
)
OTHER = "event loop and the rest"


class ProfileRefused(InferbookError):
    """py-spy could not sample the proxy."""


@dataclass(frozen=True)
class Samples:
    """py-spy's collapsed stacks: how many samples each distinct stack got."""

    stacks: Counter[str]

    @classmethod
    def parse(cls, lines: Iterable[str]) -> "Samples":
        """Read py-spy's ``--format raw`` output: ``frame;frame;...;frame COUNT`` per line."""
        stacks: Counter[str] = Counter()
        pending = ""  # a process's command line may hold newlines: a stack ends at the line with its count
        for line in lines:
            line = line.rstrip("\n")
            if not pending and not line.strip():
                continue
            pending = f"{pending}\\n{line}" if pending else line
            stack, _, count = pending.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
                pending = ""
        if pending:
            raise ValueError(f"not a py-spy raw line (expected 'frame;frame COUNT'): {pending[:120]!r}")
        return cls(stacks)

    @property
    def total(self) -> int:
        return sum(self.stacks.values())


def stage_of(stack: str) -> str:
    """The stage a sampled stack belongs to (:data:`STAGES` order), or :data:`OTHER`."""
    for stage, markers in STAGES:
        if any(marker in stack for marker in markers):
            return stage
    return OTHER


def breakdown(samples: Samples, cpu_ms_per_call: float | None = None) -> pd.DataFrame:
    """A row per stage: samples, share of the proxy's CPU, and (given the CPU per call) milliseconds per call."""
    if not samples.total:
        raise ProfileRefused("py-spy recorded no sample of the proxy: it was idle or py-spy could not read it")
    counts: Counter[str] = Counter()
    for stack, n in samples.stacks.items():
        counts[stage_of(stack)] += n
    order = [stage for stage, _ in STAGES] + [OTHER]
    rows = []
    for stage in order:
        share = counts[stage] / samples.total
        row = {"stage": stage, "samples": counts[stage], "share_%": round(100 * share, 1)}
        if cpu_ms_per_call is not None:
            row["cpu_ms_per_call"] = round(share * cpu_ms_per_call, 1)
        rows.append(row)
    return pd.DataFrame(rows).set_index("stage")


def hottest(samples: Samples, top: int = 15) -> pd.DataFrame:
    """The functions most often on top of the stack (where the CPU was when sampled), file lines merged."""
    own: Counter[str] = Counter()
    for stack, n in samples.stacks.items():
        own[re.sub(r":\d+\)$", ")", stack.rsplit(";", 1)[-1])] += n
    return pd.DataFrame([{"function": f, "share_%": round(100 * n / samples.total, 1)}
                         for f, n in own.most_common(top)]).set_index("function")


def py_spy() -> str:
    """The py-spy executable beside this interpreter (installed with the project), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise ProfileRefused("py-spy is not installed; it comes with the project: run `make venv` "
                             "(or pip install -c constraints.txt -e .)")
    return found


class Recording:
    """py-spy sampling a process tree for a fixed time, started before the calls and read after them."""

    def __init__(self, pid: int, out: Path, seconds: float, rate: int = 200) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [py_spy(), "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--format", "raw",
             "--rate", str(rate), "--duration", str(max(1, round(seconds))), "--output", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result(self, timeout: float = 120) -> Samples:
        """Wait for py-spy to end and read what it wrote; a refusal names the cause and the fix."""
        output, _ = self._proc.communicate(timeout=timeout)
        if self._proc.returncode != 0 or not self.out.exists():
            hint = ("py-spy needs ptrace: run as root, or allow it for your user with "
                    "`sudo sysctl kernel.yama.ptrace_scope=0`" if "ermission" in output else "see its output above")
            raise ProfileRefused(f"py-spy could not sample the proxy (exit {self._proc.returncode}): "
                                 f"{output.strip()[-400:]}\n{hint}")
        with self.out.open() as lines:
            return Samples.parse(lines)


def record_during(pid: int, out: Path, seconds: float, work: Callable[[], None]) -> Samples:
    """Sample ``pid`` (and its children) for ``seconds`` while ``work`` runs; ``work`` should last about as long."""
    recording = Recording(pid, out, seconds)
    work()
    return recording.result(timeout=seconds + 120)
