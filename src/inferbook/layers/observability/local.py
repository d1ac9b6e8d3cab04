"""The observability layer on the local target: Debian's Prometheus as a process, scraping vLLM and LiteLLM.

One source of truth, as for the other layers: the rules Prometheus loads are the groups of the rendered
PrometheusRule (written to a rules file and checked with ``promtool``), and what it scrapes comes from
the ServiceMonitors the serving and llm-gateway layers ship (their path), pointed at the local ports.
Only what cannot carry over is local: loopback targets, a short scrape interval so a short load shows
within seconds, and the data folder in the user cache, outside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ... import targets
from ...errors import InferbookError
from ...layer import LocalLayer
from ...manifests import find
from ...paths import Layout, default_cache_dir
from ...process import ServerProcess, claim_port, fingerprint
from ...profile import Profile
from ...say import Say
from ...secrets import SecretStore
from ..llm_gateway import manifests as gateway_manifests
from ..routing import chat_bases
from ..serving import manifests as serving_manifests
from . import manifests, promtool
from .endpoint import PrometheusEndpoint
from .prometheus import Prometheus, PrometheusError

#: The key of Prometheus' port in ``local.ports`` (the layer is ``observability``).
PORT_KEY = "prometheus"
#: Scrape and rule-evaluation interval of the local Prometheus: a short load shows within seconds. Every scrape
#: of LiteLLM is one line in its access log, so not shorter.
SCRAPE_INTERVAL_S = 5
#: Local data is a working set, not an archive.
RETENTION = ("7d", "1GB")


def home(profile: Profile, cache_dir: Path | None = None) -> Path:
    """The local Prometheus' folder (config, rules, data) of one profile and port, in the user cache."""
    port = int(profile.data["local"]["ports"][PORT_KEY])
    return (cache_dir or default_cache_dir()) / "state" / profile.name / f"prometheus-{port}"


def ours(base: str, config_path: Path) -> bool:
    """A Prometheus answers at ``base`` and runs with ``config_path``: ours, not another one on the port."""
    try:
        flags = Prometheus(base, timeout=5)._get("/api/v1/status/flags")
    except PrometheusError:
        return False
    return flags.get("config.file") == str(config_path)


class LocalPrometheus(LocalLayer):
    """Start, reuse, check and stop the local Prometheus of one profile."""

    layer = PORT_KEY

    def __init__(self, profile: Profile, layout: Layout, cache_dir: Path | None = None,
                 secrets: SecretStore | None = None, say: Say = print,
                 scrape_interval_s: int = SCRAPE_INTERVAL_S) -> None:
        super().__init__(profile, layout, cache_dir, secrets, say)
        self.scrape_interval_s = scrape_interval_s
        self.home = home(profile, self.cache_dir)
        self.config_path = self.home / "prometheus.yml"
        self.rules_path = self.home / "rules.yaml"
        self.data_dir = self.home / "data"
        self.token_path = self.home / "litellm-metrics.token"
        # The config path is unique to this profile and port: it marks the process as ours.
        self.process = ServerProcess(PORT_KEY, self.port, str(self.config_path), self.home / "state.json",
                                     self.run_dir / "logs" / "prometheus.log", self.supervisor)

    @property
    def url(self) -> str:
        """Prometheus' base URL (its API is under ``/api/v1``; it has no OpenAI ``/v1``)."""
        return self.base

    def api(self) -> Prometheus:
        return Prometheus(self.base)

    def healthy(self) -> bool:
        """Ready, and ours (it runs with this profile's config file)."""
        return self.api().ready() and ours(self.base, self.config_path)

    # ------------------------------------------------------------------ what it loads

    def rules(self) -> dict[str, Any]:
        """The SLO rules as a rules file: the groups of the rendered PrometheusRule, unchanged."""
        return manifests.rule_groups(manifests.MANIFESTS.render(self.profile, self.layout))

    def scrape_configs(self) -> tuple[list[dict[str, Any]], str | None]:
        """One job per enabled layer, from its ServiceMonitor's path; and the LiteLLM bearer token, if it needs one.

        LiteLLM's ``/metrics/`` asks for a key only when ``require_auth_for_metrics_endpoint`` is on in its
        config; then Prometheus reads the master key from a 0600 file in this folder, never from its config.
        """
        ports = self.profile.data["local"]["ports"]
        jobs: list[dict[str, Any]] = []
        token = None
        if "serving" in self.profile.features:
            path = _monitor_path(serving_manifests.MANIFESTS.render(self.profile, self.layout), "vllm")
            job = _job("vllm", path, ports["serving"])
            if "routing" in self.profile.features:  # every replica of the chat model's pool, and the canary
                job["static_configs"] = [{"targets": [b.removeprefix("http://") for b in chat_bases(self.profile)]}]
            jobs.append(job)
        if "llm-gateway" in self.profile.features:
            objects = gateway_manifests.MANIFESTS.render(self.profile, self.layout)
            job = _job("litellm", _monitor_path(objects, "litellm"), ports["llm-gateway"])
            settings = gateway_manifests.gateway_config(objects).get("litellm_settings") or {}
            if settings.get("require_auth_for_metrics_endpoint"):
                token = self.secrets.get(gateway_manifests.MASTER_KEY_SECRET)
                job["authorization"] = {"type": "Bearer", "credentials_file": str(self.token_path)}
            jobs.append(job)
        return jobs, token

    def config(self, jobs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": f"{self.scrape_interval_s}s",
                       "evaluation_interval": f"{self.scrape_interval_s}s",
                       "scrape_timeout": f"{max(1, self.scrape_interval_s - 1)}s"},
            "rule_files": [str(self.rules_path)],
            "scrape_configs": jobs,
        }

    def argv(self) -> list[str]:
        return [promtool.program("prometheus"), f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}", f"--storage.tsdb.retention.time={RETENTION[0]}",
                f"--storage.tsdb.retention.size={RETENTION[1]}", f"--web.listen-address=127.0.0.1:{self.port}"]

    # ------------------------------------------------------------------ lifecycle

    # ------------------------------------------------------------------ the chapter's steps (as ClusterObservability's)

    def provision(self, objects: list[dict[str, Any]], timeout: float = 120) -> PrometheusEndpoint:
        """Start (or reuse) the local Prometheus with the layer's rules; ``objects`` are the cluster's."""
        status = self.bring_up(timeout)
        status["version"] = self.api().buildinfo().get("version", "?")
        return PrometheusEndpoint(self.url, "local process", status, self.scrape_interval_s)

    def ledger(self, database: str, role: dict[str, Any], secret: str) -> Any:
        """The gateway layer's Postgres on ``local.ports.postgres`` as the read-only ``role``, kept in line with the
        Cluster's ``spec.managed.roles`` first (as the operator would), its password from the local secret store."""
        from ..llm_gateway import LocalGateway  # the local gateway's Postgres and secret store
        from .ledger import Ledger, LedgerError

        gateway = LocalGateway(self.profile, self.layout, say=self.say)
        if not gateway.postgres.accepting():
            raise LedgerError(f"the gateway's ledger (Postgres at {gateway.postgres.display_url()}) is not accepting "
                              f"connections. Fix: inferbook up --profile {self.profile.name}")
        gateway.postgres.ensure_role(role)
        return Ledger("127.0.0.1", gateway.postgres.port, database, role["name"],
                      lambda: gateway.secrets.get(f"{secret}/password"), "local process")

    def start(self, timeout: float = 120) -> dict[str, Any]:
        """Start Prometheus, or reuse a healthy one of ours started with the same config; returns :meth:`status`."""
        if not targets.kind_of(self.profile).local_processes:
            raise InferbookError(
                f"profile {self.profile.name} targets a cluster; the local Prometheus runs only for target.kind: "
                f"local. On a cluster the observability chapter applies the rules and dashboards for the "
                "Prometheus of kube-prometheus-stack")
        rules = self.rules()
        jobs, token = self.scrape_configs()
        config = self.config(jobs)
        argv = self.argv()
        launched_with = fingerprint(config, rules, argv)
        if self.process.reusable(launched_with, self.say):
            if not self.healthy():  # ours, being (re)started by its supervisor
                self.process.wait(self.healthy, timeout, self.say, "Prometheus to load its config and storage",
                                  restarts_ok=True)
            self.say(f"prometheus: reusing the healthy Prometheus at {self.url}")
            return self.status()
        if self.process.pid() is not None:
            self.say("prometheus: ours runs unsupervised (started by an earlier inferbook); restarting it")
            self.process.stop(self.say)
        claim_port(self.port, PORT_KEY, "this profile's Prometheus", self.profile.name)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.rules_path.write_text(yaml.safe_dump(rules, sort_keys=False, width=200))
        promtool.check_rules(self.rules_path)
        if token is not None:
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(token)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        pid = self.process.launch(argv, dict(os.environ), self.home)
        self.process.record(url=self.url, fingerprint=launched_with)
        scraped = ", ".join(j["job_name"] for j in jobs)
        self.say(f"prometheus: started (pid {pid}, supervised) on {self.url}, scraping {scraped} every "
                 f"{self.scrape_interval_s} s; data in {self.data_dir}; log {self.process.log_path}")
        self.process.wait(self.healthy, timeout, self.say, "Prometheus to load its config and storage")
        return self.status()

    def running(self) -> bool:
        return self.process.pid() is not None

    def diagnosis(self) -> str:
        """What is wrong ("" if nothing), naming the command that fixes it."""
        if self.healthy():
            return ""
        if self.process.supervised():
            return f"Prometheus of profile {self.profile.name} is starting at {self.url}; log: {self.process.log_path}"
        return (f"no Prometheus of profile {self.profile.name} runs at {self.url}. "
                f"Fix: inferbook up --profile {self.profile.name}")

    def stop(self) -> bool:
        """Stop our Prometheus; True when one was running (its data stays for the next start)."""
        return self.process.stop(self.say)

    def status(self) -> dict[str, Any]:
        """The endpoint as ``inferbook status --json`` reports it: health, targets up, rules loaded."""
        healthy = self.healthy()
        facts: dict[str, Any] = {"url": self.url, "healthy": healthy, "data": str(self.data_dir)}
        if healthy:
            api = self.api()
            targets = api.targets()
            facts["targets"] = {t["job"]: t["health"] for t in targets}
            facts["rules"] = len(api.rules())
        process = self.process.facts()
        state = "healthy" if healthy else ("starting" if self.process.supervised() else "down")
        targets = ", ".join(f"{job} {health}" for job, health in facts.get("targets", {}).items())
        pid = f", pid {process['pid']}" if process["pid"] else ""
        part = ("serving, " if healthy else "") + process["process"] + pid
        part += f"; targets: {targets}" if targets else ""
        return {**facts, "state": state, "parts": [{"part": "prometheus", "state": part, "ok": str(healthy)}],
                "problem": self.diagnosis() if not healthy else "", **process}


def _monitor_path(objects: list[dict[str, Any]], name: str) -> str:
    """The metrics path of a layer's ServiceMonitor: the scrape a cluster's Prometheus does, here by hand."""
    endpoints = find(objects, "ServiceMonitor", name)["spec"].get("endpoints") or [{}]
    return endpoints[0].get("path", "/metrics")


def _job(name: str, path: str, port: int) -> dict[str, Any]:
    return {"job_name": name, "metrics_path": path, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
