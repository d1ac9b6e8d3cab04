"""A local layer's server process: started under supervision, awaited by a readiness check, found again, stopped.

Each local layer (vLLM, the LiteLLM proxy) is a long-running server that must
outlive the notebook that started it, come back when it crashes, be reused when
it is already ours, and be stoppable later from the command line with nothing
left behind. supervisord (:mod:`inferbook.supervise`) does the keeping; this
module holds what the layers share around it; the layers supply the command line
and the readiness check.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import psutil

from .errors import InferbookError
from .reaper import stop_all, tagged
from .say import Say
from .supervise import LIVE_STATES, Supervisor
from .waiting import WaitTimedOut, wait_for


class LayerDied(InferbookError):
    """The layer's process exited (or never became healthy) while we waited for it."""


class PortInUse(InferbookError):
    """The layer's port is held by a process that is not a reusable server of ours."""


def listener(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` (any address), or None."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return conn.pid
    except (psutil.Error, OSError):
        pass
    return None


def describe(pid: int) -> str:
    """``pid N (name)``: a process as a person can look it up."""
    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except psutil.Error:
        return f"pid {pid}"


def port_holder(port: int, host: str = "127.0.0.1") -> str | None:
    """Who holds ``port`` on ``host`` (a process description), or None when it is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as servers bind: connections of a stopped server lingering in TIME_WAIT do not hold the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            pass
        else:
            return None
    pid = listener(port)
    return describe(pid) if pid is not None else "another process"


def claim_port(port: int, layer: str, ours: str, profile_name: str) -> None:
    """Raise :class:`PortInUse` when ``port`` is held: by now, the holder is known not to be ``ours``."""
    holder = port_holder(port)
    if holder is not None:
        raise PortInUse(
            f"port {port} (local.ports.{layer}) is in use by {holder}, which is not {ours}. Fix: stop that process "
            f"(`inferbook down --profile {profile_name}` if it is ours), or choose another port with "
            f"-p local.ports.{layer}=N"
        )


#: Downward-API fields of a pod and what they are for a process on this machine (its loopback address).
LOCAL_FIELDS = {"status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}


def container_env(container: dict[str, Any], secret: Callable[[str, str], str],
                  paths: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """A rendered container's environment for a local process: (env, env var -> "secret/key" it came from).

    Literal values carry over; ``secretKeyRef`` values come from ``secret(name, key)``; a value that is a
    path inside the pod is replaced from ``paths`` (by variable name) or dropped, since no such path
    exists here; a pod field this machine has an answer for (:data:`LOCAL_FIELDS`) gets that answer.
    """
    env: dict[str, str] = {}
    from_secrets: dict[str, str] = {}
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            value = str(item["value"])
            if not value.startswith("/"):
                env[name] = value
            elif paths and name in paths:
                env[name] = paths[name]
        elif ref := item.get("valueFrom", {}).get("secretKeyRef"):
            env[name] = secret(ref["name"], ref["key"])
            from_secrets[name] = f"{ref['name']}/{ref['key']}"
        elif (field := item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")) in LOCAL_FIELDS:
            env[name] = LOCAL_FIELDS[field]
    return env, from_secrets


def launch_table(argv: list[str], env: dict[str, str], secret_env: dict[str, str]) -> pd.DataFrame:
    """A local server's command line and environment as a reader may see them: every value that came from a
    secret withheld (named by its ``secret/key``), the home folder shown as ``~``."""
    home = str(Path.home())

    def show(text: str) -> str:
        return text.replace(home, "~") if home != "/" else text

    rows = [{"kind": "argv", "name": str(i), "value": show(arg)} for i, arg in enumerate(argv)]
    for name in sorted(env):
        shown = f"(from secret {secret_env[name]})" if name in secret_env else show(env[name])
        rows.append({"kind": "env", "name": name, "value": shown})
    return pd.DataFrame(rows)


def process_tree_rss(pid: int) -> int:
    """Resident memory of a process and its children, in bytes (vLLM and LiteLLM both run children)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


@dataclass
class ServerProcess:
    """One layer's server on a loopback port, supervised by its profile's supervisord.

    ``supervisor`` runs it as program ``<layer>-<port>``; that record, not whoever answers on the port, is
    what makes a server ours. ``marker`` is a string the command line of a server started by an earlier
    inferbook (unsupervised) carries, so ``stop`` still finds those.
    """

    layer: str
    port: int
    marker: str
    state_path: Path
    log_path: Path
    supervisor: Supervisor
    #: The signal that stops the server cleanly and promptly (PostgreSQL: INT, a fast shutdown).
    stop_signal: str = "TERM"

    @property
    def program(self) -> str:
        return f"{self.layer}-{self.port}"

    def state(self) -> dict[str, Any]:
        """What the last start recorded, if it was on this port."""
        if not self.state_path.is_file():
            return {}
        state = json.loads(self.state_path.read_text())
        return state if state.get("port") == self.port else {}

    def supervised(self, fingerprint: str | None = None) -> bool:
        """Whether supervisord keeps our server alive (started with ``fingerprint``, when one is given)."""
        if self.supervisor.live_pid(self.program) is None:
            return False
        return fingerprint is None or self.state().get("fingerprint") == fingerprint

    def reusable(self, fingerprint: str, say: Say) -> bool:
        """Whether our supervised server may be reused: it was started with this configuration.

        A server we started with another command line, environment or config (a profile edit, a new
        pin) is stopped here, so the caller starts it afresh.
        """
        if self.supervised(fingerprint):
            return True
        if self.supervised():
            say(f"{self.layer}: the running server was started with another configuration; restarting it")
            self.stop(say)
        return False

    def record(self, **values: Any) -> None:
        state = {**self.state(), **values, "port": self.port}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(state, indent=2))

    def launch(self, argv: list[str], env: dict[str, str], cwd: Path) -> int:
        """Start the server under supervision (restarted if it dies, stopped as a whole); returns its pid."""
        cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write((f"\n--- inferbook starting {self.layer} "
                       f"at {datetime.now(timezone.utc).isoformat()} ---\n").encode())
        pid = self.supervisor.add(self.program, argv, env, cwd, self.log_path, self.stop_signal)
        self.record(pid=pid, program=self.program, supervisor=str(self.supervisor.dir),
                    started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), log=str(self.log_path))
        return pid

    def wait(self, ready: Callable[[], bool], timeout: float, say: Say, waiting_for: str,
             restarts_ok: bool = False) -> float:
        """Wait until ``ready()``; returns the seconds it took.

        Fails with the log's tail (and stops the program, so supervisord does not retry a broken start
        forever) when the server exits before it is ready or is not ready within ``timeout``. With
        ``restarts_ok`` (waiting for a server supervisord is restarting) only supervisord giving up fails.
        """
        first_pid = self.supervisor.live_pid(self.program)

        def probe() -> str | None:
            if ready():
                return None
            info = self.supervisor.info(self.program) or {}
            restarted = not restarts_ok and first_pid and info.get("pid") not in (first_pid, 0)
            if info.get("statename") not in LIVE_STATES or restarted:
                self.supervisor.stop(self.program)
                code = (info.get("exitstatus") if info.get("statename") in ("EXITED", "FATAL", "STOPPED")
                        else "unknown: its supervisor was already starting it again")
                raise LayerDied(f"{self.layer} exited with status {code} before it became healthy."
                                f"\n{self.log_tail()}")
            return f"not healthy yet, supervisord: {info.get('statename') or 'no state'}"

        try:
            elapsed = wait_for(probe, timeout=timeout, what=waiting_for, say=lambda line: say(f"{self.layer}: {line}"),
                               interval=0.5)
        except WaitTimedOut:
            self.supervisor.stop(self.program)
            raise LayerDied(f"{self.layer} did not become healthy within {timeout:.0f} s.\n{self.log_tail()}") from None
        say(f"{self.layer}: healthy after {elapsed:.0f} s")
        self.record(startup_s=round(elapsed, 1))
        return elapsed

    def log_tail(self, lines: int = 25) -> str:
        if not self.log_path.is_file():
            return "(no log)"
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"last {len(tail)} lines of {self.log_path}:\n" + "\n".join(tail)

    @property
    def tag(self) -> str:
        """What every process of this program carries in its environment (:data:`inferbook.reaper.TAG`)."""
        return str(self.supervisor.spec_path(self.program))

    def tree(self) -> list[psutil.Process]:
        """Every live process of this program: the supervised tree and any member that outlived its reaper."""
        return tagged(self.tag)

    def supervised_pids(self) -> set[int]:
        """The reaper supervisord runs and everything below it (a process that rewrites its own environment
        with ``setproctitle``, as vllm-router does, loses its tag but not its parent)."""
        return self._look().supervised

    def leftovers(self) -> list[psutil.Process]:
        """Processes of this program outside its supervised tree: a reaper was killed and they lived on."""
        return self._look().leftovers

    def pid(self) -> int | None:
        """What ``stop`` would stop: the supervised program's pid (its reaper), else a process of ours that
        lives on unsupervised (a member of the program that outlived its reaper, or a server of an earlier
        inferbook listening on our port with the marker on its command line)."""
        return self._look().pid

    def server_pid(self) -> int | None:
        """The process that serves: the one of this program listening on its port (not the reaper)."""
        return self._look().server

    def _look(self) -> "_Look":
        """One look at the machine: the supervised tree, the tagged processes, the port's listener. Each is a
        scan of every process (or socket), so a report derives all it says from one look."""
        wrapper = self.supervisor.live_pid(self.program)
        supervised: set[int] = set()
        if wrapper is not None:
            try:
                supervised = {wrapper, *(p.pid for p in psutil.Process(wrapper).children(recursive=True))}
            except psutil.Error:
                pass
        tree = self.tree()
        holder = listener(self.port)
        pid = wrapper
        if pid is None and holder is not None:
            try:
                if self.marker in " ".join(psutil.Process(holder).cmdline()):
                    pid = holder
            except psutil.Error:
                pass
        if pid is None and tree:
            pid = tree[0].pid
        ours = {p.pid for p in tree} | supervised
        server = holder if holder is not None and (holder in ours or holder == pid) else None
        stranger = holder if holder is not None and server is None else None
        return _Look(wrapper, supervised, tree, [p for p in tree if p.pid not in supervised], pid, server,
                     stranger)

    @staticmethod
    def kill(pid: int) -> None:
        """SIGTERM the process group, then SIGKILL after 30 s (an unsupervised server)."""
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            psutil.Process(pid).wait(timeout=30)
        except psutil.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
        except psutil.Error:
            pass

    def stop(self, say: Say) -> bool:
        """Stop our server and every process it started, supervised or left behind; True when one was running.

        One call clears it all: after the supervised program, whatever still carries the program's tag (an
        engine whose reaper was killed) is stopped too.
        """
        look = self._look()
        pid, served = look.pid, look.server
        if self.supervisor.info(self.program) is not None:
            self.supervisor.stop(self.program)
        elif pid is not None and pid not in {p.pid for p in look.tree}:
            self.kill(pid)
        left = stop_all(self.tree())
        if pid is not None:
            extra = f"; and {len(left)} process(es) it had left unsupervised" if left and pid not in left else ""
            say(f"{self.layer}: stopped (pid {served or pid}{extra})")
        if self.state():
            self.state_path.unlink(missing_ok=True)
        return pid is not None

    def facts(self) -> dict[str, Any]:
        """Supervision state, the serving pid, resident memory and recorded time to healthy, for status reports.

        ``pid`` is the process that serves (listens on the port), ``supervisor_pid`` the reaper supervisord
        runs; ``unsupervised`` names what holds the port or lives on outside supervision (``down`` stops
        what is ours; a stranger on the port is for the user to stop).
        """
        info = self.supervisor.info(self.program) or {}
        look = self._look()
        pid, state = look.pid, self.state()
        process = (info.get("statename") or ("running, unsupervised" if pid else "stopped")).lower()
        unsupervised = ""
        if look.stranger is not None:
            unsupervised = (f"port {self.port} is held by {describe(look.stranger)}, which this profile does not "
                            "supervise")
        elif look.leftovers:
            unsupervised = (f"{len(look.leftovers)} process(es) of {self.layer} outlived their supervision "
                            f"({', '.join(describe(p.pid) for p in look.leftovers[:3])}); `inferbook down` stops them")
        if unsupervised:
            process += f"; {unsupervised}"
        rss = sum(_rss(p) for p in look.tree) or (process_tree_rss(pid) if pid else 0)
        return {
            "process": process,
            "pid": look.server or (pid if look.wrapper is None else None),
            "supervisor_pid": look.wrapper,
            "unsupervised": unsupervised,
            "rss_mb": round(rss / 2**20) if pid else None,
            "startup_s": state.get("startup_s") if pid else None,
            "log": str(self.log_path),
        }


@dataclass(frozen=True)
class _Look:
    """What :meth:`ServerProcess._look` saw: the reaper and its tree, the tagged processes, who holds the port."""

    wrapper: int | None
    supervised: set[int]
    tree: list[psutil.Process]
    leftovers: list[psutil.Process]
    pid: int | None
    server: int | None
    stranger: int | None


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


def part_row(part: str, facts: dict[str, Any], serving: bool) -> dict[str, str]:
    """One row of a layer's ``parts`` in ``inferbook status``: the part, whether it serves, its process and pid
    (``facts`` as :meth:`ServerProcess.facts` gives them)."""
    state = facts["process"] + (f", pid {facts['pid']}" if facts["pid"] else "")
    return {"part": part, "state": ("serving, " if serving else "") + state, "ok": str(serving)}


def fingerprint(*parts: Any) -> str:
    """sha256 of what a server is started with (command line, environment, config), for :meth:`ServerProcess.reusable`.

    Only the digest is kept, in the user's cache: environments hold secret values.
    """
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()
