"""Targets: where a layer's objects go. One interface (:class:`Target`), one class per kind of target.

A layer is written once against :class:`Target`: it renders its objects, asks the target to ``apply`` them,
``wait`` for them, ``expose`` a Service, ``teardown`` what it applied, and asks for its own ``part`` on this
target (its local processes, or its cluster-side steps) for what only it knows how to do. The target decides
what each of those means: :class:`LocalTarget` (the embedded stack: processes on this machine, no API server),
:class:`KubeTarget` (server-side apply to a real cluster), :class:`DryRunTarget` (a cluster profile rendered and
planned, nothing sent). A new kind of target (a managed-cluster flavour) is one new class in :data:`KINDS`.

This package sits below the layers: it never imports one; a layer passes its own declaration in.
"""

from __future__ import annotations

from ..paths import Layout
from ..profile import Profile
from ..say import Say
from .base import Change, NoPart, Target, changes_table
from .dryrun import DryRunTarget
from .kube import KubeTarget
from .local import LocalTarget

__all__ = ["KINDS", "Change", "DryRunTarget", "KubeTarget", "LocalTarget", "NoPart", "Target", "changes_table",
           "kind_of", "of"]

#: Every kind of target, by the name a profile's ``target.kind`` gives.
KINDS: dict[str, type[Target]] = {cls.kind: cls for cls in (LocalTarget, KubeTarget, DryRunTarget)}


def kind_of(profile: Profile, *, dry_run: bool = False) -> type[Target]:
    """The class of the target ``profile`` names (``target.kind``): for a question about the target (its
    ``applies``, ``local_processes``) where no layout is at hand to build one."""
    kind = "dry-run" if dry_run else profile.target_kind
    try:
        return KINDS[kind]
    except KeyError:
        raise NoPart(f"profile {profile.name}: no target of kind '{kind}'; the kinds are {', '.join(KINDS)}. "
                     f"Fix: set target.kind to one of them") from None


def of(profile: Profile, layout: Layout, say: Say = print, *, dry_run: bool = False) -> Target:
    """The target ``profile`` names (``target.kind``); ``dry_run`` plans a cluster profile without sending anything."""
    return kind_of(profile, dry_run=dry_run)(profile, layout, say=say)
