"""The routing layer's manifests (ADR-0005): which base and components a profile selects, and the values it patches.

The base ``manifests/routing/gie`` holds the Gateway API Inference Extension (GIE) chain for the serving layer's
vLLM: the Gateway ``inference-gateway``, one HTTPRoute rule and one InferencePool per served model, the pool's
endpoint picker (EPP), GIE's body-based router (BBR) and the pool's InferenceObjectives. Components add how the
gateway implementation calls BBR (``agentgateway``) and a weighted canary pool (``canary``). The profile's values
(served model, gateway class, priorities, canary weight and pods) go into the overlay as JSON6902 patches, each
guarded by a ``test`` of the value the base had, so a moved element fails loudly rather than patching another.

The model names written here are the ones vLLM serves (``models.chat.served_name``): LiteLLM sends the tenant's
alias resolved to that name, BBR lifts it from the body into ``X-Gateway-Base-Model-Name``, and the route matches
it exactly. The coder of ``models.coder`` (llama.cpp) is not behind the gateway: GIE's picker reads vLLM's (and
SGLang's, Triton's) metrics, not llama-server's, and LiteLLM calls llama-server directly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable

import yaml

from ...manifests import LayerManifests, ManifestError, Selection, dump, find, guarded_replace, json6902, pod_spec
from ...paths import Layout
from ...profile import Profile
from ..platform.manifests import kueue_on, queue_label_ops

LAYER = "routing"
#: The Gateway and its listener; the implementation's controller names its Service after the Gateway (port 80):
#: LiteLLM's upstream (``llm_gateway.manifests.INFERENCE_GATEWAY_SERVICE`` is the same name).
GATEWAY_NAME = "inference-gateway"
GATEWAY_LISTENER, GATEWAY_PORT = "http", 80
DEFAULT_GATEWAY_CLASS = "agentgateway"
#: The one HTTPRoute; one rule per served model, named after the model's pool.
HTTPROUTE_NAME = "inference-models"
#: The header BBR sets from the body's ``model`` and the rules match; the header naming a request's objective.
MODEL_HEADER = "X-Gateway-Base-Model-Name"
OBJECTIVE_HEADER = "x-gateway-inference-objective"
#: The pool of the serving layer's vLLM Deployment (its model: models.chat), and the canary's.
POOL_NAME = "vllm"
CANARY_POOL_NAME = "vllm-canary"
POOL_GROUP = "inference.networking.k8s.io"
POOL_TARGET_PORT = 8000
#: The canary's vLLM Deployment (components/canary) and the container it takes from the serving layer.
CANARY_DEPLOYMENT = "vllm-canary"
#: The coder's backend (components/coder, models.coder): the serving layer's llama-server Service, no pool.
CODER_BACKEND, CODER_PORT = "llama-server", 8080
#: The endpoint pickers (Deployment and Service of each pool), their shared account, config and ports.
EPP_PORT, EPP_HEALTH_PORT, EPP_METRICS_PORT = 9002, 9003, 9090
EPP_SERVICE_ACCOUNT = "endpoint-picker"
EPP_CONFIGMAP, EPP_CONFIG_KEY = "endpoint-picker-config", "epp-config.yaml"
EPP_CONTAINER = "epp"
#: GIE's body-based router and the ConfigMap (one per served model) that registers a model with it.
BBR_NAME, BBR_PORT = "body-based-router", 9004
BBR_MANAGED_LABEL = "inference.networking.k8s.io/bbr-managed"
#: The agentgateway policy (components/agentgateway) that runs BBR before the route is chosen.
BBR_POLICY_NAME = "body-based-routing"
#: GIE's version the images and the removed-in-v1.6.0 InferenceObjective come from (ADR-0005, "On a cluster").
GIE_VERSION = "v1.5.0"


def epp_name(pool: str) -> str:
    """The endpoint picker of ``pool`` (its Deployment and Service): ``vllm`` -> ``vllm-epp``."""
    return f"{pool}-epp"


def objective_name(pool: str, kind: str) -> str:
    """The InferenceObjective of ``pool`` for ``kind`` (interactive | batch): the value a request's header names."""
    return f"{pool}-{kind}"


def model_configmap(pool: str) -> str:
    """The ConfigMap registering ``pool``'s model with BBR."""
    return f"{pool}-model"


#: Names other code needs, by pool: the stable pool's picker and objectives.
EPP_NAME = epp_name(POOL_NAME)
CANARY_EPP_NAME = epp_name(CANARY_POOL_NAME)
OBJECTIVES = {kind: objective_name(POOL_NAME, kind) for kind in ("interactive", "batch")}
MODEL_CONFIGMAP = model_configmap(POOL_NAME)


# --------------------------------------------------------------------------- selection


def selection(profile: Profile) -> Selection:
    """The GIE base, the gateway implementation's attachment of BBR, and the canary when the profile asks."""
    routing = profile.data["routing"]
    gateway_class = routing["gateway_class"]
    components: list[tuple[str, str]] = []
    if gateway_class == DEFAULT_GATEWAY_CLASS:
        components.append(("agentgateway", "routing.gateway_class: agentgateway, which runs the body-based router "
                                           "before routing through an AgentgatewayPolicy (PreRouting ext-proc)"))
    coder = profile.data["models"].get("coder")
    if coder:
        components.append(("coder", f"models.coder: {coder['served_name']} on llama-server, routed to its Service "
                                    "(no picker reads llama.cpp's metrics)"))
    canary = routing["canary"]
    if canary["enabled"]:
        components.append(("canary", f"routing.canary.enabled: {100 - canary['weight']}/{canary['weight']} split "
                                     f"between pools {POOL_NAME} and {CANARY_POOL_NAME}"))
    reason = (f"GIE {GIE_VERSION} on gateway class {gateway_class}: Gateway, one HTTPRoute rule and InferencePool "
              "per served model, endpoint picker, body-based router, priorities (ADR-0005)")
    return Selection(layer=LAYER, base="routing/gie", base_reason=reason, components=tuple(components))


# --------------------------------------------------------------------------- patches


def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
            manifests: Path) -> list[dict[str, Any]]:
    """The profile's values: gateway class, the served model in the route and BBR, priorities, the canary."""
    model = served_model(profile)
    routing = profile.data["routing"]
    canary = "canary" in selection.component_names
    gateway = find(base_objects, "Gateway", GATEWAY_NAME)
    result = [json6902("Gateway", "gateway.networking.k8s.io", GATEWAY_NAME, guarded_replace(
        "/spec/gatewayClassName", gateway["spec"]["gatewayClassName"], routing["gateway_class"]))]
    result.append(_route_patch(find(base_objects, "HTTPRoute", HTTPROUTE_NAME), model,
                               routing["canary"]["weight"] if canary else None))
    configmap = find(base_objects, "ConfigMap", MODEL_CONFIGMAP)
    result.append({"target": {"version": "v1", "kind": "ConfigMap", "name": MODEL_CONFIGMAP},
                   "patch": dump(guarded_replace("/data/baseModel", configmap["data"]["baseModel"], model))})
    result += _priority_patches(base_objects, routing["priority"])
    if "coder" in selection.component_names:
        result += _coder_patches(selection, profile, manifests, find(base_objects, "HTTPRoute", HTTPROUTE_NAME))
    if canary:
        result.append(_canary_patch(profile, manifests, routing["canary"]))
    return result


def served_model(profile: Profile) -> str:
    """The model vLLM serves, by the name requests carry (``models.chat.served_name``): the stable pool's model."""
    chat = profile.data["models"].get("chat")
    if not chat:
        raise ManifestError(f"profile '{profile.name}' names no models.chat, so no pool has a model to route to. "
                            "Fix: add models.chat with id and served_name")
    return str(chat["served_name"])


def _rule_index(route: dict[str, Any], name: str) -> int:
    for i, rule in enumerate(route["spec"].get("rules") or []):
        if rule.get("name") == name:
            return i
    raise ManifestError(f"HTTPRoute {HTTPROUTE_NAME} has no rule named '{name}'. "
                        "Fix: restore it in manifests/routing/gie/httproute.yaml")


def _route_patch(route: dict[str, Any], model: str, canary_weight: int | None) -> dict[str, Any]:
    """The model's rule matches its served name; with a canary it splits between the two pools by weight."""
    r = _rule_index(route, POOL_NAME)
    rule = route["spec"]["rules"][r]
    headers = rule["matches"][0]["headers"]
    h = next((i for i, h in enumerate(headers) if h.get("name") == MODEL_HEADER), None)
    if h is None:
        raise ManifestError(f"rule {POOL_NAME} of HTTPRoute {HTTPROUTE_NAME} does not match header {MODEL_HEADER}. "
                            "Fix: restore its headers match in manifests/routing/gie/httproute.yaml")
    ops = guarded_replace(f"/spec/rules/{r}/matches/0/headers/{h}/value", headers[h]["value"], model)
    if canary_weight is not None:
        stable = dict(rule["backendRefs"][0])
        ops += guarded_replace(f"/spec/rules/{r}/backendRefs", rule["backendRefs"], [
            {**stable, "weight": 100 - canary_weight},
            {**stable, "name": CANARY_POOL_NAME, "weight": canary_weight},
        ])
    return json6902("HTTPRoute", "gateway.networking.k8s.io", HTTPROUTE_NAME, ops)


def _coder_patches(selection: Selection, profile: Profile, manifests: Path,
                   route: dict[str, Any]) -> list[dict[str, Any]]:
    """The coder's rule (its served name -> the llama-server Service) and its registration with BBR."""
    coder = str(profile.data["models"]["coder"]["served_name"])
    if coder == served_model(profile):
        raise ManifestError(f"models.coder and models.chat share the served name '{coder}', so one header would "
                            "match two rules. Fix: give each model its own served_name")
    template = route["spec"]["rules"][_rule_index(route, POOL_NAME)]
    rule = {"name": CODER_BACKEND,
            "matches": [{"path": template["matches"][0]["path"],
                         "headers": [{"type": "Exact", "name": MODEL_HEADER, "value": coder}]}],
            "backendRefs": [{"group": "", "kind": "Service", "name": CODER_BACKEND, "port": CODER_PORT}],
            "timeouts": template.get("timeouts", {})}
    if not rule["timeouts"]:
        del rule["timeouts"]
    configmap = yaml.safe_load((selection.component_dir(manifests, "coder") / "configmap.yaml").read_text())
    name = configmap["metadata"]["name"]
    return [json6902("HTTPRoute", "gateway.networking.k8s.io", HTTPROUTE_NAME,
                     [{"op": "add", "path": "/spec/rules/-", "value": rule}]),
            {"target": {"version": "v1", "kind": "ConfigMap", "name": name},
             "patch": dump(guarded_replace("/data/baseModel", configmap["data"]["baseModel"], coder))}]


def _priority_patches(base_objects: list[dict[str, Any]], priority: dict[str, int]) -> list[dict[str, Any]]:
    """Each objective's priority from the profile; interactive must stay above batch (ADR-0005)."""
    if priority["interactive"] <= priority["batch"]:
        raise ManifestError(f"routing.priority.interactive ({priority['interactive']}) must be above "
                            f"routing.priority.batch ({priority['batch']}): interactive requests are served first "
                            "under load (ADR-0005). Fix: raise interactive or lower batch")
    out = []
    for kind, name in OBJECTIVES.items():
        objective = find(base_objects, "InferenceObjective", name)
        out.append(json6902("InferenceObjective", "inference.networking.x-k8s.io", name,
                            guarded_replace("/spec/priority", objective["spec"]["priority"], priority[kind])))
    return out


def _canary_patch(profile: Profile, manifests: Path, canary: dict[str, Any]) -> dict[str, Any]:
    """The canary Deployment's pod: the serving layer's rendered vLLM pod for this profile, and the canary image.

    Rendered here rather than copied into the component, so the canary always runs the profile's model, flags,
    sizes and hardware (the cpu component's image on a CPU cluster), and differs only by what makes it a canary.
    """
    from ..serving.manifests import MANIFESTS as SERVING
    from ..serving.manifests import VLLM_CONTAINER, WORKLOAD_NAME

    if "kserve" in profile.features:
        raise ManifestError("routing.canary needs the raw vLLM Deployment to copy, but features.kserve renders a "
                            "KServe InferenceService. Fix: set routing.canary.enabled: false or features.kserve: false")
    with tempfile.TemporaryDirectory(prefix="inferbook-canary-") as build:
        serving = SERVING.render(profile, Layout(root=manifests.parent, build_dir=Path(build)))
    pod = pod_spec(find(serving, "Deployment", WORKLOAD_NAME))
    image = canary.get("image")
    if image:
        for c in pod["containers"]:
            if c.get("name") == VLLM_CONTAINER:
                c["image"] = image
    ops = [{"op": "replace", "path": "/spec/replicas", "value": canary["replicas"]},
           {"op": "replace", "path": "/spec/template/spec", "value": pod}]
    if kueue_on(profile):  # a GPU pod like the serving layer's: it queues for its slot (ADR-0002)
        deployment = yaml.safe_load((manifests / LAYER / "components" / "canary" / "deployment.yaml").read_text())
        ops += queue_label_ops("/metadata/labels", deployment["metadata"].get("labels"))
        ops += queue_label_ops("/spec/template/metadata/labels",
                               ((deployment["spec"]["template"].get("metadata") or {}).get("labels")))
    return json6902("Deployment", "apps", CANARY_DEPLOYMENT, ops)


# --------------------------------------------------------------------------- helpers for readers of the result


def pools(objects: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every rendered InferencePool by name."""
    return {o["metadata"]["name"]: o for o in objects if o.get("kind") == "InferencePool"}


def model_routes(objects: Iterable[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    """Served model -> [(pool, weight)] as the HTTPRoute's rules send it (weight 1 when unset, as the API defaults).

    What a chapter shows and a test checks: a model no rule names is not in the result, and the gateway answers 404.
    """
    route = find(objects, "HTTPRoute", HTTPROUTE_NAME)
    out: dict[str, list[tuple[str, int]]] = {}
    for rule in route["spec"]["rules"]:
        for match in rule.get("matches") or []:
            for header in match.get("headers") or []:
                if header.get("name") == MODEL_HEADER and header.get("type", "Exact") == "Exact":
                    out[header["value"]] = [(ref["name"], int(ref.get("weight", 1))) for ref in rule["backendRefs"]
                                            if ref.get("kind", "Service") in ("InferencePool", "Service")]
    return out


MANIFESTS = LayerManifests(LAYER, selection, patches)
