"""What every layer of the embedded local stack has: its profile, its loopback port and its folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

from .paths import Layout, default_cache_dir
from .profile import Profile
from .secrets import SecretStore

Say = Callable[[str], None]


class LocalLayer:
    """Base of the local layers (``serving``, ``llm-gateway``); ``layer`` names its port in ``local.ports``."""

    layer: ClassVar[str]

    def __init__(self, profile: Profile, layout: Layout, cache_dir: Path | None = None,
                 secrets: SecretStore | None = None, say: Say = print) -> None:
        self.profile = profile
        self.layout = layout
        self.cache_dir = cache_dir or default_cache_dir()
        self.secrets = secrets or SecretStore(profile.name)
        self.say = say
        self.port = int(profile.data["local"]["ports"][self.layer])
        self.base = f"http://127.0.0.1:{self.port}"
        self.run_dir = layout.run_dir(profile.name)
        # A server belongs to the machine (it holds a port), not to one build folder: so does its state.
        self.state_dir = self.cache_dir / "state" / profile.name

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL of the layer."""
        return f"{self.base}/v1"

    def healthy(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float) -> dict[str, Any]:
        raise NotImplementedError

    def bring_up(self, timeout: float) -> dict[str, Any]:
        """:meth:`start`, and whether a healthy server of ours was reused rather than started (the chapter says so)."""
        reused = self.healthy()
        status = self.start(timeout=timeout)
        status["reused"] = reused
        return status
