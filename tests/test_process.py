"""Local server processes under supervision: reused only when ours and unchanged, restarted when they crash,
stopped as a whole with nothing left behind."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from inferbook.process import LayerDied, ServerProcess, fingerprint, port_holder
from inferbook.supervise import Supervisor

from .conftest import free_port

#: A real HTTP server that, like vLLM's API server, starts a helper process of its own (here: a sleeper).
SERVER = """
import http.server, subprocess, sys

port, marker = int(sys.argv[1]), sys.argv[2]
helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)', marker + '-helper'])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(helper.pid).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
http.server.HTTPServer(('127.0.0.1', port), Handler).serve_forever()
"""




def helper_pid(port: int) -> int | None:
    """The pid of the server's helper process, as the server reports it; None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return int(response.read())
    except OSError:
        return None


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout} s: {condition}")


@pytest.fixture
def server(tmp_path: Path):
    """A supervised demo server on a free port (stopped, with its supervisord, at the end)."""
    port = free_port()
    marker = f"inferbook-test-server-{port}"
    supervisor = Supervisor(tmp_path / "state")
    proc = ServerProcess("demo", port, marker, tmp_path / "state.json", tmp_path / "demo.log", supervisor)
    proc.launch([sys.executable, "-c", SERVER, str(port), marker], {"PATH": "/usr/bin:/bin"}, tmp_path)
    proc.wait(lambda: helper_pid(port) is not None, 60, lambda _: None, "the demo server")
    yield proc
    proc.stop(lambda _: None)


def test_the_fingerprint_changes_with_any_part_and_not_with_key_order():
    base = fingerprint({"a": 1, "b": [1, 2]}, ["--port=1"])
    assert base == fingerprint({"b": [1, 2], "a": 1}, ["--port=1"])
    assert base != fingerprint({"a": 1, "b": [1, 3]}, ["--port=1"])
    assert base != fingerprint({"a": 1, "b": [1, 2]}, ["--port=2"])


def test_a_server_started_with_the_same_configuration_is_reused(server):
    server.record(fingerprint="config-1")
    said: list[str] = []
    pid = server.pid()
    assert server.reusable("config-1", said.append) and said == []
    assert server.pid() == pid and server.facts()["process"] in ("starting", "running")


def test_a_server_started_with_another_configuration_is_stopped_and_says_so(server):
    server.record(fingerprint="config-1")
    pid = server.pid()
    said: list[str] = []
    assert not server.reusable("config-2", said.append)
    assert "demo: the running server was started with another configuration; restarting it" in said
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert server.state() == {} and port_holder(server.port) is None


def test_a_crashed_server_is_restarted_and_leaves_no_orphan(server):
    old_helper = helper_pid(server.port)
    reaper = psutil.Process(server.pid())
    [serving] = [p for p in reaper.children() if "http.server" in " ".join(p.cmdline())]
    serving.kill()  # the server dies the way a killed vLLM does: its helper is not told
    new_helper = wait_for(lambda: (h := helper_pid(server.port)) not in (None, old_helper) and h)
    assert new_helper != old_helper
    assert not psutil.pid_exists(old_helper) or psutil.Process(old_helper).status() == psutil.STATUS_ZOMBIE
    assert server.supervised() and server.pid() != reaper.pid


def test_stop_leaves_no_process_no_port_and_no_supervisor(server):
    reaper = psutil.Process(server.pid())
    family = [reaper, *reaper.children(recursive=True)]
    assert len(family) >= 3  # reaper, server, helper
    assert server.stop(lambda _: None)
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert alive == []
    assert port_holder(server.port) is None
    assert not server.supervisor.running()


def test_a_server_that_exits_before_it_is_ready_fails_with_its_log(tmp_path: Path):
    supervisor = Supervisor(tmp_path / "state")
    proc = ServerProcess("demo", free_port(), "never", tmp_path / "state.json", tmp_path / "demo.log", supervisor)
    proc.launch([sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"], {}, tmp_path)
    with pytest.raises(LayerDied, match=r"(?s)demo exited with status .*before it became healthy.*bad flag --nope"):
        proc.wait(lambda: False, 120, lambda _: None, "nothing")
    assert not supervisor.running()  # a failed start is not retried forever, and its supervisor goes too


def _tree_pids(server: ServerProcess) -> set[int]:
    return {p.pid for p in server.tree()}


@pytest.mark.parametrize("victim", ["reaper", "server", "helper"])
def test_kill_9_of_any_process_of_the_tree_leaves_no_orphan_and_status_names_the_server(server, victim):
    """``kill -9`` of the reaper (the OOM killer's pick, a user's mistake), of the server or of its helper:
    afterwards one server serves, under supervision, nothing of the old tree lives on beside it, status names
    the process that listens, and one ``stop`` clears everything."""
    reaper = psutil.Process(server.pid())
    [serving] = [p for p in reaper.children() if "http.server" in " ".join(p.cmdline())]
    old_helper = helper_pid(server.port)
    assert _tree_pids(server) == {serving.pid, old_helper}  # the reaper carries no tag; what it runs does
    facts = server.facts()
    assert facts["pid"] == serving.pid and facts["supervisor_pid"] == reaper.pid and facts["unsupervised"] == ""
    victim_pid = {"reaper": reaper.pid, "server": serving.pid, "helper": old_helper}[victim]
    psutil.Process(victim_pid).kill()
    if victim == "helper":  # the server lives on without its helper: nothing to restart, nothing left
        wait_for(lambda: old_helper not in _tree_pids(server))
        assert server.facts()["pid"] == serving.pid and server.leftovers() == []
    else:
        wait_for(lambda: (h := helper_pid(server.port)) not in (None, old_helper) and h)
        wait_for(lambda: not ({serving.pid, old_helper} & _tree_pids(server)))
        assert server.leftovers() == []
        facts = server.facts()
        new_reaper = psutil.Process(server.pid())
        assert facts["supervisor_pid"] == new_reaper.pid and facts["pid"] in {c.pid for c in new_reaper.children()}
        assert facts["unsupervised"] == "" and facts["pid"] not in (serving.pid, reaper.pid)
    family = server.tree()
    assert server.stop(lambda _: None)
    assert server.tree() == [] and port_holder(server.port) is None
    assert psutil.wait_procs(family, timeout=30)[1] == []


def test_a_tree_that_outlived_its_supervisor_is_reported_and_stopped_in_one_call(server):
    """supervisord itself killed: its program's processes live on, unsupervised. Status says so and names
    them; one ``stop`` clears them."""
    family = server.tree()
    daemon = int((server.supervisor.dir / "supervisord.pid").read_text())
    psutil.Process(daemon).kill()
    wait_for(lambda: not server.supervisor.running())
    facts = server.facts()
    assert facts["supervisor_pid"] is None and "outlived their supervision" in facts["unsupervised"]
    assert server.pid() is not None
    said: list[str] = []
    assert server.stop(said.append)
    assert psutil.wait_procs(family, timeout=30)[1] == [] and server.tree() == []
    assert port_holder(server.port) is None and said


def test_status_names_a_stranger_holding_the_port(tmp_path: Path):
    port = free_port()
    stranger = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_holder(port) is not None)
        proc = ServerProcess("demo", port, "never", tmp_path / "s.json", tmp_path / "d.log",
                             Supervisor(tmp_path / "st"))
        facts = proc.facts()
        assert facts["pid"] is None and f"held by pid {stranger.pid}" in facts["unsupervised"]
        assert not proc.stop(lambda _: None) and stranger.poll() is None  # a stranger is not ours to stop
    finally:
        stranger.kill()
