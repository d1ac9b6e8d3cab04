"""Prometheus' own programs: the server and ``promtool``, from Debian's ``prometheus`` package.

``promtool check rules`` validates a rules file as the server will read it; ``promtool test rules`` runs
a rules unit test (synthetic series in, expected alerts out). Both judge the rules extracted from the
rendered PrometheusRule, so the tests and the local target check the very text a cluster loads.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ...errors import InferbookError

#: Where Debian's package puts the programs (also found on PATH).
DEBIAN_BIN = Path("/usr/bin")


class PrometheusNotInstalled(InferbookError):
    """Neither the server nor promtool is installed."""


class RulesInvalid(InferbookError):
    """``promtool`` rejected a rules file, or a rules unit test failed."""


def program(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; an error naming the package to install."""
    found = shutil.which(name) or (str(DEBIAN_BIN / name) if (DEBIAN_BIN / name).is_file() else None)
    if found is None:
        raise PrometheusNotInstalled(
            f"`{name}` was not found. Fix: install Prometheus (Debian: `sudo apt-get install prometheus`; "
            "`make run` and `make test` do this as root or with passwordless sudo), or use a kube target")
    return found


def version() -> str | None:
    """The installed server's version line, or None when it is not installed."""
    try:
        proc = subprocess.run([program("prometheus"), "--version"], capture_output=True, text=True, timeout=20)
    except (PrometheusNotInstalled, OSError, subprocess.TimeoutExpired):
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if lines else None


def _run(args: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run([program("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise RulesInvalid(f"promtool rejected {what}:\n{output[-3000:]}\nFix: correct "
                           "manifests/observability/monitoring/prometheusrule.yaml (or the test's series)")
    return output


def check_rules(path: Path) -> str:
    """``promtool check rules PATH``: its report (``SUCCESS: N rules found``); raises when it fails."""
    return _run(["check", "rules", str(path)], str(path))


def unit_test_rules(path: Path) -> str:
    """``promtool test rules PATH`` (run from the test file's folder, which its ``rule_files`` are relative to)."""
    return _run(["test", "rules", path.name], f"the rules unit test {path}", cwd=path.parent)
