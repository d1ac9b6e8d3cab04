"""LiteLLM's database layer without Prisma's download host.

LiteLLM's proxy keeps virtual keys and budgets in Postgres through prisma-client-py, which runs two
native Prisma programs: a query engine (every query) and a schema engine (``prisma migrate``). Both
are downloaded from a Prisma host that inferbook's machines cannot reach, and no package registry
ships them, so the proxy cannot start. This module supplies the two roles from what the registries
do have:

* the query engine: ``inferbook/prisma_engine``, a small Node program that serves the native
  engine's HTTP interface on top of the same engine build compiled to WebAssembly (npm), installed
  by :func:`ensure_engine` from its lock file into the user's cache;
* the schema engine: :func:`apply_migrations` applies the SQL migrations LiteLLM ships (in the
  ``litellm-proxy-extras`` package) and records them as ``prisma migrate deploy`` would; a stub
  answers ``--version`` for ``prisma generate``.

Use it only when the native engines are absent (:func:`native_engines_available`): the native
engines, when present, remain the reference. Nothing here keeps global state; every function takes
the folders and interpreters it works on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ...envs import file_lock
from ...errors import InferbookError
from ...say import Say

ENGINE_COMMIT = "393aa359c9ad4a4bb28630fb5613f9c281cde053"
"""The Prisma engines build prisma-client-py 0.15.0 expects (Prisma 5.17.0)."""

ENGINE_SOURCE = Path(__file__).with_name("prisma_engine")
ENGINE_FILES = ("package.json", "package-lock.json", "query-engine.mjs", "schema-engine.mjs", "protocol.mjs")
EXECUTABLES = ("query-engine.mjs", "schema-engine.mjs")
MIN_NODE_MAJOR = 20

PRISMA_MIGRATE_LOCK_ID = 72707369
"""The advisory lock ``prisma migrate`` takes on Postgres; taking the same one serialises us with it."""


class PrismaOfflineError(InferbookError):
    """The offline Prisma engine could not be installed, or LiteLLM's migrations could not be applied."""


def _engine_digest() -> str:
    digest = hashlib.sha256()
    for name in ENGINE_FILES:
        digest.update(name.encode() + b"\0" + (ENGINE_SOURCE / name).read_bytes())
    return digest.hexdigest()[:12]


def engine_dir(cache_dir: Path) -> Path:
    """Where :func:`ensure_engine` installs the engine: keyed by the engine's own files, so an edit
    to the program or its lock installs afresh instead of running stale code."""
    return cache_dir / "prisma-engine" / f"{ENGINE_COMMIT[:8]}-{_engine_digest()}"


def _require_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise PrismaOfflineError(
            f"the offline Prisma engine needs Node.js {MIN_NODE_MAJOR}+ and npm, and "
            f"{'node' if not node else 'npm'} is not on PATH. "
            "Fix: install Node.js 20 (e.g. `apt-get install nodejs npm`), then run the command again"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < MIN_NODE_MAJOR:
        raise PrismaOfflineError(
            f"the offline Prisma engine needs Node.js {MIN_NODE_MAJOR}+ (for WebAssembly and ES modules), "
            f"found {version or 'an unknown version'} at {node}. Fix: install Node.js 20 or later"
        )
    return node, npm


def ensure_engine(cache_dir: Path, say: Say = print) -> Path:
    """The offline query engine's executable, installing it first if needed.

    The program's files are copied out of the package into ``cache_dir`` and its dependencies come
    from its lock file (``npm ci --omit=dev --ignore-scripts``: exactly the locked versions, and no
    install scripts run), so the checkout stays clean and two checkouts share one install.
    """
    _, npm = _require_node()
    target = engine_dir(cache_dir)
    marker = target / ".inferbook-complete"
    executable = target / "query-engine.mjs"
    if marker.is_file():
        return executable
    with file_lock(target.with_suffix(".lock")):
        if marker.is_file():
            return executable
        if target.exists():
            shutil.rmtree(target)  # an interrupted install
        target.mkdir(parents=True)
        for name in ENGINE_FILES:
            shutil.copyfile(ENGINE_SOURCE / name, target / name)
        for name in EXECUTABLES:
            (target / name).chmod(0o755)
        say(f"installing the offline Prisma engine at {target} (npm ci, a few seconds)")
        proc = subprocess.run(
            [npm, "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise PrismaOfflineError(
                f"npm could not install the offline Prisma engine (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-2000:]}\n"
                "Fix: check that the npm registry is reachable (`npm ping`), then run the command again"
            )
        version = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=False)
        if version.stdout.strip() != f"query-engine {ENGINE_COMMIT}":
            raise PrismaOfflineError(
                f"the offline Prisma engine at {executable} does not start: {(version.stdout + version.stderr)[-1000:]}"
                f"\nFix: delete {target} and run the command again"
            )
        marker.write_text(ENGINE_COMMIT + "\n")
        say("offline Prisma engine ready")
    return executable


def schema_engine_stub(engine: Path) -> Path:
    """The schema-engine stub installed beside the query engine by :func:`ensure_engine`."""
    return engine.with_name("schema-engine.mjs")


def engine_env(engine: Path, schema_stub: Path) -> dict[str, str]:
    """Environment variables that make prisma-client-py, the Prisma CLI and LiteLLM use the shim.

    Add them to the environment of ``prisma generate`` and of the LiteLLM proxy.
    """
    return {
        # prisma-client-py spawns this as its query engine (and `prisma generate` bakes it into the client).
        "PRISMA_QUERY_ENGINE_BINARY": str(engine),
        # The Prisma CLI asks the schema engine for its version during `prisma generate`; with the
        # variable set it does not try to download the real one.
        "PRISMA_SCHEMA_ENGINE_BINARY": str(schema_stub),
        # The binary engine type is the one that runs a separate process (the shim); prisma-client-py
        # sets it too, repeated here for any other Prisma CLI invocation (e.g. from LiteLLM).
        "PRISMA_CLI_QUERY_ENGINE_TYPE": "binary",
        # Engines given by path have no checksum files to fetch.
        "PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING": "1",
        # The Prisma CLI's version check / telemetry call would wait on an unreachable host.
        "CHECKPOINT_DISABLE": "1",
        "PRISMA_HIDE_UPDATE_MESSAGE": "1",
    }


_FIND_NATIVE = """
import json
from prisma._config import config
from prisma.engine.utils import query_engine_name
base = config.binary_cache_dir
engines = base / "node_modules" / "@prisma" / "engines"
query = [base / query_engine_name(), *sorted(engines.glob("query-engine-*"))]
schema = sorted(engines.glob("schema-engine-*"))
print(json.dumps({"query": [str(p) for p in query if p.is_file()], "schema": [str(p) for p in schema if p.is_file()]}))
"""


def native_engines_available(python: Path, env: Mapping[str, str] | None = None) -> bool:
    """Whether prisma-client-py in the environment of ``python`` has working native engines.

    Looks where prisma-client-py and the Prisma CLI put downloaded engines (its binary cache, which
    depends on ``HOME``: pass the environment the proxy will run with), and requires a query engine
    that runs and reports the expected build, plus a schema engine. Without both, use the shim.
    """
    base = dict(env if env is not None else os.environ)
    for name in ("PRISMA_QUERY_ENGINE_BINARY", "PRISMA_SCHEMA_ENGINE_BINARY"):
        base.pop(name, None)  # they may point at the shim; the question is about native engines
    proc = subprocess.run([str(python), "-c", _FIND_NATIVE], capture_output=True, text=True, env=base, check=False)
    if proc.returncode != 0:
        raise PrismaOfflineError(
            f"could not ask prisma-client-py in {python} where its engines are:\n{proc.stderr[-1500:]}\n"
            "Fix: build the LiteLLM environment (it includes prisma==0.15.0)"
        )
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    if not found["schema"]:
        return False
    for candidate in found["query"]:
        try:
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version.returncode == 0 and ENGINE_COMMIT in version.stdout:
            return True
    return False


# Runs inside the LiteLLM environment, whose psycopg 3 (pinned there, as LiteLLM's own migration
# helpers use it) does the work: one connection for all ~220 files instead of one psql process
# each, parameters bound by the driver, and no dependence on a system Postgres client.
_MIGRATE = r"""
import hashlib, json, os, re, sys, uuid
from pathlib import Path
import psycopg
import litellm_proxy_extras

LOCK_ID = int(sys.argv[1])
root = Path(litellm_proxy_extras.__file__).parent / "migrations"
folders = sorted(p for p in root.iterdir() if (p / "migration.sql").is_file())
applied = []
with psycopg.connect(os.environ["INFERBOOK_MIGRATE_URL"], autocommit=True) as conn:
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
    # Prisma's own definition of its bookkeeping table.
    conn.execute('''CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
        "id" VARCHAR(36) PRIMARY KEY NOT NULL,
        "checksum" VARCHAR(64) NOT NULL,
        "finished_at" TIMESTAMPTZ,
        "migration_name" VARCHAR(255) NOT NULL,
        "logs" TEXT,
        "rolled_back_at" TIMESTAMPTZ,
        "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
        "applied_steps_count" INTEGER NOT NULL DEFAULT 0)''')
    rows = conn.execute('SELECT migration_name FROM "_prisma_migrations" '
                        'WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL').fetchall()
    done = {name for (name,) in rows}
    for folder in folders:
        if folder.name in done:
            continue
        script = (folder / "migration.sql").read_bytes()
        record = ('INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, finished_at, '
                  'applied_steps_count) VALUES (%s, %s, %s, now(), now(), 1)')
        values = (str(uuid.uuid4()), hashlib.sha256(script).hexdigest(), folder.name)
        code = "\n".join(line for line in script.decode().splitlines() if not line.lstrip().startswith("--"))
        try:
            if re.search(r"\bCONCURRENTLY\b", code, re.IGNORECASE):
                # CREATE INDEX CONCURRENTLY cannot run inside a transaction (Prisma runs such
                # single-statement migrations outside one too).
                conn.execute(script.decode())
                conn.execute(record, values)
            else:
                with conn.transaction():
                    conn.execute(script.decode())  # no parameters: simple protocol, several statements
                    conn.execute(record, values)
        except psycopg.Error as error:
            print(json.dumps({"failed": folder.name, "error": str(error).strip(), "applied": applied}))
            sys.exit(3)
        applied.append(folder.name)
print(json.dumps({"applied": applied, "total": len(folders)}))
"""


def apply_migrations(database_url: str, python: Path, say: Say = print) -> list[str]:
    """Apply LiteLLM's SQL migrations to ``database_url``; return the names of those newly applied.

    The migrations are the folders that ``litellm-proxy-extras`` ships (found through the LiteLLM
    environment of ``python``, so they always match the installed LiteLLM), applied in name order as
    ``prisma migrate deploy`` does, each in its own transaction together with its row in
    ``_prisma_migrations`` (id, sha256 checksum of migration.sql, name, timestamps, one step): a later
    ``prisma migrate deploy`` sees them as applied, and a failure leaves no half-applied migration.
    The one exception is a migration using ``CONCURRENTLY``, which Postgres only accepts outside a
    transaction. Already-applied migrations are skipped, so running it again is harmless; the
    Prisma migrate advisory lock is held meanwhile, so two runs (or a run and Prisma) do not race.

    The work runs in the LiteLLM environment's Python with its psycopg 3 (see ``_MIGRATE``). The URL
    goes through the environment, not the command line, so a password never shows in ``ps``.
    Start LiteLLM with ``DISABLE_SCHEMA_UPDATE=true`` afterwards: it would otherwise run
    ``prisma migrate`` itself, which needs the native schema engine.
    """
    env = {**os.environ, "INFERBOOK_MIGRATE_URL": _driver_url(database_url)}
    proc = subprocess.run([str(python), "-c", _MIGRATE, str(PRISMA_MIGRATE_LOCK_ID)],
                          capture_output=True, text=True, env=env, check=False)
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if proc.returncode != 0 or result is None or "failed" in (result or {}):
        if result and "failed" in result:
            problem = f"migration {result['failed']} failed: {result['error']}"
            if result["applied"]:
                problem += f" (applied before it: {len(result['applied'])})"
        else:
            problem = f"the migration script exited with {proc.returncode}:\n{proc.stderr[-1500:]}"
        raise PrismaOfflineError(
            f"could not apply LiteLLM's database migrations: {problem}\n"
            "Fix: check that the database exists and the URL's user may create tables, then run the command again"
        )
    applied: list[str] = result["applied"]
    if applied:
        say(f"applied {len(applied)} of {result['total']} LiteLLM database migrations")
    else:
        say(f"LiteLLM database schema up to date ({result['total']} migrations)")
    return applied


_PRISMA_ONLY_PARAMS = {
    "schema", "connection_limit", "pool_timeout", "connect_timeout", "socket_timeout", "pgbouncer",
    "statement_cache_size", "sslaccept", "sslidentity", "sslpassword",
}


def _driver_url(database_url: str) -> str:
    """``database_url`` without Prisma-only parameters, which libpq (psycopg) rejects.

    ``connect_timeout`` is kept (libpq gives it the same meaning) and Prisma's ``schema`` becomes
    libpq's ``search_path`` option, so the tables land where the query engine will look for them.
    """
    parts = urlsplit(database_url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in params if k not in _PRISMA_ONLY_PARAMS or k == "connect_timeout"]
    kept += [("options", f"-c search_path={v}") for k, v in params if k == "schema" and v]
    return urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))
