"""The llm-gateway layer's manifests: the LiteLLM base, its tier components, and the proxy config it renders.

The proxy's whole config is one YAML text in a ConfigMap; the overlay writes it complete (base, then each
selected component's ``litellm-config.yaml`` fragment, then the profile's values), so the config a run
used is in its overlay and both targets start the proxy from it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import yaml

from ...manifests import LayerManifests, ManifestError, Selection, dump, find, pointer
from ...profile import Profile

LAYER = "llm-gateway"
#: Names the llm-gateway base shares with the rest of inferbook (local runtime, gateway admin, tests).
GATEWAY_NAME = "litellm"
GATEWAY_CONTAINER = "litellm"
GATEWAY_CONFIGMAP = "litellm-config"
GATEWAY_CONFIG_KEY = "config.yaml"
GATEWAY_DB_CLUSTER = "litellm-db"
#: The ledger's read-only login (the Cluster's managed role, ADR-0015): what the spend dashboard connects as.
LEDGER_READER_ROLE = "ledger_reader"
#: The built-in role that grants it SELECT on every table and nothing more.
LEDGER_READER_GRANT = "pg_read_all_data"
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
#: The coder's llama-server Service (the serving layer's llamacpp component, models.coder) and its port.
CODER_SERVICE, CODER_SERVICE_PORT = "llama-server", 8080
#: LiteLLM's provider for llama-server, per alias role: chat through inferbook's ``llamacpp`` provider (real tool
#: calls from a model that writes them as text, on all three protocols: proxy_hooks/llamacpp_tools.py); FIM
#: through ``hosted_vllm``, llama-server's OpenAI-compatible ``/v1/completions``. The part after the prefix is
#: sent as `model`: llama-server's alias.
CODER_PROVIDERS = {"chat": "llamacpp", "fim": "hosted_vllm"}
GATEWAY_CODER_FILE = "llamacpp_tools.py"
GATEWAY_CODER_PROVIDER = {"provider": "llamacpp", "custom_handler": "llamacpp_tools.provider"}
#: The Service of the routing layer's Gateway (ADR-0005), LiteLLM's upstream when features.routing is on.
INFERENCE_GATEWAY_SERVICE = "inference-gateway"
#: inferbook's LiteLLM extension (fail-open covers budgets and spend, never authentication): a file of this
#: package (proxy_hooks/), put beside config.yaml as a ConfigMap key; LiteLLM loads it from the config's folder.
GATEWAY_GUARD_FILE = "ledger_guard.py"
GATEWAY_GUARD_AUTH = "ledger_guard.authenticate"
GATEWAY_GUARD_CALLBACK = "ledger_guard.guard"
#: The hook that answers 503 naming the model server when it cannot be reached (proxy_hooks/backend_errors.py).
GATEWAY_BACKEND_FILE = "backend_errors.py"
GATEWAY_BACKEND_CALLBACK = "backend_errors.hook"
#: The guardrails component's names (features.guardrails): LiteLLM's two guardrails, and the file of the book's
#: secret recognizers (cloud keys, private keys, bearer tokens) beside the config, sent with each /analyze.
PII_GUARDRAIL, INJECTION_GUARDRAIL = "inferbook-pii", "inferbook-injection"
GUARDRAILS_RECOGNIZERS = "presidio_recognizers.json"
#: inferbook's PII guardrail (proxy_hooks/pii_guardrail.py): LiteLLM's presidio guardrail, failing open or closed
#: with the tier when Presidio cannot be reached.
GUARDRAILS_PII_FILE = "pii_guardrail.py"
#: Where the pod finds the files beside its config (the ConfigMap's mount); the local target uses its config folder.
GATEWAY_CONFIG_DIR = "/etc/litellm"



def selection(profile: Profile) -> Selection:
    """The llm-gateway layer: one LiteLLM base; prod adds HA (Redis, PDB), a feature adds its alias."""
    components: list[tuple[str, str]] = []
    if profile.tier == "prod":
        components.append(("prod-gateway", "tier: prod, 2 replicas sharing limits through Redis, budgets fail "
                                           "closed (ADR-0029 SR3)"))
    if "embeddings" in profile.features:
        components.append(("embeddings", "features.embeddings is on: the `embeddings` alias"))
    if "mcp" in profile.features:
        components.append(("mcp", "features.mcp is on: the book's MCP server behind the gateway's /mcp"))
    if "guardrails" in profile.features:
        components.append(("guardrails", "features.guardrails is on: PII masking (Presidio) and the prompt-injection "
                                         "block before any model call"))
    return Selection(layer=LAYER, base="llm-gateway/litellm",
                     base_reason="LiteLLM + CloudNativePG Postgres: keys, budgets, limits, spend (ADR-0013)",
                     components=tuple(components))




def patches(selection: Selection, profile: Profile, base_objects: list[dict[str, Any]],
                     manifests: Path) -> list[dict[str, Any]]:
    """The gateway's profile values: LiteLLM's config, proxy replicas, Postgres instances.

    The config is one YAML string inside a ConfigMap, which kustomize cannot patch field by field; so
    it is parsed here, the components' fragments, the profile's values and the ledger guard are set, and
    the whole text goes back through one ``replace`` patch; the guard's source is added as a second key,
    so the pod finds it beside its config (/etc/litellm). The overlay holds the exact config a run used.
    """
    configmap = find(base_objects, "ConfigMap", GATEWAY_CONFIGMAP)
    config = _parse_gateway_config(configmap)
    for name in selection.component_names:
        fragment = selection.component_dir(manifests, name) / GATEWAY_CONFIG_FRAGMENT
        if fragment.is_file():
            config = merge_gateway_config(config, _load_fragment(fragment))
    _apply_profile_to_config(config, profile)
    install_guard(config)
    files = {GATEWAY_GUARD_FILE: guard_source(), GATEWAY_BACKEND_FILE: hook_source(GATEWAY_BACKEND_FILE)}
    if profile.data["models"].get("coder"):  # the provider the coder's chat alias names
        files[GATEWAY_CODER_FILE] = hook_source(GATEWAY_CODER_FILE)
    if "guardrails" in selection.component_names:  # the PII guardrail, and the secret recognizers it sends
        files[GUARDRAILS_PII_FILE] = hook_source(GUARDRAILS_PII_FILE)
        files[GUARDRAILS_RECOGNIZERS] = (selection.component_dir(manifests, "guardrails")
                                         / GUARDRAILS_RECOGNIZERS).read_text(encoding="utf-8")
    text = yaml.safe_dump(config, sort_keys=False, width=200)

    deployment = find(base_objects, "Deployment", GATEWAY_NAME)
    find(base_objects, "Cluster", GATEWAY_DB_CLUSTER)  # fail here, naming what exists, if the base lost it
    deployment_ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/spec/replicas", "value": GATEWAY_REPLICAS[profile.tier]},
        _template_annotation_op(deployment, GATEWAY_CONFIG_HASH_ANNOTATION, config_digest(config, files)),
    ]
    # kustomize trims an inline patch's trailing whitespace, and with it the last value's final newline:
    # config.yaml goes last, where that changes nothing, so the guard's file arrives byte for byte.
    config_ops = [{"op": "add", "path": f"/data/{pointer(name)}", "value": body} for name, body in files.items()]
    config_ops.append({"op": "replace", "path": f"/data/{pointer(GATEWAY_CONFIG_KEY)}", "value": text})
    cluster_ops = [{"op": "replace", "path": "/spec/instances", "value": profile.data["database"]["instances"]}]
    return [
        {"target": {"version": "v1", "kind": "ConfigMap", "name": GATEWAY_CONFIGMAP}, "patch": dump(config_ops)},
        {"target": {"group": "apps", "kind": "Deployment", "name": GATEWAY_NAME}, "patch": dump(deployment_ops)},
        {"target": {"group": "postgresql.cnpg.io", "kind": "Cluster", "name": GATEWAY_DB_CLUSTER},
         "patch": dump(cluster_ops)},
    ]


def config_digest(config: dict[str, Any], files: dict[str, str] | None = None) -> str:
    """sha256 of a LiteLLM config's content (not its layout) and of the files beside it, for the pod template."""
    content = {"config": config, "files": files or {}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def guard_source() -> str:
    """The ledger guard's source, as the proxy loads it (:mod:`.proxy_hooks`, package data)."""
    return hook_source(GATEWAY_GUARD_FILE)


def hook_source(name: str) -> str:
    """A proxy hook's source, as the proxy loads it (:mod:`.proxy_hooks`, package data)."""
    return resources.files(__package__).joinpath("proxy_hooks", name).read_text(encoding="utf-8")


def install_guard(config: dict[str, Any]) -> None:
    """Name the ledger guard in LiteLLM's config: its custom auth, and its callback (after the others).

    LiteLLM's ``allow_requests_on_db_unavailable`` serves any ``sk-`` key while the ledger is down; the
    guard serves only keys the proxy has validated, and on a fail-closed tier says why a key is refused
    (proxy_hooks/ledger_guard.py). Its custom auth returns None for what it does not refuse, so LiteLLM's
    own key checks still decide; a profile's own ``custom_auth`` would be replaced, so one is refused.
    """
    settings = config.setdefault("general_settings", {})
    if settings.get("custom_auth") not in (None, GATEWAY_GUARD_AUTH):
        raise ManifestError(f"the LiteLLM config sets general_settings.custom_auth to {settings['custom_auth']}, "
                            f"but inferbook's ledger guard is the custom auth ({GATEWAY_GUARD_AUTH}). Fix: remove "
                            "it, or call it from proxy_hooks/ledger_guard.py")
    settings["custom_auth"] = GATEWAY_GUARD_AUTH
    litellm_settings = config.setdefault("litellm_settings", {})
    callbacks = list(litellm_settings.get("callbacks") or [])
    for callback in (GATEWAY_BACKEND_CALLBACK, GATEWAY_GUARD_CALLBACK):
        if callback not in callbacks:
            callbacks.append(callback)
    litellm_settings["callbacks"] = callbacks


def _template_annotation_op(deployment: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    """Add one pod-template annotation, creating the map when the base has none."""
    metadata = deployment["spec"]["template"].get("metadata") or {}
    if "annotations" in metadata:
        return {"op": "add", "path": f"/spec/template/metadata/annotations/{pointer(key)}", "value": value}
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
    """Set what the profile decides: served model and context per alias, upstream per entry, the budget mode.

    The context (``serving.max_model_len``) becomes the alias's ``max_input_tokens`` and
    ``max_output_tokens``: with ``modify_params`` LiteLLM then lowers a request's ``max_tokens`` to what
    is left of the context after the prompt, so a client asking for 32,000 tokens is served instead of
    getting vLLM's 400.
    """
    namespace = profile.data["target"]["namespace"]
    routing = "routing" in profile.features
    names = [e.get("model_name") for e in config["model_list"] if isinstance(e, dict)]
    missing = [alias for alias in GATEWAY_ALIASES if alias not in names]
    if missing:
        raise ManifestError(f"the LiteLLM config has no model_list entry for {', '.join(missing)}; other code relies "
                            "on these aliases. Fix: restore them in manifests/llm-gateway/litellm/configmap.yaml")
    coder = profile.data["models"].get("coder")
    served_entry: dict[str, Any] = {}
    for entry in config["model_list"]:
        params = entry.get("litellm_params") or {}
        alias = entry.get("model_name")
        if not isinstance(params.get("model"), str) or not isinstance(params.get("api_base"), str):
            raise ManifestError(f"model_list entry '{alias}' needs litellm_params.model and litellm_params.api_base")
        role = GATEWAY_ALIASES.get(alias)
        if role is not None:
            provider = params["model"].split("/", 1)[0]
            params["model"] = f"{provider}/{served_name(profile, role)}"
            context = int(profile.data["serving"]["max_model_len"])
            entry.setdefault("model_info", {}).update(max_input_tokens=context, max_output_tokens=context)
        # Only the generation models have an InferencePool behind the inference gateway; other entries
        # (the embeddings pooling server) keep their own Service, or the gateway would answer them 404.
        params["api_base"] = upstream_url(params["api_base"], namespace, routing and role is not None)
        if alias == CHAT_ALIAS:
            served_entry = _served_model_entry(entry, profile)
        if role is not None and coder and served_name(profile, role) == coder["served_name"]:
            params["model"] = f"{CODER_PROVIDERS[role]}/{coder['served_name']}"
            # with routing, the coder's model is routed by the inference gateway too (its own HTTPRoute rule)
            params["api_base"] = (upstream_url(params["api_base"], namespace, routing) if routing else
                                  f"http://{CODER_SERVICE}.{namespace}.svc.cluster.local:{CODER_SERVICE_PORT}/v1")
    config["model_list"].append(served_entry)
    for server in (config.get("mcp_servers") or {}).values():  # the book's MCP server (features.mcp)
        server["url"] = upstream_url(server["url"], namespace, False)
    _apply_guardrails(config, profile, namespace)
    if coder:
        litellm_settings = config.setdefault("litellm_settings", {})
        providers = [p for p in litellm_settings.get("custom_provider_map") or [] if p.get("provider") != "llamacpp"]
        litellm_settings["custom_provider_map"] = [*providers, dict(GATEWAY_CODER_PROVIDER)]
    settings = config.setdefault("general_settings", {})
    settings["allow_requests_on_db_unavailable"] = profile.budget_mode == "fail-open"


def guardrail(config: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The ``litellm_params`` of the guardrail called ``name`` in a LiteLLM config, or None."""
    for entry in config.get("guardrails") or []:
        if isinstance(entry, dict) and entry.get("guardrail_name") == name:
            return entry.setdefault("litellm_params", {})
    return None


def _apply_guardrails(config: dict[str, Any], profile: Profile, namespace: str) -> None:
    """The profile's guardrails section into the component's two entries (features.guardrails): the entities
    masked (each MASK), the injection categories (each BLOCK), default_on, the Presidio Services' namespace."""
    pii, injection = guardrail(config, PII_GUARDRAIL), guardrail(config, INJECTION_GUARDRAIL)
    if pii is None and injection is None:
        return
    if pii is None or injection is None:
        raise ManifestError(f"the LiteLLM config has one of the guardrails {PII_GUARDRAIL} and {INJECTION_GUARDRAIL} "
                            "but not the other. Fix: restore manifests/llm-gateway/components/guardrails")
    section = profile.data.get("guardrails") or {}
    pii["pii_entities_config"] = {entity: "MASK" for entity in section["pii_entities"]}
    thresholds = dict(section.get("score_thresholds") or {})
    if thresholds:
        pii["presidio_score_thresholds"] = thresholds
    injection["categories"] = [{"category": c, "enabled": True, "action": "BLOCK", "severity_threshold": "medium"}
                               for c in section["injection_categories"]]
    for params in (pii, injection):
        params["default_on"] = bool(section["default_on"])
    # ADR-0029: prod fails closed (refused before any model call), dev and cost fail open (unmasked, and said so)
    pii["unreachable_fallback"] = "fail_closed" if profile.budget_mode == "fail-closed" else "fail_open"
    for key in ("presidio_analyzer_api_base", "presidio_anonymizer_api_base"):
        pii[key] = upstream_url(pii[key], namespace, False)


def _served_model_entry(chat_entry: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """vLLM's model under its own served name: the gateway routes by model name, and the chapters that load vLLM
    (observability, resilience, benchmarks) call it so, whichever model the tenant aliases serve.

    A copy of the chat alias's entry (its vLLM upstream, key and prices) before a coder takes the alias over.
    """
    entry = copy.deepcopy(chat_entry)
    entry["model_name"] = serving_alias(profile)
    entry["litellm_params"]["model"] = f"{entry['litellm_params']['model'].split('/', 1)[0]}/{serving_alias(profile)}"
    return entry


def serving_alias(profile: Profile) -> str:
    """The gateway's name for vLLM's model (``models.chat.served_name``): what load, drills and benchmarks call."""
    return str(profile.data["models"]["chat"]["served_name"])


def served_name(profile: Profile, role: str) -> str:
    """The served model name behind an alias role (``chat`` or ``fim``): :meth:`Profile.alias_model`'s."""
    return str(profile.alias_model(role)["served_name"])


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



def gateway_config(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The LiteLLM proxy config of rendered llm-gateway objects, parsed from the ConfigMap.

    The one source of the model list, upstreams and settings: the cluster mounts this text, and the
    local target starts LiteLLM from the same dict (substituting each api_base with local vLLM's URL).
    """
    return _parse_gateway_config(find(objects, "ConfigMap", GATEWAY_CONFIGMAP))


def ledger_roles(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ledger's managed roles (the Cluster's ``spec.managed.roles``): what CloudNativePG keeps in the
    database on a cluster, and the local Postgres mirrors (:meth:`.postgres.LocalPostgres.ensure_role`)."""
    spec = find(objects, "Cluster", GATEWAY_DB_CLUSTER).get("spec") or {}
    return list((spec.get("managed") or {}).get("roles") or [])


def ledger_reader(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The managed role the dashboards read the ledger as: ``ledger_reader``, a login in ``pg_read_all_data``."""
    role = next((r for r in ledger_roles(objects) if r.get("name") == LEDGER_READER_ROLE), None)
    if role is None or LEDGER_READER_GRANT not in (role.get("inRoles") or []) or not role.get("login"):
        raise ManifestError(f"the Cluster {GATEWAY_DB_CLUSTER} declares no managed role {LEDGER_READER_ROLE} that "
                            f"logs in and is in {LEDGER_READER_GRANT}; the spend dashboard reads the ledger as it. "
                            "Fix: restore spec.managed.roles in manifests/llm-gateway/litellm/postgres-cluster.yaml")
    if not (role.get("passwordSecret") or {}).get("name"):
        raise ManifestError(f"the managed role {LEDGER_READER_ROLE} names no passwordSecret. Fix: restore it in "
                            "manifests/llm-gateway/litellm/postgres-cluster.yaml")
    return role


def gateway_files(objects: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The files the proxy finds beside its config (the ConfigMap's other keys: its hooks)."""
    data = find(objects, "ConfigMap", GATEWAY_CONFIGMAP).get("data") or {}
    return {name: text for name, text in data.items() if name != GATEWAY_CONFIG_KEY}


MANIFESTS = LayerManifests(LAYER, selection, patches, needed_by=", e.g. experience")
