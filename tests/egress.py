"""The egress guard's controls for a test session: its environment, its records and their report.

``tests/egress_guard/`` holds the guard itself (``sitecustomize.py`` for Python,
``guard.cjs`` for Node). A process started with :func:`guard_env` behaves as on a
machine with no network beyond loopback and no ``../shared`` beside the clone, and
records each attempt to reach either in the log file named by the environment.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

GUARD_DIR = Path(__file__).resolve().parent / "egress_guard"
ROOT = Path(__file__).resolve().parents[1]
#: What a user's clone does not have beside it; reading it is recorded like a network access.
FORBIDDEN = (ROOT.parent / "shared",)
def _pip_hosts() -> set[str]:
    """PyPI's own hosts (as pip names them) and every index this machine's pip is configured with."""
    hosts: set[str] = set()
    try:
        from pip._internal.models.index import PyPI  # pip's own record of PyPI's hosts

        hosts |= {PyPI.netloc, PyPI.file_storage_domain}
    except ImportError:
        pass
    urls = [os.environ.get(name, "") for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")]
    proc = _run([sys.executable, "-m", "pip", "config", "list"])
    urls += [line.partition("=")[2].strip("'\"") for line in proc.splitlines() if "index-url" in line]
    return {h for url in " ".join(urls).split() if (h := urlsplit(url).hostname)} | hosts


def _npm_hosts() -> set[str]:
    url = os.environ.get("npm_config_registry") or _run(["npm", "config", "get", "registry"]).strip()
    return {h} if (h := urlsplit(url).hostname) else set()


def _apt_hosts() -> set[str]:
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.sources"),
               *Path("/etc/apt/sources.list.d").glob("*.list")]
    hosts = set()
    for source in sources:
        try:
            text = source.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if line.strip().startswith("#"):
                continue
            hosts |= {h for word in line.split() if "://" in word and (h := urlsplit(word).hostname)}
    return hosts


def _run(argv: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "INFERBOOK_EGRESS_LOG"}  # the guard stays out of this
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def registry_hosts() -> tuple[str, ...]:
    """The package registries this machine is set up to reach (pip, npm, apt), which the guard lets through.

    A user's machine reaches them too: component environments and the model package are built from them
    on first use. They are read from the clients' own configuration, not listed here.
    """
    return tuple(sorted(_pip_hosts() | _npm_hosts() | _apt_hosts()))


def guard_env(log: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the guard loaded into Python and Node children."""
    env = dict(os.environ if base is None else base)
    python_path = [str(GUARD_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --require {GUARD_DIR / 'guard.cjs'}".strip()
    env["INFERBOOK_EGRESS_LOG"] = str(log)
    env["INFERBOOK_FORBIDDEN_PATHS"] = os.pathsep.join(str(p) for p in FORBIDDEN)
    env.setdefault("INFERBOOK_EGRESS_ALLOW", ",".join(registry_hosts()))
    return env


def install_here(log: Path) -> None:
    """Guard this process too (pytest itself), and every process it starts from now on."""
    os.environ.update(guard_env(log))
    spec = importlib.util.spec_from_file_location("inferbook_egress_guard", GUARD_DIR / "sitecustomize.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # installs itself: INFERBOOK_EGRESS_LOG is set


def size(log: Path) -> int:
    """Where the log ends now: a session reads only what was recorded after it started."""
    return log.stat().st_size if log.exists() else 0


def records(log: Path, *, allowed: bool = False, since: int = 0) -> list[dict[str, Any]]:
    """The refused attempts recorded after byte ``since``, oldest first (``allowed=True``: the registry accesses)."""
    if not log.exists():
        return []
    with log.open("rb") as handle:
        handle.seek(since)
        text = handle.read().decode("utf-8", errors="replace")
    found = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in found if bool(r.get("allowed")) == allowed]


def guarded(pid: int | None, log: Path) -> bool:
    """Whether process ``pid`` (or, for a supervised server, its reaper's server child) was started under the guard
    writing to ``log`` (a server reused across sessions)."""
    if pid is None:
        return False
    wanted = f"INFERBOOK_EGRESS_LOG={log}".encode()
    try:
        pids = [pid, *(child.pid for child in psutil.Process(pid).children())]
    except psutil.Error:
        return False
    for candidate in pids:
        try:
            if wanted in Path(f"/proc/{candidate}/environ").read_bytes().split(b"\0"):
                return True
        except OSError:
            continue
    return False


def report(found: list[dict[str, Any]]) -> str:
    """One line per attempt: what, where to, which process, from where in its code."""
    lines = []
    for r in found:
        frames = " <- ".join(list(reversed(r.get("frames") or []))[:3])
        lines.append(f"  {r['what']:12} {r['target']:45} {r['runtime']} pid {r['pid']} {' '.join(r['argv'])[:60]}"
                     f"{'  at ' + frames if frames else ''}")
    return "\n".join(lines)
