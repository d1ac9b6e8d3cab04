"""Faults on the live local stack: each drill of the resilience chapter, and what `down` and Ctrl-C leave behind.

The drills run against the session's stack (vLLM, the LiteLLM proxy, its Postgres ledger, all supervised)
and must leave it serving; the `down` and Ctrl-C tests use a profile of their own (another name, other
ports), so they never touch the session's servers.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from inferbook import load_profile, stack
from inferbook.layers import resilience
from inferbook.layers.llm_gateway import LocalGateway
from inferbook.paths import Layout
from inferbook.process import port_holder
from inferbook.supervise import Supervisor

from .conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def drill(local_gateway):
    return resilience.Stack.open(local_gateway.profile, local_gateway.layout, say=lambda m: print(m, file=sys.stderr))


def test_a_killed_vllm_fails_the_stream_at_once_is_covered_meanwhile_and_returns_with_no_orphan(drill):
    """Without routing the gateway answers 503 naming vLLM while it is away; with routing (on in `local`) the router
    sends the calls meanwhile to another replica of the pool."""
    result = resilience.kill_serving_mid_stream(drill)
    assert result.passed, result
    assert "orphaned processes: 0" in result.observed
    if drill.routing is None:
        assert "503" in result.observed
    elif "canary" not in result.fault:
        assert "3 calls through the gateway answered 200, 200, 200" in result.observed


def test_a_killed_proxy_is_restarted_and_keeps_its_keys_and_spend(drill):
    result = resilience.kill_proxy(drill)
    assert result.passed and result.data_lost == "none", result


def test_a_killed_ledger_is_restarted_and_loses_nothing(drill):
    result = resilience.kill_ledger(drill)
    assert result.passed and result.data_lost == "none", result


def test_with_the_ledger_down_known_keys_work_unknown_keys_are_refused_and_status_names_the_ledger(drill):
    result = resilience.ledger_outage(drill, lambda: stack.up(drill.profile, drill.layout, until="llm-gateway",
                                                              say=lambda _: None))
    assert "unknown key 401" in result.observed, result
    assert "known key 200" in result.observed and "ledger" in result.observed, result
    assert result.passed, result


def _own_profile(tmp_path: Path, name: str, ports: dict[str, int]) -> Path:
    """A copy of the local profile under another name (its own supervisor, secrets, ledger) and other ports.

    Without the coder and the routing layer: these tests stop and interrupt the stack's processes, a second
    llama-server or router pool would only add memory, and ``down`` stops a server of inferbook's that holds one of
    the profile's ports (the session's own hold local.ports.coder and the routing ports)."""
    data = yaml.safe_load((ROOT / "profiles" / "local.yaml").read_text())
    # every other port of its own too: ``down`` stops each layer's servers by port, whatever the features say
    # (a leftover of an earlier run is stopped too), so a shared default port would stop the session's server
    for key in load_profile("local").data["local"]["ports"]:  # with the schema's defaults (routing's ports)
        if key not in ports:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                data["local"]["ports"][key] = s.getsockname()[1]
    data["local"]["ports"].update(ports)
    data["models"].pop("coder", None)
    data["features"]["routing"] = False
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _ours(profile_name: str) -> list[psutil.Process]:
    """Every process that belongs to the profile's local stack: its supervisor, reapers and their servers."""
    marker = f"/state/{profile_name}/"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline or f"{profile_name}-" in cmdline and "postgres" in cmdline:
            found.append(proc)
            try:
                found.extend(proc.children(recursive=True))
            except psutil.Error:
                pass
    return found


def test_down_leaves_no_process_and_no_port(tmp_path):
    path = _own_profile(tmp_path, "resilience-down", {"serving": 8191, "llm-gateway": 4191, "postgres": 5591})
    profile = load_profile(str(path))
    layout = Layout(ROOT, tmp_path / "build")
    gateway = LocalGateway(profile, layout, say=lambda m: print(m, file=sys.stderr))
    try:
        gateway.start()  # the proxy and its ledger (the proxy is ready without vLLM)
        family = _ours(profile.name)
        assert len(family) >= 5  # supervisord, two reapers, the proxy, Postgres (and its workers)
    finally:
        stopped = stack.down(profile, layout, say=lambda m: print(m, file=sys.stderr))
    assert stopped == ["llm-gateway"]
    _, alive = psutil.wait_procs(family, timeout=30)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    assert port_holder(4191) is None and port_holder(5591) is None
    assert not Supervisor(gateway.state_dir).running()


def test_ctrl_c_during_a_run_stops_what_the_run_started(tmp_path):
    path = _own_profile(tmp_path, "resilience-interrupt", {"serving": 8192, "llm-gateway": 4192, "postgres": 5592})
    argv = [sys.executable, "-m", "inferbook.cli", "run", "--profile", str(path), "--chapters", "serving",
            "--no-site", "--build-dir", str(tmp_path / "build")]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait until the chapter has started vLLM under supervision, then press Ctrl-C
        lines.append(line)
        if "started vLLM" in line:
            break
    else:
        pytest.fail("the serving chapter never started vLLM:\n" + "".join(lines[-30:]))
    family = _ours("resilience-interrupt")
    assert family, "nothing of the run's stack was found running"
    family += psutil.Process(proc.pid).children(recursive=True)  # the kernel and whatever it runs
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, rest
    assert "stopped: serving" in rest
    _, alive = psutil.wait_procs(family, timeout=60)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    assert port_holder(8192) is None
    assert _ours("resilience-interrupt") == []
