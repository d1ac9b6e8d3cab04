"""The offline Prisma engine against a real Postgres, prisma-client-py and the real LiteLLM proxy.

Nothing is mocked: a Postgres 15 server is started for the session, LiteLLM's own migrations are
applied, prisma-client-py (generated from LiteLLM's schema) runs its queries through the shim, and
the LiteLLM proxy issues and checks virtual keys. The LiteLLM environment and the engine come from
the user's cache (first build: about two minutes).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from inferbook.envs import LITELLM
from inferbook.layers.llm_gateway.postgres import pg_tool
from inferbook.layers.llm_gateway.prisma_offline import (
    ENGINE_COMMIT,
    PrismaOfflineError,
    apply_migrations,
    engine_env,
    ensure_engine,
    native_engines_available,
    schema_engine_stub,
)
from inferbook.paths import default_cache_dir

from .conftest import free_port

pytestmark = pytest.mark.slow





@dataclass
class Postgres:
    port: int
    password: str
    psql: str

    def url(self, database: str, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return (f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"
                + (f"?{query}" if query else ""))

    def sql(self, database: str, query: str) -> str:
        proc = subprocess.run(
            [self.psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "postgres", "-d", database, "-c", query],
            capture_output=True, text=True, env={**os.environ, "PGPASSWORD": self.password}, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway Postgres 15 on loopback, password-protected, run as the `postgres` user when we are root.

    Missing server binaries fail the tests that need them (PostgresUnavailable says how to install them):
    the gateway's ledger is a required part, never a reason to skip.
    """
    tools = {name: pg_tool(name) for name in ("initdb", "pg_ctl", "psql")}
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="inferbook-pg-"))  # not pytest's tmp: its folders are 0700 root
    password = secrets.token_urlsafe(16)
    (base / "pwfile").write_text(password + "\n")
    if as_postgres:
        shutil.chown(base, "postgres")
        shutil.chown(base / "pwfile", "postgres")
    data, port = base / "data", free_port()
    subprocess.run([*as_postgres, tools["initdb"], "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-sync",
                    "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={base / 'pwfile'}"],
                   check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=200"
    subprocess.run([*as_postgres, tools["pg_ctl"], "-D", str(data), "-o", options, "-l", str(base / "log"),
                    "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield Postgres(port, password, tools["psql"])
    finally:
        subprocess.run([*as_postgres, tools["pg_ctl"], "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres: Postgres) -> str:
    postgres.sql("postgres", "CREATE DATABASE litellm")
    # Prisma-only parameters on purpose: both the shim and the migration driver must strip them.
    return postgres.url("litellm", connection_limit="5", pool_timeout="20", schema="public")


@pytest.fixture(scope="session")
def litellm_python() -> Path:
    return LITELLM.ensure(default_cache_dir())


@pytest.fixture(scope="session")
def engine() -> Path:
    return ensure_engine(default_cache_dir())


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME: no Prisma engines cached, nothing of the user's leaks in."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def shim_env(engine: Path, home: Path, litellm_python: Path) -> dict[str, str]:
    return {
        **os.environ,
        **engine_env(engine, schema_engine_stub(engine)),
        "HOME": str(home),
        # As if the environment were activated: `prisma generate` runs the `prisma-client-py` generator from PATH.
        "PATH": f"{litellm_python.parent}{os.pathsep}{os.environ['PATH']}",
        # The Prisma CLI that `prisma generate` fetches from npm: kept across sessions.
        "PRISMA_BINARY_CACHE_DIR": str(default_cache_dir() / "prisma-python-cli"),
    }


def _site_packages_file(python: Path, package: str, *parts: str) -> Path:
    code = f"import importlib.util; print(importlib.util.find_spec({package!r}).submodule_search_locations[0])"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return Path(out).joinpath(*parts)


@dataclass
class Migrations:
    first: list[str]
    second: list[str]
    on_disk: list[Path]


@pytest.fixture(scope="session")
def migrations(database_url: str, litellm_python: Path) -> Migrations:
    folder = _site_packages_file(litellm_python, "litellm_proxy_extras", "migrations")
    on_disk = sorted(p for p in folder.iterdir() if (p / "migration.sql").is_file())
    first = apply_migrations(database_url, litellm_python, say=print)
    second = apply_migrations(database_url, litellm_python, say=print)
    return Migrations(first, second, on_disk)


@pytest.fixture(scope="session")
def generated_client(litellm_python: Path, shim_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    schema = _site_packages_file(litellm_python, "litellm", "proxy", "schema.prisma")
    assert schema.is_file(), schema
    proc = subprocess.run([str(litellm_python), "-m", "prisma", "generate", "--schema", str(schema)],
                          capture_output=True, text=True, env=shim_env, cwd=tmp_path_factory.mktemp("generate"),
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


# ---------------------------------------------------------------------------------------------


def test_engine_command_line(engine: Path, tmp_path: Path) -> None:
    version = subprocess.run([str(engine), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"query-engine {ENGINE_COMMIT}"
    stub = schema_engine_stub(engine)
    assert ENGINE_COMMIT in subprocess.run([str(stub), "--version"], capture_output=True, text=True, check=True).stdout
    refused = subprocess.run([str(stub), "migrate"], capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "apply_migrations" in refused.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PRISMA_DML", "PRISMA_DML_PATH")}
    no_model = subprocess.run([str(engine), "-p", str(free_port())], capture_output=True, text=True, env=env,
                              timeout=30, check=False)
    assert no_model.returncode == 1 and "PRISMA_DML" in no_model.stderr
    # A second call finds the install and does not reinstall.
    assert ensure_engine(default_cache_dir(), say=lambda line: pytest.fail(f"reinstalled: {line}")) == engine


def test_native_engines_are_absent_with_an_empty_cache(litellm_python: Path, home: Path) -> None:
    env = {**os.environ, "HOME": str(home / "fresh")}
    env.pop("PRISMA_BINARY_CACHE_DIR", None)
    assert native_engines_available(litellm_python, env) is False


def test_migrations_apply_once_and_are_recorded_as_prisma_would(
    migrations: Migrations, postgres: Postgres, database_url: str, litellm_python: Path
) -> None:
    assert len(migrations.on_disk) > 200
    assert migrations.first == [p.name for p in migrations.on_disk]  # all, in name order
    assert migrations.second == []
    rows = postgres.sql("litellm", "SELECT migration_name, checksum, applied_steps_count, finished_at IS NOT NULL "
                                   "FROM _prisma_migrations ORDER BY migration_name")
    recorded = [line.split("|") for line in rows.splitlines()]
    assert len(recorded) == len(migrations.on_disk)
    for (name, checksum, steps, finished), folder in zip(recorded, migrations.on_disk, strict=True):
        assert name == folder.name
        assert checksum == hashlib.sha256((folder / "migration.sql").read_bytes()).hexdigest()
        assert (steps, finished) == ("1", "t")
    assert postgres.sql("litellm", "SELECT to_regclass('public.\"LiteLLM_VerificationToken\"') IS NOT NULL") == "t"
    with pytest.raises(PrismaOfflineError, match="could not apply"):
        apply_migrations(postgres.url("no_such_database"), litellm_python, say=print)


CLIENT_SCRIPT = r'''
import asyncio, json
from prisma import Json, Prisma
from prisma.errors import UniqueViolationError


async def main():
    out = {}
    db = Prisma()
    await db.connect()
    token = "tok-offline-1"
    created = await db.litellm_verificationtoken.create(data={
        "token": token, "key_alias": "alias-1", "models": ["m1", "m2"], "spend": 0.5,
        "metadata": Json({"team": "a", "n": [1, 2]}), "expires": "2031-01-02T03:04:05Z"})
    out["created"] = [created.token, created.models, created.metadata, created.expires.isoformat()]
    found = await db.litellm_verificationtoken.find_unique(where={"token": token})
    out["find_unique"] = [found.token, found.key_alias, found.metadata]
    first = await db.litellm_verificationtoken.find_first(
        where={"key_alias": "alias-1", "expires": {"gt": "2030-01-01T00:00:00Z"}})
    out["find_first"] = first.token if first else None
    out["find_first_none"] = await db.litellm_verificationtoken.find_first(where={"key_alias": "nobody"})
    updated = await db.litellm_verificationtoken.update(
        where={"token": token}, data={"spend": {"increment": 1.25}, "metadata": Json({"team": "b"})})
    out["updated"] = [updated.spend, updated.metadata]
    try:
        await db.litellm_verificationtoken.create(data={"token": token})
        out["unique_violation"] = "no error"
    except UniqueViolationError as error:
        out["unique_violation"] = type(error).__name__
    try:
        async with db.tx() as tx:
            await tx.litellm_verificationtoken.create(data={"token": "tok-rolled-back"})
            out["inside_tx"] = (await tx.litellm_verificationtoken.find_unique(
                where={"token": "tok-rolled-back"})).token
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    out["after_rollback"] = await db.litellm_verificationtoken.find_unique(where={"token": "tok-rolled-back"})
    async with db.tx() as tx:
        await tx.litellm_verificationtoken.create(data={"token": "tok-committed"})
    out["after_commit"] = (await db.litellm_verificationtoken.find_unique(where={"token": "tok-committed"})).token
    out["count"] = await db.litellm_verificationtoken.count()
    out["query_raw"] = await db.query_raw(
        'SELECT token, spend, metadata, metadata->>$2 AS team FROM "LiteLLM_VerificationToken" WHERE token = $1',
        token, "team")
    # Catalog types (name, name[]) as LiteLLM's startup checks read them.
    out["query_raw_catalog"] = await db.query_raw(
        "SELECT viewname, ARRAY_AGG(viewname) OVER () AS names FROM pg_views WHERE viewname = 'pg_roles'")
    out["execute_raw"] = await db.execute_raw('DELETE FROM "LiteLLM_VerificationToken" WHERE token = $1',
                                              "tok-committed")
    await db.disconnect()
    print("RESULT " + json.dumps(out, default=str))

asyncio.run(main())
'''


def test_prisma_client_through_the_shim(
    generated_client: str, migrations: Migrations, litellm_python: Path, shim_env: dict[str, str],
    database_url: str, postgres: Postgres, tmp_path: Path,
) -> None:
    assert "Generated Prisma Client Python" in generated_client
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    proc = subprocess.run([str(litellm_python), str(script)], capture_output=True, text=True, cwd=tmp_path,
                          env={**shim_env, "DATABASE_URL": database_url}, timeout=240, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["created"] == ["tok-offline-1", ["m1", "m2"], {"team": "a", "n": [1, 2]}, "2031-01-02T03:04:05+00:00"]
    assert out["find_unique"] == ["tok-offline-1", "alias-1", {"team": "a", "n": [1, 2]}]
    assert out["find_first"] == "tok-offline-1"
    assert out["find_first_none"] is None
    assert out["updated"] == [1.75, {"team": "b"}]
    assert out["unique_violation"] == "UniqueViolationError"
    assert out["inside_tx"] == "tok-rolled-back"
    assert out["after_rollback"] is None
    assert out["after_commit"] == "tok-committed"
    assert out["count"] == 2
    assert out["query_raw"] == [{"token": "tok-offline-1", "spend": 1.75, "metadata": {"team": "b"}, "team": "b"}]
    assert out["query_raw_catalog"] == [{"viewname": "pg_roles", "names": ["pg_roles"]}]
    assert out["execute_raw"] == 1
    # Json is stored as a JSON object, not as a JSON string holding the text.
    assert postgres.sql("litellm", "SELECT jsonb_typeof(metadata) FROM \"LiteLLM_VerificationToken\" "
                                   "WHERE token = 'tok-offline-1'") == "object"


PROXY_CONFIG = """
model_list:
  - model_name: fake-model
    litellm_params:
      model: openai/fake-model
      api_base: http://127.0.0.1:9/v1
      api_key: not-used
litellm_settings:
  telemetry: false
"""


def _http(method: str, url: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_litellm_proxy_issues_and_checks_virtual_keys(
    generated_client: str, migrations: Migrations, litellm_python: Path, shim_env: dict[str, str],
    database_url: str, tmp_path: Path,
) -> None:
    master_key = "sk-" + secrets.token_urlsafe(24)
    (tmp_path / "config.yaml").write_text(PROXY_CONFIG)
    port = free_port()
    env = {
        **shim_env,
        "DATABASE_URL": database_url,
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_SALT_KEY": "sk-" + secrets.token_urlsafe(24),
        "DISABLE_SCHEMA_UPDATE": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "true",
        "LITELLM_TELEMETRY": "False",
    }
    log = tmp_path / "proxy.log"
    started = time.monotonic()
    with open(log, "w") as out:
        proxy = subprocess.Popen([str(litellm_python.with_name("litellm")), "--config", str(tmp_path / "config.yaml"),
                                  "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    engines: list[psutil.Process] = []
    try:
        ready: dict = {}
        while time.monotonic() - started < 180 and proxy.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/health/readiness", timeout=5) as response:
                    ready = json.loads(response.read())
                if ready.get("db") == "connected":
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        assert ready.get("db") == "connected", f"proxy not ready ({ready}); log:\n{log.read_text()[-4000:]}"
        to_healthy = time.monotonic() - started
        family = [psutil.Process(proxy.pid), *psutil.Process(proxy.pid).children(recursive=True)]
        engines = [p for p in family if "query-engine.mjs" in " ".join(p.cmdline())]
        assert len(engines) == 1, [p.cmdline() for p in family]
        rss = {("engine" if p in engines else "proxy"): p.memory_info().rss // 2**20 for p in family}
        print(f"\nproxy healthy after {to_healthy:.1f} s; RSS MiB {rss}")

        status, created = _http("POST", f"{base}/key/generate", master_key,
                                {"models": ["fake-model"], "max_budget": 1.0, "key_alias": "offline-test-key"})
        assert status == 200, created
        key = created["key"]
        assert key.startswith("sk-") and created["key_alias"] == "offline-test-key"

        status, info = _http("GET", f"{base}/key/info?key={key}", master_key)
        assert status == 200, info
        assert info["info"]["key_alias"] == "offline-test-key"
        assert info["info"]["models"] == ["fake-model"] and info["info"]["max_budget"] == 1.0

        status, listed = _http("GET", f"{base}/key/list", master_key)
        assert status == 200 and listed["total_count"] >= 1, listed
        assert hashlib.sha256(key.encode()).hexdigest() in listed["keys"]

        status, models = _http("GET", f"{base}/v1/models", key)
        assert status == 200 and [m["id"] for m in models["data"]] == ["fake-model"], models
        status, refused = _http("GET", f"{base}/v1/models", "sk-" + secrets.token_urlsafe(24))
        assert status == 401, refused
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
    # The engine does not outlive the proxy (prisma-client-py stops it; the shim also watches its parent).
    gone, alive = psutil.wait_procs(engines, timeout=10)
    assert not alive, [p.pid for p in alive]
    assert master_key not in log.read_text()
