"""The tenant's side of the platform: chat, autocomplete and a coding agent with only a key and a URL.

The operator issues the keys (:func:`issue_keys`); from then on every call goes
through :class:`Session`, which holds nothing but the gateway URL and the keys
and books the usage each answer reports, so that the session's spend can be
set against the gateway's ledger afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pandas as pd

from ... import smoke
from ...fim import FimFormat
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from ..llm_gateway import connect as connect_gateway
from ..llm_gateway.admin import Admin
from ..llm_gateway.endpoint import GatewayEndpoint
from ..llm_gateway.enforcement import Tenants, provision_tenants, wait_for_spend
from ..llm_gateway.manifests import CHAT_ALIAS, FIM_ALIAS
from ..mcp.client import McpTools
from ..mcp.steps import gateway_mcp_url
from .agent_loop import Transcript, Workspace, make_sample_repo, run_agent
from .mcp_workspace import McpWorkspace
from .protocols import TOOL, Answer


def connect(profile: Profile, layout: Layout, say: Say = print) -> GatewayEndpoint:
    """The running gateway (the llm-gateway chapter brought it up): its ``/v1`` URL and the operator's admin API.

    The caller holds the endpoint for as long as it calls the gateway: on a cluster it owns the
    port-forward, which closes when the endpoint is closed (or dropped).
    """
    return connect_gateway(profile, layout, say=say)


def issue_keys(admin: Admin, profile: Profile) -> Tenants:
    """The operator's step: fresh IDE and agent keys for this session (aliases ``TEAM-session-ide|agent``)."""
    return provision_tenants(admin, profile, only=("ide", "agent"), label="session")


def agent_workspace(profile: Profile, gateway_base: str, tenants: Tenants, folder: Path) -> Workspace | McpWorkspace:
    """The agent's tools: the book's MCP server's through the gateway with the agent key (``features.mcp``), its
    repository laid down afresh; else Python functions over a fresh sample repository in ``folder``."""
    if "mcp" in profile.features:
        tools = McpWorkspace(McpTools(gateway_mcp_url(gateway_base), tenants.keys["agent"]))
        tools.reset()
        return tools
    return Workspace(make_sample_repo(folder))


@dataclass
class Completion:
    """An autocomplete answer, with what was asked, so it can be shown in place."""

    call: smoke.Call
    before: str
    after: str
    fim: FimFormat

    @property
    def middle(self) -> str:
        return self.call.output

    def inline(self, marks: tuple[str, str] = ("\u27e8", "\u27e9")) -> str:
        """The completion between the text before and after the cursor, marked."""
        return f"{self.before}{marks[0]}{self.middle}{marks[1]}{self.after}"

    def works(self, expected_stdout: str) -> bool:
        """Whether the completed code (before + middle + after) runs and prints ``expected_stdout``."""
        return smoke.runs_to(self.before + self.middle + self.after, expected_stdout)


@dataclass
class Session:
    """A tenant: the gateway URL and its keys, and the usage booked per key alias."""

    url: str
    tenants: Tenants
    usage: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def __repr__(self) -> str:  # the keys stay out of reprs
        return f"Session({self.url!r}, keys={list(self.tenants.keys)})"

    def client(self, name: str) -> openai.OpenAI:
        return smoke.client(self.url, self.tenants.keys[name])

    def _book(self, name: str, prompt: int | None, completion: int | None) -> None:
        self.usage.setdefault(self.tenants.alias(name), []).append((prompt or 0, completion or 0))

    def chat(self, prompt: str, key: str = "ide", max_tokens: int = 96) -> smoke.Call:
        """Streamed chat on ``coder-chat``, as an IDE's chat panel asks it (usage in the last chunk)."""
        call, usage = smoke.chat_stream_usage(self.client(key), CHAT_ALIAS, prompt, max_tokens=max_tokens)
        if usage:
            self._book(key, usage.prompt_tokens, usage.completion_tokens)
        return call

    def autocomplete(self, before: str, after: str, fim: FimFormat, key: str = "ide",
                     max_tokens: int = 48) -> Completion:
        """``/v1/completions`` on ``coder-fim`` with the raw FIM prompt, as IDE autocompletion sends it."""
        started = time.perf_counter()
        response = self.client(key).completions.create(model=FIM_ALIAS, prompt=fim.prompt(before, after),
                                                       max_tokens=max_tokens, temperature=0, stop=["\n\n"])
        elapsed = time.perf_counter() - started
        usage = response.usage
        self._book(key, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
        text = response.choices[0].text
        detail = (f"native FIM ({fim.name} tokens)" if fim.native
                  else "the model has no FIM tokens: the prefix only, continued")
        tokens = usage.completion_tokens if usage else None
        call = smoke.Call("autocomplete (coder-fim)", bool(text.strip()), round(elapsed, 3), None, tokens,
                          smoke.rate(tokens, elapsed), detail, text)
        return Completion(call, before, after, fim)

    def tool_calls(self, modes: list[str], key: str = "agent") -> list[smoke.Call]:
        """Tool calls forced the ways clients force them (``named``, ``required``), through the gateway."""
        calls = [smoke.tool_call(self.client(key), CHAT_ALIAS, how) for how in modes]
        for call in calls:
            self._book(key, call.tokens_in, call.tokens_out)
        return calls

    def large_max_tokens(self, max_tokens: int, key: str = "agent") -> smoke.Call:
        """A short answer asked with a ``max_tokens`` beyond the model's context, as some agents send it.

        The gateway lowers it to what the alias's context leaves (``modify_params``); without that
        vLLM refuses the request with a 400. The prompt asks for one word, so the answer stays short.
        """
        started = time.perf_counter()
        try:
            response = self.client(key).chat.completions.create(
                model=CHAT_ALIAS, messages=[{"role": "user", "content": "Reply with the single word: ready"}],
                max_tokens=max_tokens, temperature=0, stop=["\n"])  # a small model may ramble: one line is enough
        except openai.APIStatusError as exc:
            return smoke.Call(f"max_tokens={max_tokens:,}", False, round(time.perf_counter() - started, 3),
                              detail=f"HTTP {exc.status_code}: {str(exc)[:160]}")
        elapsed = time.perf_counter() - started
        usage = response.usage
        self._book(key, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
        text = response.choices[0].message.content or ""
        tokens = usage.completion_tokens if usage else None
        return smoke.Call(f"max_tokens={max_tokens:,}", bool(text.strip()), round(elapsed, 3), None, tokens,
                          smoke.rate(tokens, elapsed), f"200, answered {text.strip()[:40]!r}", text,
                          tokens_in=usage.prompt_tokens if usage else None)

    def agent(self, workspace: Workspace | McpWorkspace, *, tool_calls: str = "native", max_steps: int = 6,
              seed: int | None = None, say: Say = print) -> Transcript:
        """The coding agent's loop with the agent key; its usage is booked per turn."""
        transcript = run_agent(self.client("agent"), CHAT_ALIAS, workspace, tool_calls=tool_calls,
                               max_steps=max_steps, seed=seed, say=say)
        for prompt, completion in transcript.turns():
            self._book("agent", prompt, completion)
        return transcript

    def agent_runs(self, root: Path, *, runs: int = 5, first_seed: int = 1, tool_calls: str = "native",
                   max_steps: int = 8, say: Say = print, tools: Workspace | McpWorkspace | None = None) -> pd.DataFrame:
        """The agent on the sample task over ``runs`` seeded runs (temperature 0.7), each on a fresh repository
        under ``root`` (or, when ``tools`` are an MCP server's, its repository laid down afresh through them): per
        run, solved or not (the original tests pass), turns, tools, tokens, wall time."""
        rows = []
        for seed in range(first_seed, first_seed + runs):
            workspace: Workspace | McpWorkspace
            if isinstance(tools, McpWorkspace):
                tools.reset()
                workspace = tools
            else:
                workspace = Workspace(make_sample_repo(root / f"seed-{seed}"))
            say(f"run {seed - first_seed + 1}/{runs} (seed {seed}, tool_calls {tool_calls})")
            transcript = self.agent(workspace, tool_calls=tool_calls, max_steps=max_steps, seed=seed, say=say)
            prompt, completion = transcript.tokens
            rows.append({"seed": seed, "solved": transcript.tests_pass, "turns": len(transcript.turns()),
                         "tools": " ".join(s.tool for s in transcript.steps), "ended": transcript.stopped_by,
                         "seconds": round(transcript.seconds, 1), "prompt_tokens": prompt,
                         "completion_tokens": completion})
        return pd.DataFrame(rows).set_index("seed")

    def spend(self, admin: Admin, prices: tuple[float, float], say: Say = print) -> pd.DataFrame:
        """Per key: the session's requests and tokens, what they should cost, and what the ledger booked."""
        rows = []
        booked_spend = {row["alias"]: row["spend_usd"] or 0.0 for row in admin.keys()}
        for alias, calls in self.usage.items():
            prompt = sum(p for p, _ in calls)
            completion = sum(c for _, c in calls)
            expected = prompt * prices[0] + completion * prices[1]
            booked = booked_spend.get(alias, 0.0)
            if booked < expected * 0.99:
                booked = wait_for_spend(admin, alias, expected, say)
            rows.append({"key": alias, "requests": len(calls), "prompt_tokens": prompt,
                         "completion_tokens": completion, "expected_usd": round(expected, 8),
                         "booked_usd": round(booked, 8),
                         "matches": abs(booked - expected) <= max(1e-9, 0.01 * expected)})
        return pd.DataFrame(rows).set_index("key")



def verify(answer: smoke.Call, completion: Completion, gateway_calls: list[smoke.Call], transcript: Transcript,
           spend: pd.DataFrame, spoken: list[Answer] | None = None, expected_stdout: str = "2.0",
           extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """The chapter's checks (check, expected, observed, pass); whether the agent solved its task is not one.

    ``spoken``: the three protocols' answers (:mod:`.protocols`), one row each; ``extra``: more rows in the same
    columns (the MCP section's, :meth:`inferbook.layers.mcp.steps.McpSection.verify`)."""
    tool_steps = [s for s in transcript.steps if s.tool != "(answer)"]
    works = completion.works(expected_stdout) if completion.fim.native else None
    rows = [
        {"check": "chat answers, streamed", "expected": "text, usage in the last chunk",
         "observed": f"{answer.tokens_out} tokens, first after {answer.ttft_s} s", "pass": answer.ok},
        {"check": "autocomplete answers", "expected": f"a middle, {completion.fim.name} format",
         "observed": f"{len(completion.middle)} characters; {completion.call.detail}", "pass": completion.call.ok},
    ]
    if works is not None:
        rows.append({"check": "the completed code runs", "expected": f"prints {expected_stdout}",
                     "observed": "it does" if works else f"it does not: {completion.middle[:60]!r}", "pass": works})
    for call in gateway_calls:
        rows.append({"check": f"through the gateway: {call.call}", "expected": "a real answer (200)",
                     "observed": call.detail, "pass": call.ok})
    rows += [
        {"check": "agent's tool calls", "expected": "tool_calls through the gateway",
         "observed": f"{len(tool_steps)} call(s): {', '.join(sorted({s.tool for s in tool_steps})) or 'none'}",
         "pass": bool(tool_steps)},
    ]
    for key, row in spend.iterrows():
        rows.append({"check": f"spend booked ({key})", "expected": f"{row['expected_usd']:.8f} USD (1%)",
                     "observed": f"{row['booked_usd']:.8f} USD", "pass": bool(row["matches"])})
    for said in spoken or []:
        expected = ("text" if said.call.startswith("text")
                    else f"{TOOL['name']} with arguments that decode to a JSON object")
        rows.append({"check": f"{said.protocol}: {said.call}", "expected": expected, "observed": said.observed,
                     "pass": said.ok})
    table = pd.DataFrame(rows).set_index("check")
    return table if extra is None or extra.empty else pd.concat([table, extra])


def figures(answer: smoke.Call, completion: Completion, transcript: Transcript) -> pd.DataFrame:
    """The session's numbers worth carrying into the closing notes."""
    prompt, generated = transcript.tokens
    rows = [("chat: time to first token (s)", answer.ttft_s), ("chat: tokens/s", answer.tokens_per_s),
            ("autocomplete: latency (s)", completion.call.latency_s),
            ("agent: turns", len(transcript.turns())),
            ("agent: tokens (prompt / completion)", f"{prompt} / {generated}"),
            ("agent: tests pass at the end", transcript.tests_pass)]
    return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")
