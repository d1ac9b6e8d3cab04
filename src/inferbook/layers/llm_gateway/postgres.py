"""The gateway's spend ledger on the local target: the machine's PostgreSQL, run unprivileged on loopback.

On a cluster the ledger is a CloudNativePG ``Cluster``; locally it is the
PostgreSQL server binaries of the machine (Debian's ``postgresql`` package),
initialised once into a data folder outside the repository, listening on
127.0.0.1 only, with password authentication over TCP. ``initdb`` refuses to
run as root, so as root every server command runs as the ``postgres`` user.
The server runs in the foreground under the profile's supervisord, like the
other local servers: restarted if it dies, stopped with a fast shutdown.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ...errors import InferbookError
from ...paths import default_cache_dir
from ...process import ServerProcess, claim_port
from ...profile import Profile
from ...say import Say
from ...secrets import SecretStore
from ...supervise import Supervisor

#: Where Debian and Ubuntu put each PostgreSQL major version's server programs (not on PATH).
PG_LIB = Path("/usr/lib/postgresql")
DATABASE, ROLE = "litellm", "litellm"
PASSWORD_SECRET = "litellm-db/password"
#: A role name as it may go into SQL unquoted (CloudNativePG's managed roles are plain identifiers too).
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: CloudNativePG's boolean role attributes, their SQL keywords and the operator's defaults.
_ROLE_FLAGS = {"superuser": ("SUPERUSER", False), "createdb": ("CREATEDB", False), "createrole": ("CREATEROLE", False),
               "inherit": ("INHERIT", True), "login": ("LOGIN", False), "replication": ("REPLICATION", False),
               "bypassrls": ("BYPASSRLS", False)}


class PostgresUnavailable(InferbookError):
    """No PostgreSQL server binaries, or the server would not start."""


def pg_tool(name: str) -> str:
    """Path of a PostgreSQL server program (``initdb``, ``pg_ctl``, ``psql``)."""
    versions = sorted((d for d in PG_LIB.glob("*/bin") if d.parent.name.isdigit()),
                      key=lambda d: int(d.parent.name), reverse=True)  # the newest installed major version
    for folder in versions:
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if not found:
        raise PostgresUnavailable(
            f"the PostgreSQL program `{name}` was not found. Fix: install the server (Debian: "
            "`sudo apt-get install postgresql`; `make run` and `make test` do this as root or with passwordless "
            "sudo), or use a kube target"
        )
    return found


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _superuser() -> str:
    """The cluster's superuser: the OS user that runs the server, so peer authentication on the socket admits it.

    As root the server runs as ``postgres``; any other user runs it as themselves (initdb's default).
    """
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def default_data_root() -> Path:
    """Outside the repository; as root, a folder the ``postgres`` user can reach (root's home is 0700)."""
    if os.geteuid() == 0:
        return Path("/var/lib/inferbook/postgres")
    return default_cache_dir() / "postgres"


class LocalPostgres:
    """Initialise, start, reuse and stop the local ledger of one profile."""

    def __init__(self, profile: Profile, secrets: SecretStore | None = None,
                 data_root: Path | None = None, say: Say = print, state_dir: Path | None = None,
                 supervisor: Supervisor | None = None) -> None:
        self.profile = profile
        self.port = int(profile.data["local"]["ports"]["postgres"])
        self.secrets = secrets or SecretStore(profile.name)
        self.base = (data_root or default_data_root()) / f"{profile.name}-{self.port}"
        self.data = self.base / "data"
        self.say = say
        state_dir = state_dir or default_cache_dir() / "state" / profile.name
        # the data folder is in the server's command line: it marks a server started unsupervised as ours
        self.process = ServerProcess("postgres", self.port, str(self.data), state_dir / f"postgres-{self.port}.json",
                                     self.base / "server.log", supervisor or Supervisor(state_dir), stop_signal="INT")

    def url(self, database: str = DATABASE) -> str:
        """Connection URL with the password in it: pass it to processes, never print it."""
        password = quote(self.secrets.get(PASSWORD_SECRET), safe="")
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def display_url(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, args: list[str], check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*_as_server_user(), *args], capture_output=True, text=True, check=False, input=stdin)
        if check and proc.returncode != 0:
            raise PostgresUnavailable(f"`{' '.join(args[:2])}` failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")
        return proc

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").is_file():
            return False
        return self._run([pg_tool("pg_ctl"), "-D", str(self.data), "status"], check=False).returncode == 0

    def _initdb(self) -> None:
        self.say(f"postgres: initialising a cluster in {self.data}")
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for folder in (self.base.parent.parent, self.base.parent, self.base):
                os.chmod(folder, 0o755 if folder != self.base else 0o700)
            shutil.chown(self.base, "postgres")
        initdb = [pg_tool("initdb"), "-D", str(self.data), "-U", _superuser(), "-E", "UTF8", "--no-sync",
                  "--auth-local=peer", "--auth-host=scram-sha-256"]
        self._run(initdb)

    def _sql(self, statement: str, database: str = "postgres") -> str:
        """Run SQL as the server's superuser over the private socket (peer authentication).

        The statement goes on standard input, never on a command line that ``ps`` shows.
        """
        proc = self._run([pg_tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.base),
                          "-p", str(self.port), "-U", _superuser(), "-d", database, "-f", "-"], stdin=statement)
        return proc.stdout.strip()

    def accepting(self) -> bool:
        """The server accepts connections on its loopback port (``pg_isready``)."""
        proc = subprocess.run([pg_tool("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False)
        return proc.returncode == 0

    def start(self, timeout: float = 60) -> dict[str, Any]:
        """Start the server (initialising it the first time) and make sure the role and database exist."""
        if self.process.supervised():
            if not self.accepting():
                self.process.wait(self.accepting, timeout, self.say, "PostgreSQL", restarts_ok=True)
            self.say(f"postgres: reusing the running server on 127.0.0.1:{self.port}")
        else:
            if self.running():  # started by an earlier inferbook with pg_ctl: hand it over to supervision
                self.say("postgres: the ledger runs unsupervised (started by an earlier inferbook); restarting it")
                self._run([pg_tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
            claim_port(self.port, "postgres", "this profile's Postgres ledger", self.profile.name)
            if not (self.data / "PG_VERSION").is_file():
                self._initdb()
            argv = [*_as_server_user(), pg_tool("postgres"), "-D", str(self.data), "-c", "listen_addresses=127.0.0.1",
                    "-p", str(self.port), "-k", str(self.base), "-c", "max_connections=100"]
            self.process.launch(argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}, self.base)
            self.process.wait(self.accepting, timeout, self.say, "PostgreSQL")
            self.say(f"postgres: started on 127.0.0.1:{self.port} (supervised)")
        self._ensure_database()
        return self.status()

    def _ensure_database(self) -> None:
        password = self.secrets.get(PASSWORD_SECRET).replace("'", "''")
        exists = self._sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'")
        verb = "ALTER" if exists == "1" else "CREATE"
        self._sql(f"{verb} ROLE {ROLE} LOGIN PASSWORD '{password}'")
        if self._sql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
            self._sql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def ensure_role(self, role: dict[str, Any]) -> None:
        """A role as a CloudNativePG Cluster's ``spec.managed.roles`` declares it, made to match here: its
        attributes, connection limit, memberships (``inRoles``, others revoked) and password. The password is
        the secret store's ``<passwordSecret>/password``, as the Secret's ``password`` key names it on a cluster.
        The local counterpart of the operator's reconciliation; idempotent."""
        name = str(role.get("name", ""))
        in_roles = [str(r) for r in role.get("inRoles") or []]
        bad = [n for n in (name, *in_roles) if not _ROLE_NAME.match(n)]
        if bad:
            raise PostgresUnavailable(f"managed role {name!r}: {', '.join(map(repr, bad))} is not a plain role name")
        exists = self._sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{name}'") == "1"
        if role.get("ensure", "present") == "absent":
            if exists:
                self._sql(f"DROP ROLE {name}")
            return
        flags = [word if role.get(key, default) else f"NO{word}" for key, (word, default) in _ROLE_FLAGS.items()]
        flags.append(f"CONNECTION LIMIT {int(role.get('connectionLimit', -1))}")
        secret = (role.get("passwordSecret") or {}).get("name")
        if role.get("disablePassword") or not secret:
            flags.append("PASSWORD NULL")
        else:
            flags.append("PASSWORD '" + self.secrets.get(f"{secret}/password").replace("'", "''") + "'")
        self._sql(f"{'ALTER' if exists else 'CREATE'} ROLE {name} {' '.join(flags)}")
        member_of = set(filter(None, self._sql(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            f"JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = '{name}'").splitlines()))
        for group in sorted(set(in_roles) - member_of):
            self._sql(f"GRANT {group} TO {name}")
        for group in sorted(member_of - set(in_roles)):
            self._sql(f"REVOKE {group} FROM {name}")

    def stop(self) -> bool:
        """Stop the server (a fast shutdown); True when it was running."""
        was = self.running()
        if self.process.supervised() or self.process.supervisor.info(self.process.program):
            self.process.stop(lambda _: None)
        elif was:
            self._run([pg_tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        if was:
            self.say(f"postgres: stopped (port {self.port})")
        return was

    def status(self) -> dict[str, Any]:
        return {"url": self.display_url(), "healthy": self.running(), "data": str(self.data),
                "log": str(self.base / "server.log"), **self.process.facts()}
