"""The embedded local stack: what `inferbook up/down/status` do with the layers that run as processes.

The layers and their order come from the registry (:data:`inferbook.layers.LAYERS`): a layer with a
``local`` target is started here in stack order and stopped in reverse. Nothing here names a layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import targets
from .errors import InferbookError
from .layer import Layer, LocalLayer
from .layers import LAYERS
from .paths import Layout
from .profile import Profile
from .say import Say


def _require_local(profile: Profile) -> None:
    if not targets.kind_of(profile).local_processes:
        raise InferbookError(
            f"profile {profile.name} targets a cluster (target.kind: kube); `up`, `down` and `status` drive the "
            "embedded local stack. For a cluster, run the book: inferbook run --profile " + profile.name
        )


def _local_layers() -> list[Layer]:
    return [layer for layer in LAYERS if layer.local is not None]


def layers(profile: Profile, until: str | None = None) -> list[str]:
    """The enabled local layers in start order, up to and including ``until``."""
    names = [layer.name for layer in _local_layers()]
    if until is not None and until not in names:
        raise InferbookError(f"unknown layer '{until}'; the local stack has: {', '.join(names)}")
    if until is not None and until not in profile.features:
        raise InferbookError(f"profile {profile.name} does not enable the {until} layer, so `--until {until}` would "
                             f"start nothing of it. Fix: add -p features.{until}=true, or name an enabled layer")
    chosen = []
    for name in names:
        if name in profile.features:
            chosen.append(name)
        if name == until:
            break
    return chosen


def _make(layer: Layer, profile: Profile, layout: Layout, say: Say, cache_dir: Path | None) -> LocalLayer:
    assert layer.local is not None
    return layer.local(profile, layout, cache_dir=cache_dir, say=say)


def up(profile: Profile, layout: Layout, until: str | None = None, say: Say = print,
       cache_dir: Path | None = None) -> dict[str, Any]:
    _require_local(profile)
    chosen = layers(profile, until)
    return {layer.name: _make(layer, profile, layout, say, cache_dir).start()
            for layer in _local_layers() if layer.name in chosen}


def down(profile: Profile, layout: Layout, say: Say = print, cache_dir: Path | None = None,
         keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Stop the local layers (all but those in ``keep``) in reverse order; the names of those that ran."""
    _require_local(profile)
    stopped = []
    for layer in reversed(_local_layers()):
        if layer.name in keep:
            continue
        if _make(layer, profile, layout, say, cache_dir).stop():
            stopped.append(layer.name)
    return stopped


def live(profile: Profile, layout: Layout, cache_dir: Path | None = None) -> set[str]:
    """The local layers with a server of this profile running (healthy or not), e.g. before a run starts any."""
    _require_local(profile)
    return {layer.name for layer in _local_layers()
            if _make(layer, profile, layout, lambda _: None, cache_dir).running()}


def status(profile: Profile, layout: Layout, cache_dir: Path | None = None) -> dict[str, Any]:
    _require_local(profile)
    return {layer.name: _make(layer, profile, layout, lambda _: None, cache_dir).status()
            for layer in _local_layers()}
