"""What a layer is: its declaration (:class:`Layer`) and the base of its local processes (:class:`LocalLayer`).

A layer is declared once, in its own package (``inferbook.layers.<name>``), and listed once, in the
registry :data:`inferbook.layers.LAYERS`. Everything that iterates over layers (the local stack's
``up``/``down``/``status``, preflight, the command line, rendering by name) reads the declaration; none
of it names a layer. This module sits below the layers: it imports no layer.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from . import manifests
from .paths import Layout, default_cache_dir
from .profile import Profile
from .say import Say
from .secrets import SecretStore
from .supervise import Supervisor

#: A command-line handler: parsed arguments in, exit status out.
Handler = Callable[[argparse.Namespace], int]


class LocalLayer:
    """Base of a layer's local target (vLLM, LiteLLM, ...); ``layer`` names its port in ``local.ports``."""

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
        #: The profile's supervisord: it runs, restarts and stops the layer's servers.
        self.supervisor = Supervisor(self.state_dir)

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL of the layer."""
        return f"{self.base}/v1"

    def healthy(self) -> bool:
        raise NotImplementedError

    def running(self) -> bool:
        """Whether a server of this layer runs (supervised by us, healthy or not): what ``down`` would stop."""
        raise NotImplementedError

    def start(self, timeout: float) -> dict[str, Any]:
        raise NotImplementedError

    def stop(self) -> bool:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def report(self, model: str, parts: list[dict[str, str]], supervised: bool, problem: Callable[[], str],
               **facts: Any) -> dict[str, Any]:
        """The layer's ``status``: healthy when every part is, "starting" while its supervisor still keeps one,
        the ``problem`` (asked only when not healthy), and the layer's own ``facts``."""
        healthy = all(p["ok"] == "True" for p in parts)
        return {
            "url": self.url,
            "model": model,
            "healthy": healthy,
            "state": "healthy" if healthy else ("starting" if supervised else "down"),
            "parts": parts,
            "problem": "" if healthy else problem(),
            **facts,
        }

    def bring_up(self, timeout: float) -> dict[str, Any]:
        """:meth:`start`, and whether a healthy server of ours was reused rather than started (the chapter says so)."""
        reused = self.healthy()
        status = self.start(timeout=timeout)
        status["reused"] = reused
        return status


def lazy(module: str, name: str) -> Callable[..., "ClusterLayer"]:
    """A layer's ``cluster=`` hook that imports ``module`` only when a kube target builds the part.

    A cluster part imports the kube client (and with it the kubernetes package); the local stack, preflight and
    the command line read every declaration and should not pay for that import, nor fail when a cluster-only
    dependency is broken. The returned callable takes the arguments of :class:`ClusterLayer` and returns
    ``module.name`` built with them.
    """

    def build(*args: Any, **kwargs: Any) -> "ClusterLayer":
        part = getattr(importlib.import_module(module), name)(*args, **kwargs)
        if not isinstance(part, ClusterLayer):
            raise TypeError(f"{module}.{name} is not a ClusterLayer; a layer's cluster= hook must build one")
        return part

    build.__qualname__ = build.__name__ = f"lazy:{module}.{name}"
    build.__doc__ = f"The layer's cluster steps ({module}.{name}), imported only on a kube target."
    return build


class ClusterLayer:
    """Base of a layer's steps on a cluster: what it proves there beyond applying its objects.

    Built by a kube target (:meth:`inferbook.targets.KubeTarget.part`), which it keeps to apply, wait and expose.
    """

    def __init__(self, profile: Profile, layout: Layout, target: Any, say: Say = print) -> None:
        self.profile = profile
        self.layout = layout
        self.target = target
        self.say = say

    @property
    def context(self) -> str:
        """The kubeconfig context of the target's cluster."""
        return str(self.target.context)

    @property
    def namespace(self) -> str:
        """The namespace the layer's namespaced objects go to (the profile's ``target.namespace``)."""
        return str(self.target.namespace)

    @property
    def kubeconfig(self) -> str | None:
        """The profile's kubeconfig file, or None for the client's own (``$KUBECONFIG``, ~/.kube/config)."""
        return self.target.kubeconfig  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Layer:
    """One layer's declaration: everything the code above the layers may ask of it.

    ``name`` is the layer's one name: its profile feature, ``manifests/<name>/``, its chapter
    ``notebooks/NN-<name>.ipynb`` and (with ``-`` as ``_``) its package ``inferbook.layers.<name>``.
    Each hook is optional: a layer without manifests has no ``manifests``, one without local processes no
    ``local``.
    """

    name: str
    #: One line on what the layer provisions (the registry's table).
    summary: str
    #: Its manifests: what a profile selects and patches (:class:`inferbook.manifests.LayerManifests`).
    manifests: manifests.LayerManifests | None = None
    #: (profile, layout, cache_dir=, say=) -> the layer's local processes.
    local: Callable[..., LocalLayer] | None = None
    #: (profile, layout, target=, say=) -> the layer's cluster-side steps (:class:`ClusterLayer`) on a kube target.
    cluster: Callable[..., "ClusterLayer"] | None = None
    #: Keys of ``local.ports`` the layer's processes bind (preflight checks each is free or ours).
    ports: tuple[str, ...] = ()
    #: (profile, port key) -> a description when this profile's own healthy process holds the port, else None.
    owner: Callable[[Profile, str], str | None] | None = None
    #: (argparse subparsers) -> {command: handler}: the layer's own ``inferbook`` commands.
    commands: Callable[[Any], dict[str, Handler]] | None = None
    #: The chapter that shows the layer when it has none of its own (identity, OpenCost and the MCP gateway are
    #: shown in ``security``'s); "" when its chapter is ``notebooks/NN-<name>.ipynb``.
    chapter: str = ""

    def render(self, profile: Profile, layout: Layout, book: Sequence["Layer"] = ()) -> list[dict[str, Any]]:
        """The layer's objects for ``profile``; an error when the layer has no manifests.

        ``book`` is the registry's layers in order: a layer whose objects are generated from the others
        (``LayerManifests.generate``) needs it; the registry and the chapters pass it.
        """
        if self.manifests is None:
            raise manifests.ManifestError(f"layer '{self.name}' has no manifests (no manifests/{self.name}/)")
        return self.manifests.render(profile, layout, book)
