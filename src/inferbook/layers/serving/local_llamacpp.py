"""The coder on the local target: llama.cpp's llama-server as a supervised process, configured from its Deployment.

One source of truth, as for vLLM: every setting comes from the ``LLAMA_ARG_*`` environment of the rendered
``llama-server`` container (manifests/serving/components/llamacpp); only what cannot carry over is substituted:
the GGUF's path in the user cache (the verified file joined from its packages), the loopback host and port, the
threads this machine has, and the key from the local secret store instead of a Kubernetes Secret.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ... import cpu
from ...jsonapi import call_json
from ...manifests import find
from ...paths import Layout
from ...process import ServerProcess, claim_port, container_env, fingerprint, launch_table, part_row, port_holder
from ...profile import Profile
from ...say import Say
from ...secrets import SecretStore
from ...supervise import Supervisor
from . import llamacpp, models
from .manifests import LLAMACPP_CONTAINER, LLAMACPP_NAME, MANIFESTS

#: The key of ``local.ports`` the coder's server binds.
PORT_KEY = "coder"


@dataclass(frozen=True)
class LlamaLaunch:
    """How to start llama-server locally. ``env`` holds the key: show it only through :meth:`table`."""

    argv: list[str]
    env: dict[str, str]
    secret_env: dict[str, str]
    port: int
    served_name: str
    gguf: Path
    build: llamacpp.Build

    def table(self) -> pd.DataFrame:
        """The command and its environment as a reader may see them (the key withheld, home as ~)."""
        return launch_table(self.argv, self.env, self.secret_env)


def launch_spec(profile: Profile, layout: Layout, gguf: Path, build: llamacpp.Build, secrets: SecretStore,
                machine: cpu.CpuInfo | None = None) -> LlamaLaunch:
    """Derive the local llama-server command from the rendered ``llama-server`` Deployment of this profile."""
    deployment = find(MANIFESTS.render(profile, layout), "Deployment", LLAMACPP_NAME)
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"]
                     if c["name"] == LLAMACPP_CONTAINER)
    port = int(profile.data["local"]["ports"][PORT_KEY])
    env, secret_env = container_env(container, lambda name, key: secrets.get(f"{name}/{key}"),
                                    paths={"LLAMA_ARG_MODEL": str(gguf)})
    env.update(LLAMA_ARG_HOST="127.0.0.1", LLAMA_ARG_PORT=str(port),
               LLAMA_ARG_THREADS=str((machine or cpu.detect()).cores))
    return LlamaLaunch([str(build.binary)], env, secret_env, port, env["LLAMA_ARG_ALIAS"], gguf, build)


def probe(base: str, api_key: str) -> dict[str, Any] | None:
    """``{"models", "slots"}`` when a llama-server that accepts ``api_key`` answers at ``base``, else None."""
    try:
        status, health = call_json("GET", f"{base}/health", timeout=2)
        if status != 200 or health.get("status") != "ok":
            return None
        status, listed = call_json("GET", f"{base}/v1/models", api_key, timeout=2)
    except (OSError, ValueError):
        return None
    if status != 200:
        return None
    return {"models": [m["id"] for m in listed.get("data", [])], "engine": "llama.cpp"}


class LocalCoder:
    """Start, reuse, check and stop the coder's llama-server of one profile (a part of the serving layer)."""

    def __init__(self, profile: Profile, layout: Layout, cache_dir: Path, secrets: SecretStore,
                 supervisor: Supervisor, state_dir: Path, run_dir: Path, say: Say = print) -> None:
        self.profile = profile
        self.layout = layout
        self.cache_dir = cache_dir
        self.secrets = secrets
        self.say = say
        self.run_dir = run_dir
        self.port = int(profile.data["local"]["ports"][PORT_KEY])
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = run_dir / "logs" / "serving-coder.log"
        self.process = ServerProcess(PORT_KEY, self.port, llamacpp.BINARY, state_dir / f"coder-{self.port}.json",
                                     self.log_path, supervisor)
        self._launch: LlamaLaunch | None = None

    @property
    def url(self) -> str:
        return f"{self.base}/v1"

    @property
    def served_name(self) -> str:
        return self.profile.data["models"]["coder"]["served_name"]

    def api_key(self) -> str:
        return self.secrets.get("vllm-api-key/api-key")

    def probe(self) -> dict[str, Any] | None:
        return probe(self.base, self.api_key())

    def healthy(self) -> bool:
        found = self.probe()
        return bool(found and self.served_name in found["models"])

    def launch(self) -> LlamaLaunch:
        """The launch specification (builds llama-server and prepares the GGUF the first time)."""
        if self._launch is None:
            build = llamacpp.ensure(self.cache_dir, self.say)
            gguf = models.prepare_gguf(self.profile.data["models"]["coder"]["id"], self.cache_dir, self.say)
            self._launch = launch_spec(self.profile, self.layout, gguf, build, self.secrets)
        return self._launch

    def begin(self) -> bool:
        """Launch llama-server unless ours already runs with this configuration; True when one was launched."""
        spec = self.launch()
        launched_with = fingerprint(spec.argv, spec.env)
        if self.process.reusable(launched_with, self.say):
            return False
        if self.process.pid() is not None:
            self.process.stop(self.say)
        claim_port(self.port, PORT_KEY, f"llama-server serving {self.served_name} with this profile's key",
                   self.profile.name)
        pid = self.process.launch(spec.argv, {**os.environ, **spec.env}, self.run_dir)
        self.process.record(url=self.url, model=self.served_name, gguf=str(spec.gguf), fingerprint=launched_with)
        self.say(f"serving: started llama-server (pid {pid}, supervised) on {self.url} with {spec.gguf.name}; "
                 f"log {self.log_path}")
        return True

    def wait(self, timeout: float, restarts_ok: bool = False) -> None:
        self.process.wait(self.healthy, timeout, self.say, "llama-server to load the GGUF", restarts_ok=restarts_ok)

    def stop(self) -> bool:
        return self.process.stop(self.say)

    def part(self) -> dict[str, str]:
        """The coder's row in ``status``: serving or not, its process and pid."""
        return part_row("llama-server", self.process.facts(), self.healthy())

    def diagnosis(self) -> str:
        """What is wrong with the coder's server ("" if nothing), naming the fix."""
        found = self.probe()
        if found and self.served_name in found["models"]:
            return ""
        if self.process.supervised() and not found:
            return (f"llama-server of profile {self.profile.name} is starting at {self.url} (or being restarted by "
                    f"its supervisor); see its log: {self.log_path}")
        held = port_holder(self.port) if not found else None
        if held:
            return (f"port {self.port} is held by {held}, which is not this profile's llama-server. Fix: stop that "
                    f"process, or choose another port with -p local.ports.{PORT_KEY}=N")
        return (f"no llama-server of profile {self.profile.name} serves {self.served_name} at {self.url}. "
                f"Fix: inferbook up --profile {self.profile.name} --until serving")
