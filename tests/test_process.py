"""Local server processes: a server started with another configuration is restarted, not silently reused."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import psutil

from inferbook.process import ServerProcess, fingerprint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(tmp_path, port: int) -> tuple[ServerProcess, subprocess.Popen]:
    """A real HTTP server on a loopback port, launched and recorded as a layer's server is."""
    marker = f"inferbook-test-server-{port}"
    server = ServerProcess("demo", port, marker, tmp_path / "state.json", tmp_path / "demo.log")
    argv = [sys.executable, "-c", f"import http.server; print('{marker}'); "
            f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()",
            marker]
    proc = server.launch(argv, {}, tmp_path)
    deadline = time.monotonic() + 20
    while server.pid() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return server, proc


def test_the_fingerprint_changes_with_any_part_and_not_with_key_order():
    base = fingerprint({"a": 1, "b": [1, 2]}, ["--port=1"])
    assert base == fingerprint({"b": [1, 2], "a": 1}, ["--port=1"])
    assert base != fingerprint({"a": 1, "b": [1, 3]}, ["--port=1"])
    assert base != fingerprint({"a": 1, "b": [1, 2]}, ["--port=2"])


def test_a_server_started_with_the_same_configuration_is_reused(tmp_path):
    server, proc = serve(tmp_path, free_port())
    try:
        server.record(fingerprint="config-1")
        said: list[str] = []
        assert server.reusable("config-1", said.append) and said == []
        assert proc.poll() is None
    finally:
        server.stop(lambda _: None)


def test_a_server_started_with_another_configuration_is_stopped_and_says_so(tmp_path):
    server, proc = serve(tmp_path, free_port())
    pid = proc.pid
    server.record(fingerprint="config-1")
    said: list[str] = []
    assert not server.reusable("config-2", said.append)
    assert "demo: the running server was started with another configuration; restarting it" in said
    proc.wait(timeout=30)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert server.state() == {}


def test_a_server_without_a_recorded_configuration_is_reused_as_is(tmp_path):
    server, proc = serve(tmp_path, free_port())
    try:
        assert server.reusable("anything", lambda _: None) and proc.poll() is None
    finally:
        server.stop(lambda _: None)
