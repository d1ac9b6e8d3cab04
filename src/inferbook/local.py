"""The embedded local stack: its layers in start order, and what `inferbook up/down/status` do with them.

Each local layer is a :class:`~inferbook.layer.LocalLayer` with ``start()``, ``stop()`` and ``status()``;
adding a layer (the gateway, Prometheus) means adding it to :data:`LAYERS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import InferbookError
from .gateway import LocalGateway
from .paths import Layout
from .profile import Profile
from .serving import LocalServing

if TYPE_CHECKING:
    from .gateway_admin import Admin

Say = Callable[[str], None]


#: Local layers in start order; each is (name, factory).
LAYERS: tuple[tuple[str, type[LocalGateway] | type[LocalServing]], ...] = (
    ("serving", LocalServing),
    ("llm-gateway", LocalGateway),
)


def _require_local(profile: Profile) -> None:
    if profile.target_kind != "local":
        raise InferbookError(
            f"profile {profile.name} targets a cluster (target.kind: kube); `up`, `down` and `status` drive the "
            "embedded local stack. For a cluster, run the book: inferbook run --profile " + profile.name
        )


def layers(profile: Profile, until: str | None = None) -> list[str]:
    """The enabled local layers in start order, up to and including ``until``."""
    names = [name for name, _ in LAYERS]
    if until is not None and until not in names:
        raise InferbookError(f"unknown layer '{until}'; the local stack has: {', '.join(names)}")
    chosen = []
    for name in names:
        if name in profile.features:
            chosen.append(name)
        if name == until:
            break
    return chosen


def _make(name: str, profile: Profile, layout: Layout, say: Say, cache_dir: Path | None) -> LocalServing | LocalGateway:
    factory = dict(LAYERS)[name]
    return factory(profile, layout, cache_dir=cache_dir, say=say)


def up(profile: Profile, layout: Layout, until: str | None = None, say: Say = print,
       cache_dir: Path | None = None) -> dict[str, Any]:
    _require_local(profile)
    return {name: _make(name, profile, layout, say, cache_dir).start() for name in layers(profile, until)}


def down(profile: Profile, layout: Layout, say: Say = print, cache_dir: Path | None = None) -> list[str]:
    _require_local(profile)
    stopped = []
    for name in reversed([n for n, _ in LAYERS]):
        if _make(name, profile, layout, say, cache_dir).stop():
            stopped.append(name)
    return stopped


def admin(profile: Profile, layout: Layout, cache_dir: Path | None = None) -> "Admin":
    """The admin API of the profile's running local gateway."""
    from .gateway_admin import Admin

    _require_local(profile)
    gateway = LocalGateway(profile, layout, cache_dir=cache_dir, say=lambda _: None)
    if not gateway.healthy():
        raise InferbookError(
            f"the LiteLLM gateway of profile {profile.name} is not running at {gateway.url}. "
            f"Fix: inferbook up --profile {profile.name} (or run the book)"
        )
    return Admin(gateway.base, gateway.master_key())


def status(profile: Profile, layout: Layout, cache_dir: Path | None = None) -> dict[str, Any]:
    _require_local(profile)
    return {name: _make(name, profile, layout, lambda _: None, cache_dir).status() for name, _ in LAYERS}
