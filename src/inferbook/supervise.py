"""Supervision of a profile's local servers: one supervisord per profile, one program per server.

A local server must outlive the notebook that started it, come back by itself when it crashes, and stop as a
whole (a server and every process it started). supervisord does the first two well (it daemonises, restarts
a program that exits, with a growing delay when it keeps failing to start, and keeps each program's log); we
run it from our own environment with its control socket in the profile's state folder, and add a program per
server as its layer starts. Each program runs through :mod:`inferbook.reaper`, which clears the server's
descendants when it dies, so a restart never leaves an orphaned engine behind.

The supervisord of a profile is what ``up`` asks to find its own processes: a server is ours when this
profile's supervisord runs it, not when something answers on its port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from .errors import InferbookError
from .say import silent
from .waiting import WaitTimedOut, until, wait_for

#: Program states in which supervisord has (or is about to have) a live process for a program.
LIVE_STATES = {"STARTING", "RUNNING", "BACKOFF"}
#: A program that stays up this long counts as started; exits before it are start failures, retried with backoff.
START_SECONDS = 5
#: Start failures in a row before supervisord gives up (state FATAL); the delay grows by a second each time.
START_RETRIES = 5


class SupervisorError(InferbookError):
    """supervisord could not be started or reached."""


class Supervisor:
    """The supervisord of one profile's local stack, in ``state_dir/supervisor``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "supervisor"
        self.conf = self.dir / "supervisord.conf"
        self.programs = self.dir / "programs"
        # a unix socket path is limited to ~107 bytes; a deep state folder gets a short stand-in under /tmp
        socket = self.dir / "supervisor.sock"
        if len(str(socket)) > 100:
            digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:16]
            socket = Path(tempfile.gettempdir()) / f"inferbook-supervisor-{digest}.sock"
        self.socket = socket

    # ------------------------------------------------------------------ the daemon

    def _rpc(self) -> Any:
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(
            None, None, f"unix://{self.socket}"))
        return proxy.supervisor

    def running(self) -> bool:
        """Whether this profile's supervisord answers on its socket."""
        if not self.socket.exists():
            return False
        try:
            return self._rpc().getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def ensure(self) -> None:
        """Start this profile's supervisord if it is not running (it daemonises and outlives the caller)."""
        if self.running():
            return
        self.programs.mkdir(parents=True, exist_ok=True)
        self._drop_orphaned_programs()
        self.conf.write_text(
            "; written by inferbook: the supervisor of one profile's local servers\n"
            "[unix_http_server]\n"
            f"file={self.socket}\n"
            "chmod=0700\n\n"
            "[supervisord]\n"
            f"logfile={self.dir / 'supervisord.log'}\n"
            "logfile_maxbytes=5MB\n"
            "logfile_backups=2\n"
            f"pidfile={self.dir / 'supervisord.pid'}\n"
            f"directory={self.dir}\n"
            "childlogdir=%(here)s\n\n"
            "[supervisorctl]\n"
            f"serverurl=unix://{self.socket}\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            "[include]\n"
            f"files = {self.programs}/*.conf\n"
        )
        self.socket.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SupervisorError(f"supervisord did not start ({self.conf}): {(proc.stderr or proc.stdout).strip()}. "
                                  f"Fix: read {self.dir / 'supervisord.log'}")
        # it daemonises before the socket is up: wait for it to answer
        wait_for(until(self.running, "no answer"), timeout=30, what="supervisord to answer", say=silent,
                 interval=0.1, error=SupervisorError,
                 message=lambda _: f"supervisord started but does not answer on {self.socket}. "
                                   f"Fix: read {self.dir / 'supervisord.log'}")

    def _drop_orphaned_programs(self) -> None:
        """Forget programs whose log folder is gone (a deleted build folder, a test's temporary one): with no
        supervisord running none of them runs, and supervisord refuses to start over such a config at all."""
        for conf in self.programs.glob("*.conf"):
            log = next((line.split("=", 1)[1].strip() for line in conf.read_text().splitlines()
                        if line.startswith("stdout_logfile=")), "")
            if log and not Path(log).parent.is_dir():
                conf.unlink(missing_ok=True)
                conf.with_suffix(".spec.json").unlink(missing_ok=True)

    def shutdown_if_idle(self) -> bool:
        """Stop supervisord once it supervises nothing, so ``down`` leaves no process behind."""
        if not self.running():
            return False
        if self._rpc().getAllProcessInfo():
            return False
        self._rpc().shutdown()
        with contextlib.suppress(WaitTimedOut):  # one slow to exit is gone soon; nothing is left for it to run
            wait_for(until(lambda: not (self.socket.exists() and self.running()), "still answering"), timeout=30,
                     what="supervisord to exit", say=silent, interval=0.1)
        return True

    # ------------------------------------------------------------------ programs

    def spec_path(self, name: str) -> Path:
        """Where program ``name``'s spec lives; its resolved path is the tag its processes carry
        (:data:`inferbook.reaper.TAG`)."""
        return (self.programs / f"{name}.spec.json").resolve()

    def add(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path,
            stop_signal: str = "TERM") -> int:
        """Supervise and start a program; returns the pid of its (reaper) process once it is spawned.

        The command line, environment and folder go to a 0600 spec file the reaper reads: the environment
        holds secrets, which must not land in supervisord's config or on a command line ``ps`` shows.
        """
        self.ensure()
        spec = self.spec_path(name)
        fd = os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"argv": argv, "env": env, "cwd": str(cwd)}, handle)
        log.parent.mkdir(parents=True, exist_ok=True)
        (self.programs / f"{name}.conf").write_text(
            f"[program:{name}]\n"
            f"command={sys.executable} -m inferbook.reaper {spec}\n"
            f"directory={cwd}\n"
            # the reaper comes from this very inferbook, whatever environment started supervisord
            f'environment=PYTHONPATH="{Path(__file__).resolve().parent.parent}"\n'
            "autostart=false\n"
            "autorestart=true\n"
            f"startsecs={START_SECONDS}\n"
            f"startretries={START_RETRIES}\n"
            f"stopsignal={stop_signal}\n"
            "stopwaitsecs=40\n"
            "stopasgroup=true\n"
            "killasgroup=true\n"
            "redirect_stderr=true\n"
            f"stdout_logfile={log}\n"
            "stdout_logfile_maxbytes=20MB\n"
            "stdout_logfile_backups=1\n"
        )
        rpc = self._rpc()
        added, changed, removed = rpc.reloadConfig()[0]
        for group in changed + removed:
            if group == name:
                self._remove(group)
        if name in added or name in changed or self.info(name) is None:
            rpc.addProcessGroup(name)
        info = self.info(name)
        if info is None or info["statename"] not in LIVE_STATES:
            rpc.startProcess(name, False)
        info: dict[str, Any] = {}

        def failed(_: str = "") -> str:
            return f"supervisord could not spawn {name}: {info.get('spawnerr') or info}. Fix: read {log}"

        def spawned() -> str | None:
            info.clear()
            info.update(self.info(name) or {})
            if info.get("pid"):
                return None
            if info.get("statename") in {"FATAL", "EXITED"}:
                raise SupervisorError(failed())
            return f"no pid yet, {info.get('statename') or 'no state'}"

        wait_for(spawned, timeout=30, what=f"supervisord to spawn {name}", say=silent, interval=0.1,
                 error=SupervisorError, message=failed)
        return int(info["pid"])

    def info(self, name: str) -> dict[str, Any] | None:
        """supervisord's record of a program (state, pid, start time, exit status), or None if not supervised."""
        if not self.running():
            return None
        try:
            return self._rpc().getProcessInfo(name)
        except xmlrpc.client.Fault:
            return None

    def live_pid(self, name: str) -> int | None:
        """The program's pid while supervisord keeps it alive (running, starting or backing off), else None."""
        info = self.info(name)
        if info and info["statename"] in LIVE_STATES and info.get("pid"):
            return int(info["pid"])
        return None

    def pause(self, name: str) -> None:
        """Stop a program but keep supervising it (a deliberate outage); :meth:`resume` starts it again."""
        try:
            self._rpc().stopProcess(name, True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                raise

    def resume(self, name: str) -> None:
        """Start a paused program again (no-op when it is live)."""
        if self.live_pid(name) is None:
            self._rpc().startProcess(name, False)

    def stop(self, name: str) -> bool:
        """Stop a program (its whole process group) and stop supervising it; True when it was live."""
        info = self.info(name)
        if info is None:
            return False
        was_live = info["statename"] in LIVE_STATES
        self._remove(name)
        (self.programs / f"{name}.conf").unlink(missing_ok=True)
        (self.programs / f"{name}.spec.json").unlink(missing_ok=True)
        self._rpc().reloadConfig()
        self.shutdown_if_idle()
        return was_live

    def _remove(self, name: str) -> None:
        rpc = self._rpc()
        try:
            rpc.stopProcess(name, True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString and "BAD_NAME" not in fault.faultString:
                raise
        try:
            rpc.removeProcessGroup(name)
        except xmlrpc.client.Fault as fault:
            if "BAD_NAME" not in fault.faultString:
                raise
