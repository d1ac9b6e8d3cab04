"""The serving layer's manifests: which base and components a profile selects, and the values it patches.

The base is ``manifests/serving/vllm`` (a raw Deployment) or ``manifests/serving/kserve``; components under
``manifests/serving/components/`` add the tier's and the hardware's pieces. The profile's values (model,
served name, context length, replicas, rollout strategy, GPU sharing) go into the overlay as JSON6902
patches, each guarded by a ``test`` of the value the base had, so a moved element fails loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ...manifests import (
    LayerManifests,
    ManifestError,
    Selection,
    arg_index,
    dump,
    find,
    guarded_replace,
    index_of,
    json6902,
)
from ...profile import Profile
from ..platform.manifests import LOCAL_QUEUE, kueue_on

LAYER = "serving"
#: Names the serving bases share with the rest of inferbook (probes, local runtime, tests).
WORKLOAD_NAME = "vllm"
VLLM_CONTAINER = "vllm"
KSERVE_CONTAINER = "kserve-container"
INIT_CONTAINER = "stage-weights"
#: The llama.cpp component's Deployment and container (models.coder).
LLAMACPP_NAME = "llama-server"
LLAMACPP_CONTAINER = "llama-server"
TIME_SLICING_CONFIGMAP = "time-slicing-config"
ROLLING_UPDATE = {"maxSurge": 1, "maxUnavailable": 0}



def selection(profile: Profile) -> Selection:
    """The serving layer: raw vLLM or KServe, plus tier and GPU components."""
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
    if "autoscaling" in profile.features and base == "serving/vllm":
        components.append(("cold-start", "features.autoscaling: weights from the model cache, the pre-pulled image, "
                                         "the profile's startup budget (ADR-0025)"))
    if kueue_on(profile):
        components.append(("kueue", f"the platform's Kueue: the GPU workloads queue in LocalQueue {LOCAL_QUEUE} "
                                    "(ADR-0002)"))
    coder = profile.data["models"].get("coder")
    if coder:
        components.append(("llamacpp", f"models.coder: llama.cpp's llama-server with {coder['id']}'s GGUF (ADR-0036)"))
    reason = ("features.kserve is on: KServe InferenceService (ADR-0006)" if base.endswith("kserve")
              else "raw vLLM Deployment, the default (ADR-0006)")
    return Selection(layer=LAYER, base=base, base_reason=reason, components=tuple(components))



def model_dir_name(model_id: str) -> str:
    """The folder a model is staged in: the last component of its id (``Qwen/X`` -> ``X``)."""
    name = model_id.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ManifestError(f"model id '{model_id}' has no name. "
                            "Fix: set models.chat.id to e.g. Qwen/Qwen2.5-Coder-0.5B-Instruct")
    return name




def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
                     manifests: Path) -> list[dict[str, Any]]:
    """The serving layer's profile values: replicas, strategy, model, and the device plugin's sharing."""
    patches: list[dict[str, Any]] = []
    if selection.base == "serving/kserve":
        patches.append(_kserve_patch(profile, find(base_objects, "InferenceService", WORKLOAD_NAME)))
    else:
        patches.append(_deployment_patch(profile, find(base_objects, "Deployment", WORKLOAD_NAME)))
    if "multi-gpu" in selection.component_names:
        config = selection.component_dir(manifests, "multi-gpu") / "time-slicing-config.yaml"
        patches.append(_time_slicing_patch(profile, config))
    if "cold-start" in selection.component_names:
        patches.append(_startup_budget_patch(profile, find(base_objects, "Deployment", WORKLOAD_NAME)))
    if "llamacpp" in selection.component_names:
        deployment = yaml.safe_load((selection.component_dir(manifests, "llamacpp") / "deployment.yaml").read_text())
        patches.append(_llamacpp_patch(profile, deployment))
    return patches




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
        i = arg_index(args, prefix, args_path)
        ops += guarded_replace(f"{args_path}/{i}", args[i], prefix + value)
    dtype = profile.data["serving"].get("dtype", "auto")
    if dtype != "auto":  # the profile's precision wins over the base's auto and the cpu component's bfloat16
        i = arg_index(args, "--dtype=", args_path)
        ops.append({"op": "replace", "path": f"{args_path}/{i}", "value": f"--dtype={dtype}"})
    return ops


def _deployment_patch(profile: Profile, deployment: dict[str, Any]) -> dict[str, Any]:
    chat = profile.data["models"]["chat"]
    model_dir = f"/models/{model_dir_name(chat['id'])}"
    pod = deployment["spec"]["template"]["spec"]
    # Under KEDA the HPA owns the count: the field is dropped, or every apply would reset what it scaled to.
    replicas = ({"op": "remove", "path": "/spec/replicas"} if profile.replicas_scaled_by_keda else
                {"op": "replace", "path": "/spec/replicas", "value": profile.data["serving"]["replicas"]})
    ops: list[dict[str, Any]] = [replicas, {"op": "replace", "path": "/spec/strategy", "value": _strategy(profile)}]
    c = _index(pod["containers"], VLLM_CONTAINER, "container")
    args = pod["containers"][c]["args"]
    ops += _model_arg_ops(profile, args, f"/spec/template/spec/containers/{c}/args", model_dir)
    init = _index(pod.get("initContainers", []), INIT_CONTAINER, "init container")
    env = pod["initContainers"][init]["env"]
    for name, value in (("MODEL_ID", chat["id"]), ("MODEL_DIR", model_dir)):
        e = _index(env, name, f"env var of {INIT_CONTAINER}")
        ops += guarded_replace(f"/spec/template/spec/initContainers/{init}/env/{e}/value", env[e]["value"], value)
    return json6902("Deployment", "apps", WORKLOAD_NAME, ops)


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
        ops += guarded_replace(f"/spec/predictor/containers/{c}/env/{e}/value", old, new)
    return json6902("InferenceService", "serving.kserve.io", WORKLOAD_NAME, ops)


def _startup_budget_patch(profile: Profile, deployment: dict[str, Any]) -> dict[str, Any]:
    """The startupProbe's budget from the profile (``autoscaling.startup_probe``): a new replica's cold start."""
    budget = profile.data["autoscaling"]["startup_probe"]
    pod = deployment["spec"]["template"]["spec"]
    c = _index(pod["containers"], VLLM_CONTAINER, "container")
    path = f"/spec/template/spec/containers/{c}/startupProbe"
    if "startupProbe" not in pod["containers"][c]:
        raise ManifestError(f"the base's {VLLM_CONTAINER} container has no startupProbe. "
                            "Fix: restore it in manifests/serving/vllm/deployment.yaml")
    ops = [{"op": "replace", "path": f"{path}/periodSeconds", "value": budget["period_seconds"]},
           {"op": "replace", "path": f"{path}/failureThreshold", "value": budget["failure_threshold"]}]
    return json6902("Deployment", "apps", WORKLOAD_NAME, ops)


def coder_gguf(profile: Profile) -> tuple[str, str]:
    """(hub repository, file name) of the coder's GGUF: from the packaged-model catalogue, which pins the file."""
    from .models import catalogue  # the catalogue, not the preparation: rendering needs no download

    model_id = profile.data["models"]["coder"]["id"]
    packaged = catalogue().get(model_id)
    if packaged is None or not packaged.gguf_repo:
        raise ManifestError(f"models.coder '{model_id}' has no GGUF in the catalogue (models.yaml: gguf_name and "
                            "gguf_repo). Fix: name a packaged GGUF model, or add its entry")
    return packaged.gguf_repo, packaged.gguf_name


def _llamacpp_patch(profile: Profile, deployment: dict[str, Any]) -> dict[str, Any]:
    """The coder's file, served name and context (``serving.max_model_len`` per slot) in llama-server's env."""
    coder = profile.data["models"]["coder"]
    repo, gguf = coder_gguf(profile)
    pod = deployment["spec"]["template"]["spec"]
    c = _index(pod["containers"], LLAMACPP_CONTAINER, "container")
    env = pod["containers"][c]["env"]
    slots = int(next(e["value"] for e in env if e["name"] == "LLAMA_ARG_N_PARALLEL"))
    values = {"LLAMA_ARG_MODEL": f"/models/{gguf}", "LLAMA_ARG_ALIAS": coder["served_name"],
              "LLAMA_ARG_CTX_SIZE": str(int(profile.data["serving"]["max_model_len"]) * slots)}
    ops: list[dict[str, Any]] = []
    for name, value in values.items():
        e = _index(env, name, f"env var of {LLAMACPP_CONTAINER}")
        ops += guarded_replace(f"/spec/template/spec/containers/{c}/env/{e}/value", env[e]["value"], value)
    init = _index(pod["initContainers"], INIT_CONTAINER, "init container")
    init_env = pod["initContainers"][init]["env"]
    for name, value in (("MODEL_REPO", repo), ("MODEL_FILE", gguf)):
        e = _index(init_env, name, f"env var of {INIT_CONTAINER}")
        ops += guarded_replace(f"/spec/template/spec/initContainers/{init}/env/{e}/value", init_env[e]["value"], value)
    return json6902("Deployment", "apps", LLAMACPP_NAME, ops)


def _time_slicing_patch(profile: Profile, component_file: Path) -> dict[str, Any]:
    """Set the device plugin's replicas from the profile, or drop the ConfigMap where nothing reads it."""
    gpu = profile.data["gpu"]
    configmap = yaml.safe_load(component_file.read_text(encoding="utf-8"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": configmap["metadata"]["name"], "namespace": configmap["metadata"]["namespace"]}}
    if gpu["stack"] != "operator" or gpu["time_slicing"] <= 1:
        # GKE's managed stack shares GPUs through node-pool settings, not this ConfigMap, and
        # time_slicing 1 means no sharing: applying it would only fail (no gpu-operator namespace).
        return {"patch": dump({"$patch": "delete", **ref})}
    config = yaml.safe_load(configmap["data"]["any"])
    resources = config["sharing"]["timeSlicing"]["resources"]
    resources[_index(resources, "nvidia.com/gpu", "time-slicing resource")]["replicas"] = gpu["time_slicing"]
    ops = [{"op": "replace", "path": "/data/any", "value": yaml.safe_dump(config, sort_keys=False)}]
    return {"target": {"version": "v1", "kind": "ConfigMap", "name": ref["metadata"]["name"]},
            "patch": dump(ops)}


def _index(items: list[dict[str, Any]], name: str, what: str) -> int:
    return index_of(items, name, what, "manifests/serving/")


MANIFESTS = LayerManifests(LAYER, selection, patches)
