"""The guardrails layer on the local target: Presidio as one supervised process on ``local.ports.guardrails``.

On a cluster the analyzer and anonymizer are two images; here one server answers both routes (``/analyze``,
``/anonymize``) with the same library at the same version (:data:`.manifests.SERVER_SCRIPT`), on the pinned
presidio environment (``inferbook/envs/presidio.txt``). LiteLLM's presidio guardrail is pointed at it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ... import targets
from ...envs import PRESIDIO
from ...errors import InferbookError
from ...layer import LocalLayer
from ...paths import Layout
from ...process import ServerProcess, claim_port, fingerprint, part_row, port_holder
from ...profile import Profile
from ...say import Say
from ...secrets import SecretStore
from .manifests import LAYER, SERVER_SCRIPT


class LocalPresidio(LocalLayer):
    """Start, reuse, check and stop the local Presidio server of one profile."""

    layer = LAYER

    def __init__(self, profile: Profile, layout: Layout, cache_dir: Path | None = None,
                 secrets: SecretStore | None = None, say: Say = print) -> None:
        super().__init__(profile, layout, cache_dir, secrets, say)
        folder = self.state_dir / f"{LAYER}-{self.port}"
        self.process = ServerProcess(LAYER, self.port, SERVER_SCRIPT.name, folder / "state.json",
                                     self.run_dir / "logs" / f"{LAYER}.log", self.supervisor)

    @property
    def url(self) -> str:
        """Presidio's base URL: the analyzer's and the anonymizer's routes both live here."""
        return self.base

    def argv(self) -> list[str]:
        return [str(PRESIDIO.python(self.cache_dir)), str(SERVER_SCRIPT), "--host=127.0.0.1", f"--port={self.port}"]

    @property
    def fails_open(self) -> bool:
        """ADR-0029's tiers: with Presidio down, dev and cost pass prompts on unmasked; prod refuses them."""
        return self.profile.budget_mode != "fail-closed"

    def when_down(self) -> str:
        """What the gateway does while Presidio is down, on this profile's tier."""
        if self.fails_open:
            return f"the gateway passes prompts on UNMASKED (tier {self.profile.tier} fails open)"
        return f"the gateway refuses every request before any model call (tier {self.profile.tier} fails closed)"

    def health(self) -> dict[str, Any] | None:
        """The server's /health answer, or None when nothing (or not it) answers."""
        try:
            with urllib.request.urlopen(f"{self.base}/health", timeout=5) as response:
                found = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return found if isinstance(found, dict) and found.get("status") == "ok" else None

    def healthy(self) -> bool:
        return self.health() is not None

    def running(self) -> bool:
        return self.process.pid() is not None

    def analyze(self, text: str, entities: list[str] | None = None,
                ad_hoc_recognizers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """``POST /analyze``, as LiteLLM's guardrail sends it: the spans Presidio finds in ``text``."""
        body: dict[str, Any] = {"text": text, "language": "en"}
        if entities:
            body["entities"] = entities
        if ad_hoc_recognizers:
            body["ad_hoc_recognizers"] = ad_hoc_recognizers
        request = urllib.request.Request(f"{self.base}/analyze", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return list(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise InferbookError(f"Presidio refused /analyze ({exc.code}): {detail}") from None
        except OSError as exc:
            raise InferbookError(f"Presidio does not answer at {self.base} ({exc}). "
                                 f"Fix: inferbook up --profile {self.profile.name}") from None

    def start(self, timeout: float = 180) -> dict[str, Any]:
        """Start the server (building its environment the first time), or reuse a healthy one of ours."""
        if not targets.kind_of(self.profile).local_processes:
            raise InferbookError(f"profile {self.profile.name} targets a cluster; the local Presidio server runs only "
                                 f"for target.kind: local. For a cluster: inferbook run --profile {self.profile.name}")
        argv = self.argv()
        launched_with = fingerprint(argv)
        if self.process.reusable(launched_with, self.say) and self.healthy():
            self.say(f"guardrails: reusing the healthy Presidio server at {self.url}")
            return self.status()
        if self.process.pid() is not None:
            self.process.stop(self.say)
        claim_port(self.port, LAYER, "this profile's Presidio server", self.profile.name)
        PRESIDIO.ensure(self.cache_dir, self.say)
        pid = self.process.launch(argv, {"PYTHONDONTWRITEBYTECODE": "1"}, self.run_dir)
        self.process.record(url=self.url, fingerprint=launched_with)
        self.say(f"guardrails: started the Presidio server (pid {pid}, supervised) on {self.url}; "
                 f"log {self.process.log_path}")
        self.process.wait(self.healthy, timeout, self.say, "the Presidio server")
        return self.status()

    def stop(self) -> bool:
        return self.process.stop(self.say)

    def diagnosis(self) -> str:
        """What is wrong, and the fix ("" when healthy)."""
        if self.healthy():
            return ""
        held = port_holder(self.port)
        if held and not self.process.supervised():
            return (f"port {self.port} is held by {held}, not this profile's Presidio server. Fix: stop that process, "
                    f"or choose another port with -p local.ports.{LAYER}=N")
        return (f"the Presidio server of profile {self.profile.name} is not running at {self.url}; meanwhile "
                f"{self.when_down()}. Fix: inferbook up --profile {self.profile.name}")

    def status(self) -> dict[str, Any]:
        healthy = self.healthy()
        facts = self.process.facts()
        return self.report("-", [part_row("presidio", facts, healthy)], self.process.supervised(), self.diagnosis,
                           when_presidio_is_down=self.when_down(), **facts)
