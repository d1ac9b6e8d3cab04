"""Preflight: is this machine and this target ready for the book?

Each check is a row a reader can verify (what was expected, what was observed,
how to fix it). Nothing here changes the target; it only looks. A port held by this profile's own
healthy process is recognised by the layer that binds it (the registry, :data:`inferbook.layers.LAYERS`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

import pandas as pd
import psutil

from . import targets
from .errors import PreflightFailed
from .layers import LAYERS
from .paths import default_cache_dir
from .process import port_holder
from .profile import Profile

GIB = 1024**3


@dataclass(frozen=True)
class Check:
    """One preflight verdict."""

    check: str
    status: str  # ok | warn | fail
    expected: str
    observed: str
    fix: str = ""


@dataclass(frozen=True)
class Report:
    """A set of checks, shown as a table and saved as an artefact."""

    checks: tuple[Check, ...]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.checks]).set_index("check")

    def verdict(self) -> str:
        """One sentence for the reader; raises :class:`PreflightFailed` when any check failed."""
        warns = sum(c.status == "warn" for c in self.checks)
        if self.failures:
            lines = "; ".join(f"{c.check}: {c.observed} (fix: {c.fix})" for c in self.failures)
            raise PreflightFailed(f"{len(self.failures)} of {len(self.checks)} preflight checks failed: {lines}")
        extra = f", {warns} with a warning" if warns else ""
        return f"All {len(self.checks)} checks passed{extra}: the target is ready."

    def verification(self, tools: pd.DataFrame | None = None) -> pd.DataFrame:
        """The chapter's verification table: each target check, and each tool, as check/expected/observed/pass.

        A warning passes (it is shown, not fatal); a failure does not.
        """
        rows = [{"check": c.check, "expected": c.expected, "observed": c.observed, "pass": c.status != "fail",
                 "fix": c.fix} for c in self.checks]
        for tool, row in (tools if tools is not None else pd.DataFrame()).iterrows():
            rows.append({"check": f"tool {tool}", "expected": f"installed ({row['needed for']})",
                         "observed": row["version"], "pass": row["status"] != "fail",
                         "fix": "" if row["status"] != "fail" else "run `make venv` to install it"})
        return pd.DataFrame(rows).set_index("check")

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([asdict(c) for c in self.checks], indent=2) + "\n", encoding="utf-8")
        return path


# --------------------------------------------------------------------------- tool versions


def _package(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _command_version(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else None


def tool_versions(profile: Profile) -> pd.DataFrame:
    """Versions of what the book runs on, with what each is needed for."""
    py = platform.python_version()
    rows: list[tuple[str, str | None, str, bool]] = [
        ("python", py, "everything (3.11 expected)", True),
        ("inferbook", _package("inferbook"), "the notebooks' library", True),
        ("papermill", _package("papermill"), "headless chapter runs", True),
        ("nbclient", _package("nbclient"), "notebook execution", True),
        ("jupyter-book", _package("jupyter-book"), "the static site", True),
        ("pandas", _package("pandas"), "tables in the book", True),
        ("kubernetes (client)", _package("kubernetes"), "kube targets", targets.kind_of(profile).applies),
        ("node", _command_version(["node", "--version"]), "vendoring MathJax for the offline site", False),
        ("git", _command_version(["git", "--version"]), "commit stamp of each run", False),
        ("chromium", _command_version(["chromium", "--version"]), "page screenshots in the tests", False),
    ]
    table = []
    for tool, found, purpose, required in rows:
        if found:
            status = "ok"
            if tool == "python" and not py.startswith("3.11"):
                status = "warn"
        else:
            status = "fail" if required else "warn"
        table.append({"tool": tool, "version": found or "not found", "needed for": purpose, "status": status})
    return pd.DataFrame(table).set_index("tool")


# --------------------------------------------------------------------------- target checks


def check_target(profile: Profile, run_dir: Path, cache_dir: Path | None = None,
                 kubeconfig: str | None = None) -> Report:
    """Reachability of the profile's target: local resources, or the cluster's API server.

    ``kubeconfig`` defaults to ``$KUBECONFIG`` read now (the client library reads it once, at import).
    """
    if targets.kind_of(profile).local_processes:
        checks = _local_checks(profile, Path(run_dir), cache_dir or default_cache_dir())
    else:
        checks = _kube_checks(profile, kubeconfig or os.environ.get("KUBECONFIG") or None)
    return Report(tuple(checks))


def _local_checks(profile: Profile, run_dir: Path, cache_dir: Path) -> Iterable[Check]:
    local = profile.data["local"]
    for layer, port in local["ports"].items():
        if not _port_in_use_by_profile(profile, layer):
            continue
        holder = port_holder(port)
        reused = _our_layer(profile, layer) if holder else None
        if holder is None:
            yield Check(f"port {port} ({layer})", "ok", "free on 127.0.0.1", "free")
        elif reused:
            # this profile's own healthy layer: the chapters reuse it (kept short: the table stays one block)
            yield Check(f"port {port} ({layer})", "ok", "free on 127.0.0.1", "ours (reused)")
        else:
            yield Check(f"port {port} ({layer})", "fail", "free on 127.0.0.1", f"in use by {holder}",
                        f"stop that process, or set local.ports.{layer} in the profile (or -p local.ports.{layer}=N)")
    need_disk = float(local["min_free_disk_gb"])
    for label, folder in (("run folder", run_dir), ("model cache", cache_dir)):
        free = shutil.disk_usage(_existing_parent(folder)).free / GIB
        status = "ok" if free >= need_disk else "fail"
        yield Check(f"disk ({label})", status, f">= {need_disk:g} GiB free", f"{free:.1f} GiB free",
                    "" if status == "ok" else f"free space under {folder}, or lower local.min_free_disk_gb")
    need_mem = float(local["min_free_memory_gb"])
    available = psutil.virtual_memory().available / GIB
    status = "ok" if available >= need_mem else "fail"
    yield Check("memory", status, f">= {need_mem:g} GiB available", f"{available:.1f} GiB available",
                "" if status == "ok" else "stop other programs, or lower local.min_free_memory_gb")
    cpus = psutil.cpu_count(logical=True) or 1
    yield Check("cpu", "ok" if cpus >= 2 else "warn", ">= 2 cores", f"{cpus} cores",
                "" if cpus >= 2 else "vLLM on one core is very slow; expect long chapters")


def _port_in_use_by_profile(profile: Profile, port_key: str) -> bool:
    """Whether a layer this profile enables binds the port of ``port_key`` (a port of a layer left off is not
    checked: the routing layer's five ports matter only with features.routing)."""
    owners = [layer for layer in LAYERS if port_key in layer.ports]
    return not owners or any(layer.name in profile.features for layer in owners)


def _our_layer(profile: Profile, port_key: str) -> str | None:
    """A description of this profile's own healthy process on the port of ``port_key`` (reused), else None.

    Asks the layer that binds the port (its declaration's ``owner``); it only looks, never generates a secret.
    """
    for layer in LAYERS:
        if port_key in layer.ports and layer.owner is not None:
            return layer.owner(profile, port_key)
    return None


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _kube_checks(profile: Profile, kubeconfig: str | None) -> Iterable[Check]:
    from kubernetes import client, config  # imported here: local runs never need it

    context = profile.data["target"].get("context", "")
    try:
        contexts, _active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError, TypeError) as exc:
        yield Check("kubeconfig", "fail", "a readable kubeconfig", f"none usable ({exc})",
                    "create one (kind create cluster, gcloud container clusters get-credentials) or set KUBECONFIG")
        return
    names = [c["name"] for c in contexts]
    if context not in names:
        yield Check(f"context {context}", "fail", "present in kubeconfig",
                    f"absent (have: {', '.join(names) or 'none'})",
                    "set target.context to one of those, or create the cluster")
        return
    yield Check(f"context {context}", "ok", "present in kubeconfig", "present")
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        info = client.VersionApi(api_client).get_code(_request_timeout=10)
    except Exception as exc:  # urllib3 and ApiException alike: the verdict is "unreachable"
        yield Check("API server", "fail", "reachable", f"unreachable ({type(exc).__name__}: {str(exc)[:120]})",
                    "start the cluster or fix network access; `kubectl --context "
                    f"{context} version` shows the same")
        return
    yield Check("API server", "ok", "reachable", f"Kubernetes {info.git_version}")
    namespace = profile.data["target"]["namespace"]
    try:
        client.CoreV1Api(api_client).read_namespace(namespace, _request_timeout=10)
        yield Check(f"namespace {namespace}", "ok", "exists or creatable", "exists")
    except client.ApiException as exc:
        if exc.status == 404:
            yield Check(f"namespace {namespace}", "ok", "exists or creatable",
                        "absent: create it (kubectl create namespace) before the layers are applied")
        else:
            yield Check(f"namespace {namespace}", "fail", "readable", f"HTTP {exc.status} {exc.reason}",
                        "grant this identity read access to namespaces")
