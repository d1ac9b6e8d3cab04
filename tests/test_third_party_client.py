"""A third-party coding agent works through the tenant gateway: aider (pinned in envs/aider.txt), headless.

One session per module: a fresh tenant key, a tiny sample project, ``aider --message`` against the local
gateway. Whether the 1.5B model writes a correct edit is not the subject; what is proven is the protocol:
aider exits normally, the gateway answered it, nothing tried to leave for the internet, the key was charged,
and the key's value is in no file aider wrote.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferbook.envs import AIDER
from inferbook.layers.experience.aider import AgentRun, run_aider
from inferbook.layers.llm_gateway.admin import Admin

from .egress_trap import EgressTrap

pytestmark = pytest.mark.slow

SAMPLE = {
    "calc.py": "def add(a, b):\n    return a + b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}
MESSAGE = "Reply with the whole file calc.py, with a new function sub(a, b) that returns a - b added after add."


@dataclass
class Session:
    run: AgentRun
    alias: str
    key: str
    admin: Admin
    root: Path
    egress: list[str]


def key_spend(admin: Admin, alias: str) -> float:
    return next((row["spend_usd"] or 0.0 for row in admin.keys() if row["alias"] == alias), 0.0)


@pytest.fixture(scope="module")
def session(local_gateway, tmp_path_factory: pytest.TempPathFactory):
    python = AIDER.ensure(local_gateway.cache_dir, say=lambda m: print(m, flush=True))
    root = tmp_path_factory.mktemp("aider")
    repo, home = root / "repo", root / "home"
    repo.mkdir()
    for name, text in SAMPLE.items():
        (repo / name).write_text(text)
    admin = Admin(local_gateway.base, local_gateway.master_key())
    alias = f"test-aider-{secrets.token_hex(4)}"
    key = admin.create_key(alias, ["coder-chat"], max_budget=1)
    trap = EgressTrap()
    threading.Thread(target=trap.serve_forever, daemon=True).start()
    try:
        run = run_aider(python, repo, home, local_gateway.url, key, MESSAGE, ["calc.py"], egress_proxy=trap.url)
        print(f"aider session: exit {run.returncode} in {run.seconds:.1f} s\n{run.output}", flush=True)
        yield Session(run, alias, key, admin, root, trap.requests)
    finally:
        trap.shutdown()
        trap.server_close()
        admin.revoke(alias)


def test_the_session_ends_normally_without_protocol_errors(session):
    run = session.run
    assert run.returncode == 0, run.output[-3000:]
    assert run.problems() == [], run.output[-3000:]
    assert "Model: openai/coder-chat" in run.output


def test_the_gateway_answered_the_client(session):
    history = (session.run.workdir / ".aider.llm.history").read_text()
    assert "TO LLM" in history and "LLM RESPONSE" in history


def test_nothing_else_was_called(session):
    assert session.egress == [], f"aider tried to reach past the gateway: {session.egress}"


def test_the_spend_shows_on_the_key(session):
    started, spend = time.monotonic(), 0.0
    while time.monotonic() - started < 120:  # LiteLLM writes the spend ledger in batches
        spend = key_spend(session.admin, session.alias)
        if spend > 0:
            break
        time.sleep(5)
    print(f"spend booked on {session.alias}: {spend:.8f} USD after {time.monotonic() - started:.0f} s")
    assert spend > 0
    # aider prices the session with the prices the gateway published (/v1/model/info); streaming, it counts the
    # tokens with its own tokenizer, so its figure is an estimate of the charge, not the charge (about 10% low)
    told = re.search(r"Cost: \$([0-9.]+) message", session.run.output)
    assert told, session.run.output[-2000:]
    assert float(told.group(1)) / 2 <= spend <= float(told.group(1)) * 2


def test_the_key_is_in_no_file_the_client_wrote(session):
    written = [path for path in session.root.rglob("*") if path.is_file()]
    assert any(path.name == ".aider.chat.history.md" for path in written)
    leaked = [str(path) for path in written if session.key.encode() in path.read_bytes()]
    assert leaked == []
    assert session.key not in " ".join(session.run.command)
