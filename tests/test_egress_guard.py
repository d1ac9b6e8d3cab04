"""The egress guard itself: it refuses and records, for Python and Node children, and the session runs under it.

These controls use their own log files, so their deliberate attempts do not fail the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import egress
from .conftest import EGRESS_LOG, ROOT

REACH_OUT = """
import socket, urllib.request
for attempt in (lambda: urllib.request.urlopen("https://example.com/", timeout=5),
                lambda: socket.create_connection(("203.0.113.9", 443), 5),
                lambda: open(SHARED + "/design/architecture.md")):
    try:
        attempt()
        print("REACHED")
    except OSError as exc:
        print("refused:", exc)
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
socket.create_connection(server.getsockname(), 5).close()
print("loopback ok")
"""


def test_a_guarded_python_process_is_refused_and_every_attempt_is_recorded(tmp_path: Path) -> None:
    log = tmp_path / "attempts.jsonl"
    code = f"SHARED = {str(egress.FORBIDDEN[0])!r}\n" + REACH_OUT
    proc = subprocess.run([sys.executable, "-c", code], env=egress.guard_env(log), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "REACHED" not in proc.stdout and proc.stdout.count("refused:") == 3 and "loopback ok" in proc.stdout
    found = egress.records(log)
    assert [(r["what"], r["target"]) for r in found] == [
        ("dns", "example.com"), ("connect-tcp", "203.0.113.9:443"),
        ("read", str(egress.FORBIDDEN[0] / "design" / "architecture.md"))]
    assert all(r["runtime"] == "python" and r["pid"] for r in found)
    assert "example.com" in egress.report(found)


def test_a_guarded_node_process_is_refused_and_recorded(tmp_path: Path) -> None:
    log = tmp_path / "attempts.jsonl"
    script = ("fetch('https://api.example.org/').then(() => console.log('REACHED'))"
              ".catch((e) => console.log('refused:', (e.cause || e).code));")
    proc = subprocess.run(["node", "-e", script], env=egress.guard_env(log), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "refused: ECONNREFUSED"
    assert [(r["runtime"], r["what"], r["target"]) for r in egress.records(log)] == [
        ("node", "connect-tcp", "api.example.org:443")]


def test_the_session_and_every_process_it_starts_run_under_the_guard(tmp_path: Path) -> None:
    assert os.environ["INFERBOOK_EGRESS_LOG"] == str(EGRESS_LOG)
    assert str(egress.GUARD_DIR) in os.environ["PYTHONPATH"].split(os.pathsep)
    assert "guard.cjs" in os.environ["NODE_OPTIONS"]
    # A child started with the session's environment (only the log moved aside) is guarded.
    log = tmp_path / "child.jsonl"
    env = {**os.environ, "INFERBOOK_EGRESS_LOG": str(log)}
    proc = subprocess.run([sys.executable, "-c", "import socket; socket.getaddrinfo('models.example.net', 443)"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "egress guard" in proc.stderr
    assert [r["target"] for r in egress.records(log)] == ["models.example.net"]


def test_a_package_registry_is_let_through_and_recorded_as_allowed(tmp_path: Path) -> None:
    """Building an environment on first use reaches the registries, as on a user's machine; nothing else passes."""
    log = tmp_path / "attempts.jsonl"
    env = {**egress.guard_env(log), "INFERBOOK_EGRESS_ALLOW": "registry.invalid"}
    code = ("import socket\n"
            "for name in ('registry.invalid', 'other.invalid'):\n"
            "    try: socket.getaddrinfo(name, 443)\n"
            "    except OSError as exc: print(name, exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert "egress guard" not in lines["registry.invalid"]  # the real resolver answered (.invalid never resolves)
    assert "egress guard" in lines["other.invalid"]
    assert [r["target"] for r in egress.records(log, allowed=True)] == ["registry.invalid"]
    assert [r["target"] for r in egress.records(log)] == ["other.invalid"]
    from pip._internal.models.index import PyPI

    assert PyPI.netloc in egress.registry_hosts()  # read from pip's own configuration, as npm's and apt's


def test_no_project_file_names_the_design_folder() -> None:
    """The project reads nothing from ../shared: no source, notebook, profile, manifest or make target names it."""
    offenders = []
    for folder in ("src", "notebooks", "profiles", "manifests", "book"):
        for path in (ROOT / folder).rglob("*"):
            if (".egg-info" not in str(path) and path.is_file()
                    and path.suffix in {".py", ".ipynb", ".yaml", ".yml", ".md", ".json", ".mjs", ".txt"}):
                text = path.read_text(encoding="utf-8", errors="replace")
                if "../shared" in text or "shared/crds" in text:
                    offenders.append(str(path.relative_to(ROOT)))
    for name in ("Makefile", "_config.yml", "_toc.yml", ".ci/run"):
        if "shared" in (ROOT / name).read_text(encoding="utf-8"):
            offenders.append(name)
    assert offenders == []
