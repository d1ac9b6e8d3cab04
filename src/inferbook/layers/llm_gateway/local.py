"""The tenant gateway on the local target: the LiteLLM proxy and its Postgres ledger, as processes.

Configured from the rendered ``llm-gateway`` manifests (the proxy's
ConfigMap and the ``litellm`` container's arguments and environment), with
only what cannot carry over substituted: the serving URL becomes the local
vLLM's, secrets come from the local store, the database URL is the local
Postgres'. LiteLLM's database client needs Prisma's native engines, which no
registry ships; where they are absent, :mod:`inferbook.prisma_offline`
supplies the query engine and the migrations (an air-gapped install with
package mirrors only hits exactly this).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ... import targets
from ...envs import LITELLM
from ...errors import InferbookError
from ...jsonapi import call_json
from ...layer import LocalLayer
from ...manifests import container as container_of
from ...manifests import find
from ...paths import Layout
from ...process import ServerProcess, claim_port, container_env, fingerprint, port_holder
from ...profile import Profile
from ...say import Say
from ...secrets import SecretStore
from ..serving import LocalServing
from . import manifests
from .endpoint import GatewayEndpoint, proxy_healthy
from .manifests import LAYER, MASTER_KEY_SECRET
from .postgres import LocalPostgres
from .prisma_offline import (
    ENGINE_COMMIT,
    apply_migrations,
    engine_env,
    ensure_engine,
    native_engines_available,
    schema_engine_stub,
)

DATABASE_SECRET = "litellm-db-app"  # CloudNativePG's generated app secret; locally: the local Postgres URL


def litellm_schema(python: Path) -> Path:
    """LiteLLM's Prisma schema in the environment of ``python``: the ledger's tables and their columns."""
    find = "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('litellm').origin).parent)"
    litellm_dir = subprocess.run([str(python), "-c", find], capture_output=True, text=True, check=True).stdout.strip()
    return Path(litellm_dir) / "proxy" / "schema.prisma"


class LocalGateway(LocalLayer):
    """Start, reuse, check and stop the local LiteLLM proxy (and its Postgres) of one profile."""

    layer = LAYER

    def __init__(self, profile: Profile, layout: Layout, cache_dir: Path | None = None,
                 secrets: SecretStore | None = None, say: Say = print) -> None:
        super().__init__(profile, layout, cache_dir, secrets, say)
        self.config_path = self.state_dir / f"{LAYER}-{self.port}" / "config.yaml"
        # The config path is unique to this profile and port: it marks the proxy process as ours.
        self.process = ServerProcess(LAYER, self.port, str(self.config_path), self.config_path.with_name("state.json"),
                                     self.run_dir / "logs" / f"{LAYER}.log", self.supervisor)
        self.postgres = LocalPostgres(profile, self.secrets, say=say, state_dir=self.state_dir,
                                      supervisor=self.supervisor)

    def master_key(self) -> str:
        """The proxy's admin key, generated per installation; keep it out of outputs."""
        return self.secrets.get(MASTER_KEY_SECRET)

    def healthy(self) -> bool:
        """Ready with its database connected, and ours (our master key is accepted); the ledger accepts connections.

        The ledger is asked directly: LiteLLM's readiness answers from its last view of the database, which
        can still say "connected" for a while after Postgres went away.
        """
        return self.postgres.accepting() and proxy_healthy(self.base, self.master_key())

    # ------------------------------------------------------------------ preparation

    def _litellm_env(self, python: Path) -> dict[str, str]:
        """Environment for LiteLLM and prisma-client-py: the offline engine where the native ones are absent."""
        env = {
            **os.environ,
            "HOME": str(self.cache_dir / "litellm-home"),
            "PRISMA_BINARY_CACHE_DIR": str(self.cache_dir / "prisma-python-cli"),
            "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
        if not native_engines_available(python, env):
            engine = ensure_engine(self.cache_dir, self.say)
            env.update(engine_env(engine, schema_engine_stub(engine)))
        return env

    def _generate_client(self, python: Path, env: dict[str, str]) -> None:
        """`prisma generate` for LiteLLM's schema, once per environment (it writes into the env)."""
        marker = python.parent.parent / f".inferbook-prisma-generated-{ENGINE_COMMIT[:8]}"
        if marker.is_file():
            return
        schema = litellm_schema(python)
        self.say("llm-gateway: generating LiteLLM's database client (once per environment)")
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([str(python), "-m", "prisma", "generate", "--schema", str(schema)], env=env, cwd=tmp,
                                  capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise InferbookError(f"`prisma generate` failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
        marker.write_text("generated\n")

    def _config(self, objects: list[dict[str, Any]]) -> dict[str, Any]:
        """The proxy config of the rendered ConfigMap, pointed at the local vLLM.

        One proxy process holds its own counters here, so the prod tier's Redis (counters shared between
        replicas) has no local counterpart: its ``router_settings`` are left out, so ``-p tier=prod`` runs.
        """
        config = manifests.gateway_config(objects)
        serving = LocalServing(self.profile, self.layout)
        # with features.routing every model goes through the routing layer's front (the inference gateway's part
        # here), which picks the pool by the model's name; without it, each alias goes to its server
        routed = "routing" in self.profile.features
        front = f"http://127.0.0.1:{self.profile.data['local']['ports']['routing']}/v1"
        for entry in config.get("model_list", []):
            params = entry.get("litellm_params", {})
            if "api_base" in params:
                coder = urlsplit(params["api_base"]).hostname.split(".")[0] == manifests.CODER_SERVICE
                params["api_base"] = (front if routed else
                                      serving.coder.url if coder and serving.coder is not None else serving.url)
        # the book's MCP server (features.mcp): the mcp layer's local process, on local.ports.mcp
        for server in (config.get("mcp_servers") or {}).values():
            server["url"] = urlsplit(server["url"])._replace(
                netloc=f"127.0.0.1:{self.profile.data['local']['ports']['mcp']}").geturl()
        # the guardrails (features.guardrails): the guardrails layer's local Presidio answers both of the images'
        # routes on local.ports.guardrails; the secret recognizers are in this config's folder, as in the pod's
        pii = manifests.guardrail(config, manifests.PII_GUARDRAIL)
        if pii is not None:
            presidio = f"http://127.0.0.1:{self.profile.data['local']['ports']['guardrails']}"
            pii.update(presidio_analyzer_api_base=presidio, presidio_anonymizer_api_base=presidio,
                       presidio_ad_hoc_recognizers=str(self.config_path.with_name(manifests.GUARDRAILS_RECOGNIZERS)))
        router = {k: v for k, v in (config.pop("router_settings", None) or {}).items() if not k.startswith("redis_")}
        if router:
            config["router_settings"] = router
        return config

    def _command(self, objects: list[dict[str, Any]], python: Path) -> tuple[list[str], dict[str, str]]:
        deployment = find(objects, "Deployment", "litellm")
        container = container_of(deployment, "litellm")
        args = [a for a in container.get("args") or [] if not a.startswith(("--config", "--port", "--host"))]
        argv = [str(python.with_name("litellm")), *args, f"--config={self.config_path}", "--host=127.0.0.1",
                f"--port={self.port}"]
        env, _ = container_env(container, lambda name, key: (self.postgres.url() if name == DATABASE_SECRET
                                                              else self.secrets.get(f"{name}/{key}")))
        return argv, env

    # ------------------------------------------------------------------ lifecycle

    # ------------------------------------------------------------------ the chapter's steps (as ClusterGateway's)

    def provision(self, objects: list[dict[str, Any]], timeout: float = 900) -> GatewayEndpoint:
        """Start the proxy and its Postgres as processes from the same manifests, or reuse a healthy proxy of ours."""
        status = self.bring_up(timeout)
        return GatewayEndpoint(self.url, self.base, self.master_key, "local process", status)

    def connect(self, timeout: float = 300) -> GatewayEndpoint:
        """The running local gateway, for chapters after llm-gateway; nothing is started."""
        problem = self.diagnosis()
        if problem:
            raise InferbookError(problem)
        return GatewayEndpoint(self.url, self.base, self.master_key, "local process", {**self.status(), "reused": True})

    def start(self, timeout: float = 600) -> dict[str, Any]:
        """Start Postgres and the proxy, or reuse a healthy proxy of ours; returns :meth:`status`."""
        if not targets.kind_of(self.profile).local_processes:
            raise InferbookError(
                f"profile {self.profile.name} targets a cluster; the local gateway runs only for target.kind: local. "
                f"For a cluster, run the book: inferbook run --profile {self.profile.name} (its llm-gateway chapter "
                "applies the layer, after the CloudNativePG and External Secrets operators are installed)"
            )
        objects = manifests.MANIFESTS.render(self.profile, self.layout)
        config = self._config(objects)
        files = manifests.gateway_files(objects)  # the ledger guard: beside the config, as in the pod
        python = LITELLM.python(self.cache_dir)
        argv, extra = self._command(objects, python)
        launched_with = fingerprint(config, files, argv, sorted(extra.items()))
        if self.process.reusable(launched_with, self.say):
            if self.healthy():
                self.say(f"llm-gateway: reusing the healthy LiteLLM proxy at {self.url}")
                self.ensure_roles(objects)
                return self.status()
            # ours and supervised, but not ready: its ledger may be down, or it is (re)starting
            self.postgres.start()
            self.ensure_roles(objects)
            self.say("llm-gateway: our LiteLLM proxy is up but not ready; waiting for it and its database")
            self.process.wait(self.healthy, timeout, self.say, "the LiteLLM proxy and its database", restarts_ok=True)
            return self.status()
        if self.process.pid() is not None:
            self.say("llm-gateway: a proxy of ours runs unsupervised (started by an earlier inferbook); restarting it")
            self.process.stop(self.say)
        claim_port(self.port, LAYER, "this profile's LiteLLM proxy", self.profile.name)
        self.postgres.start()
        self.ensure_roles(objects)
        LITELLM.ensure(self.cache_dir, self.say)
        env = self._litellm_env(python)
        apply_migrations(self.postgres.url(), python, self.say)
        self._generate_client(python, env)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        for name, text in files.items():  # modules the config loads from its folder
            self.config_path.with_name(name).write_text(text)
        pid = self.process.launch(argv, {**env, **extra}, self.run_dir)
        self.process.record(url=self.url, fingerprint=launched_with)
        self.say(f"llm-gateway: started the LiteLLM proxy (pid {pid}, supervised) on {self.url}; "
                 f"log {self.process.log_path}")
        self.process.wait(self.healthy, timeout, self.say, "the LiteLLM proxy and its database")
        return self.status()

    def ensure_roles(self, objects: list[dict[str, Any]]) -> None:
        """The ledger's managed roles of the rendered Cluster (the dashboards' read-only login), as CloudNativePG
        would keep them: created or brought in line in the local Postgres, passwords from the local store."""
        for role in manifests.ledger_roles(objects):
            self.postgres.ensure_role(role)

    def running(self) -> bool:
        return self.process.pid() is not None or self.postgres.running()

    def stop(self) -> bool:
        stopped = self.process.stop(self.say)
        return self.postgres.stop() or stopped

    def alive(self) -> bool:
        """The proxy process answers HTTP at all (LiteLLM's liveliness probe needs neither key nor database)."""
        try:
            status, _ = call_json("GET", f"{self.base}/health/liveliness", timeout=5)
        except (OSError, ValueError):
            return False
        return status == 200

    def parts(self) -> list[dict[str, str]]:
        """Each part of the layer on its own (proxy, ledger), so a report blames the one that failed."""
        facts = self.process.facts()
        alive = self.alive()
        proxy = ("serving" if alive else facts["process"]) + (f", pid {facts['pid']}" if facts["pid"] else "")
        ledger = self.postgres.running()
        return [{"part": "proxy", "state": proxy, "ok": str(alive)},
                {"part": "ledger", "state": f"{'accepting connections' if ledger else 'down'} "
                                            f"({self.postgres.display_url()})", "ok": str(ledger)}]

    def diagnosis(self) -> str:
        """What is wrong with the layer, naming the part that failed and the command that fixes it ("" if nothing)."""
        fix = f"Fix: inferbook up --profile {self.profile.name}"
        if self.healthy():
            return ""
        if not self.alive():
            held = port_holder(self.port)
            if held and not self.process.supervised():
                return (f"port {self.port} is held by {held}, not this profile's LiteLLM proxy. Fix: stop that "
                        f"process, or choose another port with -p local.ports.{LAYER}=N")
            if self.process.supervised():
                return (f"the LiteLLM proxy of profile {self.profile.name} is starting at {self.url} (first start, or "
                        f"its supervisor restarting it after a crash). Wait, or see its log: {self.process.log_path}")
            return f"the LiteLLM proxy of profile {self.profile.name} is not running at {self.url}. {fix}"
        if not self.postgres.running():
            tier = self.profile.tier
            serves = ("it still serves keys it has validated (fail-open tier " + tier + "), but books no spend"
                      if self.profile.budget_mode == "fail-open" else
                      "it refuses every virtual key until the ledger is back (fail-closed tier " + tier + ")")
            return (f"the gateway's ledger (Postgres at {self.postgres.display_url()}) is down; the proxy at "
                    f"{self.url} is up and {serves}. {fix} (it restarts the ledger)")
        return (f"the LiteLLM proxy at {self.url} answers but is not ready (its database is not connected, or "
                f"our master key is refused). {fix}; its log: {self.process.log_path}")

    def status(self) -> dict[str, Any]:
        """The endpoint as ``inferbook status --json`` reports it: the layer, and each part on its own."""
        healthy = self.healthy()
        parts = self.parts()
        state = ("healthy" if healthy else "degraded" if parts[0]["ok"] == "True"
                 else "starting" if self.process.supervised() else "down")
        return {"url": self.url, "healthy": healthy, "state": state, "parts": parts,
                "problem": "" if healthy else self.diagnosis(),
                "database": self.postgres.display_url(), **self.process.facts()}
