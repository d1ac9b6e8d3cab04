"""Continue's own CLI (npm ``@continuedev/cli``, binary ``cn``, pinned in package.json) works through the gateway.

One headless session per module: a fresh tenant key, the Continue config exactly as ``inferbook ide-config``
writes it, and ``cn -p PROMPT --config PATH`` in a temporary HOME whose ``.continue/.env`` (mode 0600) holds
``INFERBOOK_API_KEY``, the secret the config refers to. What the model answers is not the subject; what is proven is the
protocol: cn exits 0 and prints an answer, the key was charged, nothing else was called, and the key's value
is in no file cn wrote.

What cn does besides the chat call, and how the session deals with it:

- **version check**: at start-up, whatever the command (even ``cn --version``), cn calls
  ``GET https://api.continue.dev/cn/info?id=<machine id hash>``. No flag, setting or environment variable
  turns it off (``CONTINUE_API_BASE`` does not apply to it). Offline it fails silently and the session goes
  on. It uses Node's global ``fetch``, which in Node 20 ignores ``HTTP(S)_PROXY``: a preload script
  (``NODE_OPTIONS=--require``) sends every global ``fetch`` to a non-loopback host to the trap proxy instead,
  so the call is caught and answered 403. It is the one call allowed past the gateway (:data:`VERSION_CHECK`).
- **metrics**: cn exports OpenTelemetry metrics only if an ``OTEL_*`` exporter is configured;
  ``CONTINUE_CLI_ENABLE_TELEMETRY=0`` and ``CONTINUE_METRICS_ENABLED=0`` turn it off regardless.
- **hub**: with ``--config PATH`` and no ``cn login`` nothing is asked of the Continue hub.
- **model calls**: cn's own HTTP client honours ``HTTP(S)_PROXY`` and ``NO_PROXY``; the proxy variables point
  at the trap with only the loopback gateway exempt.
- **logs**: ``~/.continue/logs/cn.log``; never ``--verbose``, whose debug log holds the resolved API key.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferbook.layers.experience import ide_config
from inferbook.layers.llm_gateway import connect, enforcement
from inferbook.layers.llm_gateway.admin import Admin

from .egress_trap import EgressTrap

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CN = ROOT / "node_modules" / ".bin" / "cn"
PROMPT = "Say hello in one short sentence."
#: cn's start-up version check (see the module docstring): the only request allowed to reach the trap.
VERSION_CHECK = "GET https://api.continue.dev/cn/info?id="
#: Marks of a failed session on stderr or in cn's log: cn's error object, a Node stack, a refused connection.
ERROR_MARKERS = ('"status":"error"', "[error]", "Error:", "ECONNREFUSED", "ENOTFOUND", "    at ")

#: Preloaded into cn: Node 20's global fetch ignores the proxy variables, so calls to non-loopback hosts go to the trap.
FETCH_TO_TRAP = """\
const http = require("http");
const trap = new URL(process.env.HTTP_PROXY);
const original = globalThis.fetch;
globalThis.fetch = async function (input, init) {
  const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
  if (!["http:", "https:"].includes(url.protocol) || ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname)) {
    return original(input, init);
  }
  const method = (init && init.method) || (input && input.method) || "GET";
  return new Promise((resolve, reject) => {
    const req = http.request({ host: trap.hostname, port: trap.port, method, path: url.href }, (res) => {
      res.resume();
      res.on("end", () => resolve(new Response(null, { status: res.statusCode })));
    });
    req.on("error", reject);
    req.end();
  });
};
"""


@dataclass
class Session:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    alias: str
    key: str
    admin: Admin
    root: Path
    home: Path
    egress: list[str]


@pytest.fixture(scope="module")
def session(local_gateway, tmp_path_factory: pytest.TempPathFactory):
    if not CN.exists():
        pytest.fail(f"{CN.relative_to(ROOT)} is missing: run `make assets` (npm ci) to install the pinned Node "
                    "packages")
    node = shutil.which("node")
    assert node, "node is not on PATH; Continue's CLI needs Node 20 or later"
    root = tmp_path_factory.mktemp("continue-cli")
    home, work = root / "home", root / "work"
    (home / ".continue").mkdir(parents=True)
    work.mkdir()
    config = root / "config.yaml"
    config.write_text(ide_config.render(local_gateway.profile, "continue", local_gateway.url))
    preload = root / "fetch-to-trap.cjs"
    preload.write_text(FETCH_TO_TRAP)

    admin = connect(local_gateway.profile, local_gateway.layout, say=lambda m: None).admin()
    alias = f"test-continue-cli-{secrets.token_hex(4)}"
    key = admin.create_key(alias, ["coder-chat", "coder-fim"], max_budget=5)
    trap = EgressTrap()
    threading.Thread(target=trap.serve_forever, daemon=True).start()
    try:
        dotenv = home / ".continue" / ".env"
        dotenv.touch(mode=0o600)
        dotenv.write_text(f"{ide_config.DEFAULT_KEY_ENV}={key}\n")
        env = {
            "PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(home),
            "HTTP_PROXY": trap.url, "HTTPS_PROXY": trap.url, "http_proxy": trap.url, "https_proxy": trap.url,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "NODE_OPTIONS": f"--require {preload}",
            "CONTINUE_CLI_ENABLE_TELEMETRY": "0", "CONTINUE_METRICS_ENABLED": "0",
        }
        command = [str(CN), "-p", PROMPT, "--config", str(config)]
        started = time.monotonic()
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        seconds = time.monotonic() - started
        print(f"cn session: exit {proc.returncode} in {seconds:.1f} s\nstdout:\n{proc.stdout[-2000:]}\n"
              f"stderr:\n{proc.stderr[-2000:]}\negress: {trap.requests}", flush=True)
        yield Session(command, proc.returncode, proc.stdout, proc.stderr, seconds, alias, key, admin, root, home,
                      trap.requests)
    finally:
        trap.shutdown()
        trap.server_close()
        admin.revoke(alias)


def test_the_session_ends_normally_with_an_answer(session):
    assert session.returncode == 0, session.stderr[-3000:]
    assert session.stdout.strip(), "cn printed no answer"
    assert '"status":"error"' not in session.stdout


def test_no_error_markers(session):
    log = session.home / ".continue" / "logs" / "cn.log"
    text = session.stderr + (log.read_text() if log.exists() else "")
    found = [line for line in text.splitlines() if any(marker in line for marker in ERROR_MARKERS)]
    assert found == []


def test_nothing_else_was_called(session):
    others = [request for request in session.egress if not request.startswith(VERSION_CHECK)]
    assert others == [], f"cn tried to reach past the gateway: {others}"


def test_the_spend_shows_on_the_key(session):
    started = time.monotonic()
    spend = enforcement.wait_for_spend(session.admin, session.alias, 1e-9, say=lambda m: None, timeout=120)
    print(f"spend booked on {session.alias}: {spend:.8f} USD after {time.monotonic() - started:.0f} s")
    assert spend > 0


def test_the_key_is_only_in_the_env_file(session):
    dotenv = session.home / ".continue" / ".env"
    assert dotenv.stat().st_mode & 0o777 == 0o600
    written = [path for path in session.root.rglob("*") if path.is_file()]
    assert any(path.parent.name == "sessions" for path in written), "cn kept no session file"
    leaked = [str(path) for path in written if path != dotenv and session.key.encode() in path.read_bytes()]
    assert leaked == []
    assert session.key not in " ".join(session.command)
