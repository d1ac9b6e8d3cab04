"""A minimal agentic coding loop over the OpenAI tool-calling protocol, as a coding agent drives a gateway.

The model gets a task and four tools over a small repository (list, read,
write, run the tests); each tool call is executed and its result fed back as a
``tool`` message until the model finishes or the step limit is reached. Every
step is a row, so the transcript shows what the model did and what it cost,
whether or not it succeeded; the verdict runs the repository's *original* tests
against the agent's code, so an agent that edits the tests does not pass.

How a turn asks for a tool call (the profile's ``models.chat.tool_calls``):

* ``native``: ``tool_choice="auto"``; the model may answer in text, which ends the loop.
* ``required``: ``tool_choice="required"`` with a fifth tool, ``done``, that ends the loop: for a
  model that, left to ``auto``, writes a JSON block *describing* a call instead of making one
  (Qwen2.5-Coder-1.5B does). Which tool, which arguments and when to stop stay the model's choice.
* ``grammar``: each turn is constrained to one hermes ``<tool_call>`` block with vLLM's structured
  outputs, for a model whose chat template does not render tools at all; the server's tool-call
  parser still returns real ``tool_calls``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pandas as pd

from ...errors import InferbookError
from ...say import Say

#: The sample repository the agent works on: a function left unimplemented, and the test it must pass.
SAMPLE_REPO = {
    "README.md": "# calc\n\nSmall arithmetic helpers. Run the tests with `python -m unittest`.\n",
    "calc.py": 'def add(a, b):\n    """Return the sum of a and b."""\n    raise NotImplementedError\n',
    "test_calc.py": ("import unittest\n\nfrom calc import add\n\n\nclass AddTest(unittest.TestCase):\n"
                     "    def test_adds_two_numbers(self):\n        self.assertEqual(add(2, 3), 5)\n\n\n"
                     'if __name__ == "__main__":\n    unittest.main()\n'),
}
TASK = ("The function add in calc.py is not implemented. Implement it in calc.py (do not change test_calc.py), "
        "then run the tests.")
SYSTEM_TEMPLATE = ("You are a coding agent working in a small Python repository. You act only through the tools "
                   "{names}; to change code, call {write} with the whole new content of the file. Call exactly one "
                   "tool per turn and never put code in your reply. Read the file you need first, then write the fix, "
                   "then run the tests. When the tests pass, reply with a one-line summary.")
SYSTEM = SYSTEM_TEMPLATE.format(names="list_files, read_file, write_file and run_tests", write="write_file")
#: The tool that ends a ``required`` loop (the model must call some tool on every turn).
DONE_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "done", "description": "Finish the task once the tests pass, with a one-line summary of the change.",
    "parameters": {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}}}
MODES = ("native", "required", "grammar")

#: Tools in the OpenAI format; every argument is a string, which keeps the grammar below simple.
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "list_files", "description": "List the files of the repository.",
                                      "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {
        "name": "read_file", "description": "Read a file of the repository.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
    {"type": "function", "function": {
        "name": "write_file", "description": "Replace the whole content of a file of the repository.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                       "required": ["path", "content"]}}},
    {"type": "function", "function": {"name": "run_tests", "description": "Run the repository's tests.",
                                      "parameters": {"type": "object", "properties": {}}}},
]
RESULT_LIMIT = 2000  # characters of a tool result fed back; keeps a long test log from filling the context


def tool_system_prompt(tools: list[dict[str, Any]]) -> str:
    """The system prompt naming the tools the agent was given (a Python workspace's, or an MCP server's)."""
    names = [t["function"]["name"] for t in tools]
    write = next((n for n in names if n.startswith("write")), "write_file")
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)
    return SYSTEM_TEMPLATE.format(names=listed, write=write)


def make_sample_repo(root: Path) -> Path:
    """Write :data:`SAMPLE_REPO` into ``root`` (created), and return it."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in SAMPLE_REPO.items():
        (root / name).write_text(text)
    return root


class Workspace:
    """The tools as Python functions, confined to one folder: a path that leaves it is refused, not followed.

    What :func:`run_agent` needs of a workspace: ``tools`` (OpenAI format), ``system`` (the prompt naming them),
    ``call(name, arguments)`` and ``tests_pass()``; :class:`.mcp_workspace.McpWorkspace` offers the same over MCP.
    """

    tools: list[dict[str, Any]] = TOOLS
    system: str = SYSTEM

    def __init__(self, root: Path, test_timeout: float = 60) -> None:
        self.root = root.resolve()
        self.test_timeout = test_timeout

    def _path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if path != self.root and self.root not in path.parents:
            raise ToolError(f"path '{relative}' is outside the repository")
        return path

    def list_files(self) -> str:
        files = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts)
        return "\n".join(files)

    def read_file(self, path: str) -> str:
        target = self._path(path)
        if not target.is_file():
            raise ToolError(f"no file '{path}'; list_files shows the files")
        return target.read_text(errors="replace")

    def write_file(self, path: str, content: str) -> str:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return f"wrote {len(content)} characters to {path}"

    def _unittest(self, folder: Path) -> tuple[int, str]:
        """``python -m unittest`` in ``folder``: its exit status and output."""
        proc = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=folder, capture_output=True,
                              text=True, timeout=self.test_timeout)
        return proc.returncode, proc.stdout + proc.stderr

    def run_tests(self) -> str:
        status, output = self._unittest(self.root)
        return f"exit status {status}\n{output[-RESULT_LIMIT:]}"

    def tests_pass(self, original: dict[str, str] = SAMPLE_REPO) -> bool:
        """Whether the repository's original tests pass against the agent's code (its own test edits ignored)."""
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(self.root, tmp, dirs_exist_ok=True)
            for name, text in original.items():
                if name.startswith("test_"):
                    (Path(tmp) / name).write_text(text)
            status, output = self._unittest(Path(tmp))
        return status == 0 and re.search(r"^Ran [1-9]\d* tests?", output, re.M) is not None

    def call(self, name: str, arguments: str) -> str:
        """Run one tool call; a bad call becomes an error result for the model, as agents report them."""
        try:
            args = json.loads(arguments or "{}")
            if not isinstance(args, dict):
                raise ToolError(f"arguments must be a JSON object, got {arguments[:60]!r}")
            tool = {"list_files": self.list_files, "read_file": self.read_file, "write_file": self.write_file,
                    "run_tests": self.run_tests}.get(name)
            if tool is None:
                raise ToolError(f"unknown tool '{name}'")
            return tool(**args)
        except (ToolError, TypeError, ValueError, subprocess.TimeoutExpired) as exc:
            return f"error: {exc}"


class ToolError(InferbookError):
    """A tool call the workspace refuses; reported back to the model as the tool's result."""


def hermes_grammar(tools: list[dict[str, Any]] = TOOLS, path_chars: int = 60, text_chars: int = 600) -> str:
    """A regex for vLLM's structured outputs: exactly one hermes ``<tool_call>`` of one of ``tools``.

    Arguments named ``path`` are file paths; other strings are JSON strings of bounded length.
    """
    json_string = r'"(?:[^"\\\n]|\\[nt"\\]){0,%d}"' % text_chars
    path_string = r'"[A-Za-z0-9_./-]{1,%d}"' % path_chars
    calls = []
    for tool in tools:
        fn = tool["function"]
        props = fn["parameters"].get("properties", {})
        args = ", ".join(f'"{name}": ' + (path_string if name == "path" else json_string) for name in props)
        calls.append(r'<tool_call>\n\{"name": "%s", "arguments": \{%s\}\}\n</tool_call>'
                     % (re.escape(fn["name"]), args))
    return "|".join(f"(?:{c})" for c in calls)


@dataclass
class Step:
    step: int
    tool: str
    arguments: str
    result_chars: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass
class Transcript:
    """What the loop did: one row per tool call (or the final answer), and how it ended."""

    steps: list[Step]
    stopped_by: str  # "model" (answered without a tool call, or called done) or "step limit"
    tests_pass: bool
    answer: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([s.__dict__ for s in self.steps]).set_index("step")

    def turns(self) -> list[tuple[int, int]]:
        """(prompt, completion) tokens of each turn, per the gateway's usage (one request per turn)."""
        seen: dict[int, tuple[int, int]] = {}
        for s in self.steps:  # several calls in one turn share that turn's usage
            seen[s.step] = (s.prompt_tokens, s.completion_tokens)
        return list(seen.values())

    @property
    def seconds(self) -> float:
        """Wall time of the model's turns (several calls in one turn share that turn's request)."""
        return sum({s.step: s.seconds for s in self.steps}.values())

    @property
    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens over the session."""
        turns = self.turns()
        return sum(p for p, _ in turns), sum(c for _, c in turns)

    def summary(self) -> str:
        calls = sum(1 for s in self.steps if s.tool != "(answer)")
        ending = ("the model finished" if self.stopped_by == "model"
                  else f"the step limit ({len(self.turns())} turns) was reached")
        verdict = "the tests pass" if self.tests_pass else "the tests still fail: the task was not solved"
        prompt, completion = self.tokens
        return (f"{calls} tool calls; {ending}; {verdict}. Tokens: {prompt} prompt, {completion} completion.")


def run_agent(client: openai.OpenAI, model: str, workspace: Any, task: str = TASK, *, max_steps: int = 6,
              tool_calls: str = "native", max_tokens: int = 400, seed: int | None = None,
              say: Say = print) -> Transcript:
    """Drive the loop until the model finishes (an answer, or ``done``) or ``max_steps`` turns have run.

    ``seed`` (with a temperature of 0.7) samples a different run per seed; without it every turn is greedy.
    ``workspace`` gives the tools (:class:`Workspace`: Python functions; :class:`.mcp_workspace.McpWorkspace`: an
    MCP server's, through the gateway); the grammar, the prompt and the calls follow what it gives.
    """
    if tool_calls not in MODES:
        raise InferbookError(f"tool_calls must be one of {', '.join(MODES)}, not {tool_calls!r}")
    given = list(workspace.tools)
    extra = {"structured_outputs": {"regex": hermes_grammar(given)}} if tool_calls == "grammar" else None
    tools = given + [DONE_TOOL] if tool_calls == "required" else given
    choice = "required" if tool_calls == "required" else "auto"
    sampling: dict[str, Any] = {"temperature": 0} if seed is None else {"temperature": 0.7, "seed": seed}
    messages: list[dict[str, Any]] = [{"role": "system", "content": workspace.system},
                                      {"role": "user", "content": task}]
    steps: list[Step] = []
    for turn in range(1, max_steps + 1):
        started = time.perf_counter()
        response = client.chat.completions.create(model=model, messages=messages, tools=tools, tool_choice=choice,
                                                  max_tokens=max_tokens, extra_body=extra, **sampling)
        seconds = round(time.perf_counter() - started, 2)
        message = response.choices[0].message
        usage = response.usage
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            steps.append(Step(turn, "(answer)", "", len(message.content or ""), prompt, completion, seconds))
            say(f"agent: turn {turn}: the model answered without a tool call")
            return Transcript(steps, "model", workspace.tests_pass(), message.content or "", messages)
        finished = None
        for call in message.tool_calls:
            if call.function.name == DONE_TOOL["function"]["name"]:
                finished = _summary(call.function.arguments)
                result = "done"
            else:
                result = workspace.call(call.function.name, call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result[:RESULT_LIMIT]})
            steps.append(Step(turn, call.function.name, _short(call.function.arguments), len(result), prompt,
                              completion, seconds))
            say(f"agent: turn {turn}/{max_steps}: {call.function.name}({_short(call.function.arguments, 40)}) "
                f"-> {len(result)} characters ({seconds} s)")
        if finished is not None:
            return Transcript(steps, "model", workspace.tests_pass(), finished, messages)
    return Transcript(steps, "step limit", workspace.tests_pass(), "", messages)


def _summary(arguments: str) -> str:
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return arguments
    return str(args.get("summary", "")) if isinstance(args, dict) else arguments


def _short(text: str, limit: int = 80) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."
