"""Preflight checks: each can fail, and says how to fix it."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from inferbook import load_profile
from inferbook.errors import PreflightFailed
from inferbook.preflight import check_target, tool_versions
from inferbook.process import port_holder

from .conftest import free_port


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (each bound at once, then all released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_a_free_local_target_passes(tmp_path):
    layers = ["serving", "llm-gateway", "postgres", "prometheus"]
    ports = {f"local.ports.{layer}": port for layer, port in zip(layers, free_ports(len(layers)), strict=True)}
    profile = load_profile("local", overrides={**ports, "local.min_free_disk_gb": 0.001,
                                               "local.min_free_memory_gb": 0.001})
    report = check_target(profile, run_dir=tmp_path, cache_dir=tmp_path)
    assert report.failures == []
    assert report.verdict().startswith(f"All {len(report.checks)} checks passed")


def test_a_port_in_use_fails_and_names_the_holder(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_holder(port) is not None and "pid" in port_holder(port)
        profile = load_profile("local", overrides={"local.ports.serving": port})
        report = check_target(profile, run_dir=tmp_path, cache_dir=tmp_path)
        [failed] = [c for c in report.failures if c.check.startswith(f"port {port}")]
        assert "in use by pid" in failed.observed
        assert "local.ports.serving" in failed.fix
        with pytest.raises(PreflightFailed, match=f"port {port} \\(serving\\)"):
            report.verdict()


def test_too_little_memory_or_disk_fails(tmp_path):
    profile = load_profile("local", overrides={"local.min_free_memory_gb": 1e6, "local.min_free_disk_gb": 1e9})
    failed = {c.check for c in check_target(profile, run_dir=tmp_path, cache_dir=tmp_path).failures}
    assert {"memory", "disk (run folder)", "disk (model cache)"} <= failed


def test_tool_versions_list_what_the_book_runs_on():
    table = tool_versions(load_profile("local"))
    assert table.loc["papermill", "status"] == "ok"
    assert table.loc["python", "version"].startswith("3.")
    assert set(table["status"]) <= {"ok", "warn", "fail"}


# --------------------------------------------------------------------------- kube targets


class FakeApiServer(BaseHTTPRequestHandler):
    """Test double of a Kubernetes API server: answers /version, and 404 for the namespace."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        if self.path.startswith("/version"):
            body, status = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-fake", "gitCommit": "0" * 40,
                            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                            "compiler": "gc", "platform": "linux/amd64"}, 200
        else:
            body, status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                            "code": 404}, 404
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def kubeconfig(path: Path, server: str, context: str = "lab") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "test-token"}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


@pytest.fixture
def api_server():
    server = HTTPServer(("127.0.0.1", 0), FakeApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_reachable_cluster_passes_and_reports_its_version(tmp_path, api_server):
    profile = load_profile("kind", overrides={"target.context": "lab"})
    report = check_target(profile, run_dir=tmp_path, kubeconfig=str(kubeconfig(tmp_path / "kc", api_server)))
    table = report.table()
    assert report.failures == []
    assert table.loc["API server", "observed"] == "Kubernetes v1.37.0-fake"
    assert table.loc["namespace inferbook", "observed"].startswith("absent: create it (kubectl create namespace)")


def test_an_unknown_context_fails_and_lists_the_known_ones(tmp_path, api_server):
    profile = load_profile("kind")  # context kind-inferbook
    report = check_target(profile, run_dir=tmp_path, kubeconfig=str(kubeconfig(tmp_path / "kc", api_server)))
    [failed] = report.failures
    assert failed.check == "context kind-inferbook" and "have: lab" in failed.observed


def test_an_unreachable_api_server_fails(tmp_path):
    profile = load_profile("kind", overrides={"target.context": "lab"})
    dead = f"http://127.0.0.1:{free_port()}"
    report = check_target(profile, run_dir=tmp_path, kubeconfig=str(kubeconfig(tmp_path / "kc", dead)))
    [failed] = report.failures
    assert failed.check == "API server" and failed.observed.startswith("unreachable")
    with pytest.raises(PreflightFailed, match="API server"):
        report.verdict()


def test_a_missing_kubeconfig_fails_with_how_to_make_one(tmp_path):
    profile = load_profile("kind")
    [failed] = check_target(profile, run_dir=tmp_path, kubeconfig=str(tmp_path / "absent")).failures
    assert failed.check == "kubeconfig" and "kind create cluster" in failed.fix
