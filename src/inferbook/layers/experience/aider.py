"""Third-party coding agents, run headlessly against the tenant gateway with nothing but its URL and a key.

The gateway promises a tenant that an ordinary OpenAI-compatible client works with its virtual key. The
client we prove it with is aider (PyPI ``aider-chat``, pinned with all its dependencies in
``envs/aider.txt``): ``aider --message`` is one request/response session that then exits.

Left to its defaults aider reaches past the gateway and, on a small model, runs away. What
:func:`run_aider` does about each, and why:

- **model metadata**: aider does not know ``openai/coder-chat``, so it downloads LiteLLM's price and
  context-window table from GitHub (offline: a name-resolution error in its output), then warns and
  guesses. The gateway already publishes what aider needs at ``/v1/model/info``, readable with the
  tenant's own key; :func:`aider_model_metadata` turns that into aider's ``--model-metadata-file``.
- **LiteLLM's cost map** (aider's client library fetches it from GitHub on import):
  ``LITELLM_LOCAL_MODEL_COST_MAP=True`` uses the copy inside the package.
- **update check** (PyPI) and **release notes**: ``--no-check-update --no-show-release-notes``.
- **analytics**: aider asks a share of installs to opt in, and ``--yes-always`` would answer yes:
  ``--no-analytics`` means it never asks and never sends.
- **web scraping and installs**: ``--no-detect-urls --disable-playwright`` (aider offers to pip-install
  Playwright to read a URL); ``--no-suggest-shell-commands`` (``--yes-always`` would run them).
- **output length**: aider sends no ``max_tokens``; a small model on a CPU may then write until its
  context is full, many minutes on two cores. ``max_tokens`` goes in through the model settings.
- **everything else**: the child's proxy variables point at ``egress_proxy`` with only the gateway's
  host exempt, so any other HTTP call fails at once and shows up (or is recorded by a trap proxy).

The key reaches the child only through its environment (``OPENAI_API_KEY``), never its command line,
and the child inherits nothing else from ours but ``PATH`` and the locale.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ...errors import InferbookError
from ...jsonapi import call_json

#: Lines in a client's output that mean the session did not go as the protocol intends: an API error
#: surfaced by LiteLLM/openai, a retry, a traceback, or a call that tried to leave for the internet.
PROBLEM_MARKERS = (
    "APIError", "BadRequestError", "APIConnectionError", "AuthenticationError", "PermissionDeniedError",
    "NotFoundError", "InternalServerError", "ServiceUnavailableError", "RateLimitError", "Timeout",
    "Traceback (most recent call last)", "JSONDecodeError", "Retrying in", "Unknown context window",
    "Max retries exceeded", "NameResolutionError", "ProxyError", "ConnectError",
)

#: The aider switches that keep a headless session on the gateway (see the module docstring).
AIDER_OFFLINE_FLAGS = (
    "--yes-always", "--no-git", "--no-analytics", "--no-check-update", "--no-show-release-notes",
    "--no-detect-urls", "--disable-playwright", "--no-suggest-shell-commands", "--no-auto-lint",
    "--no-fancy-input", "--no-pretty", "--map-tokens", "0",
)


@dataclass
class AgentRun:
    """One finished headless session. ``command`` is what ran (it never holds the key)."""

    command: list[str]
    returncode: int
    output: str
    seconds: float
    workdir: Path

    def problems(self) -> list[str]:
        """Output lines carrying any of :data:`PROBLEM_MARKERS`; empty for a clean session."""
        return [line for line in self.output.splitlines() if any(marker in line for marker in PROBLEM_MARKERS)]


def aider_model_metadata(gateway_url: str, key: str, alias: str, max_output_tokens: int) -> dict[str, dict]:
    """aider's metadata entry for ``openai/<alias>``, from what the gateway tells the key's holder.

    vLLM's context window holds prompt and answer together, so the prompt may use what the answer does not.
    """
    status, answer = call_json("GET", f"{gateway_url.rstrip('/')}/model/info", key)
    entries = answer.get("data", []) if isinstance(answer, dict) else []
    info = next((e.get("model_info", {}) for e in entries if e.get("model_name") == alias), None)
    if status != 200 or info is None:
        raise InferbookError(f"the gateway at {gateway_url} has no model info for '{alias}' (HTTP {status}). "
                             "Fix: check that the key may call the alias (inferbook keys list)")
    window = int(info.get("max_input_tokens") or info.get("max_tokens") or 0)
    if window <= max_output_tokens:
        raise InferbookError(f"the gateway publishes no usable context window for '{alias}' ({window} tokens). "
                             "Fix: set max_input_tokens in the alias's model_info")
    output = min(max_output_tokens, int(info.get("max_output_tokens") or window))
    return {f"openai/{alias}": {
        "max_input_tokens": window - output, "max_output_tokens": output, "max_tokens": output,
        "input_cost_per_token": float(info.get("input_cost_per_token") or 0.0),
        "output_cost_per_token": float(info.get("output_cost_per_token") or 0.0),
        "litellm_provider": "openai", "mode": "chat",
    }}


def run_aider(python: Path, workdir: Path, home: Path, gateway_url: str, key: str, message: str,
              files: list[str], alias: str = "coder-chat", max_output_tokens: int = 128, timeout: float = 300,
              egress_proxy: str = "http://127.0.0.1:9", stream: bool = True) -> AgentRun:
    """Run ``aider --message`` once in ``workdir`` on ``files``, through the gateway, with ``key``.

    ``python`` is the aider environment's interpreter (``envs.AIDER.ensure(...)``). ``home`` becomes the
    child's ``HOME``: aider keeps its state there (``~/.aider``: install id, caches), not in the user's.
    aider's own files land in ``workdir``: ``.aider.chat.history.md``, ``.aider.input.history`` and
    ``.aider.llm.history`` (every request and response, for the reader of a failed run).

    Streaming (aider's default, and what editors do) puts the gateway's server-sent events on trial, but
    aider then counts tokens itself (another tokenizer) and its "Cost:" line is an estimate. With
    ``stream=False`` aider shows the usage the gateway returned, and its cost equals what the key is charged.
    """
    config = home / ".inferbook-aider"
    config.mkdir(parents=True, exist_ok=True)
    model = f"openai/{alias}"
    metadata = config / "model-metadata.json"
    metadata.write_text(json.dumps(aider_model_metadata(gateway_url, key, alias, max_output_tokens), indent=1))
    settings = config / "model-settings.yml"
    settings.write_text(json.dumps([{"name": model, "edit_format": "whole", "use_repo_map": False,
                                     "extra_params": {"max_tokens": max_output_tokens}}], indent=1))  # JSON is YAML
    command = [str(python), "-m", "aider", "--model", model, "--model-settings-file", str(settings),
               "--model-metadata-file", str(metadata), *AIDER_OFFLINE_FLAGS,
               "--llm-history-file", ".aider.llm.history", *([] if stream else ["--no-stream"]),
               "--message", message, *files]
    gateway_host = urlsplit(gateway_url).hostname or "127.0.0.1"
    env = {
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OPENAI_API_BASE": gateway_url, "OPENAI_API_KEY": key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HTTP_PROXY": egress_proxy, "HTTPS_PROXY": egress_proxy, "ALL_PROXY": egress_proxy,
        "http_proxy": egress_proxy, "https_proxy": egress_proxy, "all_proxy": egress_proxy,
        "NO_PROXY": f"{gateway_host},localhost,127.0.0.1", "no_proxy": f"{gateway_host},localhost,127.0.0.1",
    }
    started = time.monotonic()
    proc = subprocess.run(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return AgentRun(command, proc.returncode, proc.stdout, time.monotonic() - started, workdir)
