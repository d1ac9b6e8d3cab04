"""Offline validation of rendered manifests: API schemas, CRD schemas and inferbook's own policy.

There is no cluster to ask (and a dry run needs one), so every check here runs
from files: built-in kinds against the Kubernetes OpenAPI schemas shipped with
``kubernetes_validate``, custom resources against their pinned CRD (closed with
``additionalProperties: false`` so a typo is an error, as the API server's
pruning would silently drop it), and a few named policy rules that encode the
decisions of the book. Each result is a row (object, rule, ok | warn | fail,
message) so a chapter can show the table and fail on the failures.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import jsonschema
import kubernetes_validate
import pandas as pd
from kubernetes_validate.utils import InvalidSchemaError, SchemaNotFoundError, VersionNotSupportedError

from .crds import CrdStore, CrdVersionError
from .errors import InferbookError
from .paths import Layout

#: Kubernetes minor the built-in kinds are checked against (GKE's regular channel and kind are at or above it).
KUBERNETES_VERSION = "1.33"

#: The labels every object carries; None = any non-empty value.
REQUIRED_LABELS: dict[str, str | None] = {
    "app.kubernetes.io/name": None,
    "app.kubernetes.io/component": None,
    "app.kubernetes.io/part-of": "inferbook",
    "app.kubernetes.io/managed-by": "inferbook",
}
GPU_RESOURCE = "nvidia.com/gpu"
#: The label that puts a workload in a Kueue LocalQueue (ADR-0002): every GPU workload carries it (ADR-0029 SR2).
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: Kinds whose pods Kueue admits one by one (its pod-based integrations): their pod template carries the label too.
POD_QUEUED_KINDS = ("Deployment", "StatefulSet")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
#: Env var names that hold credentials: their value must come from a Secret, never inline.
SECRET_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIALS?)(_|$)", re.IGNORECASE)
#: Where a secret file is mounted (``HF_TOKEN_PATH``): a path, the form secrets should take, not a secret.
SECRET_FILE_NAME = re.compile(r"_(PATH|FILE)$", re.IGNORECASE)

#: Rule names as they appear in the report.
RULES = ("schema", "labels", "digest-pinned", "resources", "non-root", "gpu-toleration", "gpu-queue-label",
         "secrets-by-reference", "probes", "no-secret-data")
#: Long-running workloads: a container of theirs that serves a port must say when it is ready.
SERVING_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "InferenceService"})


class ManifestInvalid(InferbookError):
    """Rendered manifests failed validation; lists every failure."""


@dataclass(frozen=True)
class Finding:
    """One verdict of one rule on one object."""

    kind: str
    name: str
    rule: str
    status: str  # ok | warn | fail
    message: str


@dataclass(frozen=True)
class ValidationReport:
    """Every finding of a validation run, in object order."""

    findings: tuple[Finding, ...]
    kubernetes_version: str = KUBERNETES_VERSION

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "warn"]

    def table(self) -> pd.DataFrame:
        """One row per finding: kind, name, rule, status, message."""
        columns = ["kind", "name", "rule", "status", "message"]
        return pd.DataFrame([asdict(f) for f in self.findings], columns=columns)

    def summary(self) -> str:
        objects = len({(f.kind, f.name) for f in self.findings})
        return (f"{objects} object(s), {len(self.findings)} check(s) against Kubernetes {self.kubernetes_version}: "
                f"{len(self.failures)} failed, {len(self.warnings)} warning(s)")

    def raise_for_failures(self) -> None:
        """Raise :class:`ManifestInvalid` naming every failure; warnings do not raise."""
        if self.failures:
            lines = [f"  - {f.kind}/{f.name} [{f.rule}]: {f.message}" for f in self.failures]
            raise ManifestInvalid(f"manifests failed validation ({self.summary()}):\n" + "\n".join(lines)
                                  + "\nFix: correct the manifests under manifests/ (or the profile) and render again")

    def save(self, path: Path) -> Path:
        """The findings as a JSON artefact of the run."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([asdict(f) for f in self.findings], indent=2) + "\n", encoding="utf-8")
        return path


def validate(objects: Iterable[dict[str, Any]], layout: Layout, *, kubernetes_version: str = KUBERNETES_VERSION,
             crds: CrdStore | None = None) -> ValidationReport:
    """Check every object with every applicable rule.

    ``crds`` lets a caller reuse one :class:`CrdStore` (and its parsed CRDs) across
    runs; by default a new one finds the pinned CRDs for ``layout``. A CRD whose
    bytes do not match its pin raises :class:`inferbook.crds.CrdChecksumMismatch`:
    that is a broken environment, not a finding about the manifests.
    """
    store = crds or CrdStore(layout)
    strict_cache: dict[tuple[str, str, str], dict[str, Any]] = {}
    findings: list[Finding] = []
    for obj in objects:
        kind = str(obj.get("kind", "?"))
        name = str((obj.get("metadata") or {}).get("name", "?"))

        def add(rule: str, status: str, message: str, kind: str = kind, name: str = name) -> None:
            findings.append(Finding(kind, name, rule, status, message))

        add("schema", *_schema(obj, store, kubernetes_version, strict_cache))
        add("labels", *_labels(obj))
        if kind == "Secret":
            add("no-secret-data", *_secret_data(obj))
        pods = list(_pod_specs(obj))
        if pods:
            add("digest-pinned", *_digests(obj, pods))
            add("resources", *_resources(pods))
            add("non-root", *_non_root(pods))
            add("secrets-by-reference", *_secrets(pods))
            if kind in SERVING_KINDS:
                add("probes", *_probes(pods))
            gpu = _gpu_toleration(pods)
            if gpu:
                add("gpu-toleration", *gpu)
            if _asks_for_gpu(pods):
                add("gpu-queue-label", *_queue_label(obj))
    return ValidationReport(tuple(findings), kubernetes_version)


# --------------------------------------------------------------------------- schemas


def _schema(obj: dict[str, Any], store: CrdStore, version: str,
            cache: dict[tuple[str, str, str], dict[str, Any]]) -> tuple[str, str]:
    api_version = str(obj.get("apiVersion", ""))
    kind = str(obj.get("kind", ""))
    group, _, api = api_version.rpartition("/")
    if group and store.source_for(group, kind):
        return _crd_schema(obj, store, group, kind, api, cache)
    try:
        checked = kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        return "fail", f"{_where(err.absolute_path)}: {err.message}"
    except SchemaNotFoundError:
        return "fail", (f"no schema for {kind} ({api_version}): not a built-in kind of Kubernetes {version} and not "
                        f"in manifests/crds.lock.yaml. Fix: pin its CRD there, or correct apiVersion/kind")
    except (VersionNotSupportedError, InvalidSchemaError) as err:
        return "fail", f"kubernetes_validate cannot check it: {err.message}"
    return "ok", f"valid {api_version} {kind} (Kubernetes {checked} schema, strict)"


def _crd_schema(obj: dict[str, Any], store: CrdStore, group: str, kind: str, api: str,
                cache: dict[tuple[str, str, str], dict[str, Any]]) -> tuple[str, str]:
    key = (group, kind, api)
    if key not in cache:
        try:
            schema = store.schema(group, kind, api)
        except CrdVersionError as err:
            return "fail", str(err)
        cache[key] = strict_schema(schema or {})
    validator = jsonschema.Draft202012Validator(cache[key])
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    source = store.source_for(group, kind)
    pin = f"{source.repo}@{source.tag}" if source else "pinned CRD"
    if errors:
        shown = "; ".join(f"{_where(e.absolute_path)}: {e.message}" for e in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        return "fail", f"{shown}{more} (CRD schema of {pin})"
    return "ok", f"valid against the CRD of {pin} (closed schema; CEL rules not evaluated)"


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a CRD schema in which unknown fields are errors.

    ``additionalProperties: false`` goes on every object schema that lists
    ``properties`` and does not preserve unknown fields. Branches of
    anyOf/allOf/oneOf/not are left alone: in a structural schema they restate
    part of the parent's fields, and closing them would reject the rest.
    ``nullable`` becomes a null-able JSON Schema type.
    """
    closed = copy.deepcopy(schema)
    _close(closed)
    return closed


def _close(node: Any) -> None:
    if not isinstance(node, dict):
        return
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    for child in (node.get("properties") or {}).values():
        _close(child)
    if isinstance(node.get("items"), dict):
        _close(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        _close(node["additionalProperties"])


def _where(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(object)"


# --------------------------------------------------------------------------- policy rules


def _labels(obj: dict[str, Any]) -> tuple[str, str]:
    problems = _label_problems((obj.get("metadata") or {}).get("labels") or {}, "metadata.labels")
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict):
        problems += _label_problems((template.get("metadata") or {}).get("labels") or {}, "pod template labels")
    if problems:
        return "fail", ("; ".join(problems) + ". Fix: add the labels in the base's kustomization (labels:) "
                        "or the resource")
    return "ok", "the four app.kubernetes.io labels are present"


def _label_problems(labels: dict[str, str], where: str) -> list[str]:
    problems = []
    for key, expected in REQUIRED_LABELS.items():
        value = labels.get(key)
        if not value:
            problems.append(f"{where} lack {key}")
        elif expected is not None and value != expected:
            problems.append(f"{where} have {key}={value}, expected {expected}")
    return problems


def _pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of a workload; KServe components are pod specs with extra fields."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        yield "spec", spec
    elif kind == "CronJob":
        yield ("spec.jobTemplate.spec.template.spec",
               spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {}))
    elif kind == "InferenceService":
        for component in ("predictor", "transformer", "explainer"):
            if isinstance(spec.get(component), dict):
                yield f"spec.{component}", spec[component]
    elif isinstance(spec.get("template"), dict) and isinstance(spec["template"].get("spec"), dict):
        yield "spec.template.spec", spec["template"]["spec"]


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers"):
        for container in pod.get(key) or []:
            if isinstance(container, dict):
                yield container
    model = pod.get("model")  # a KServe predictor's model spec is a container too
    if isinstance(model, dict) and model.get("image"):
        yield {"name": "model", **model}


def _digests(obj: dict[str, Any], pods: list[tuple[str, dict[str, Any]]]) -> tuple[str, str]:
    loose: list[str] = []
    images = 0
    for _, pod in pods:
        for c in _containers(pod):
            if "image" in c:
                images += 1
                if not DIGEST.search(str(c["image"])):
                    loose.append(f"image {c['image']} (container {c.get('name')})")
        for uri, where in _model_uris(pod):
            if uri.startswith("oci://") and not DIGEST.search(uri):
                loose.append(f"modelcar {uri} ({where}): a placeholder until you push your own and pin "
                             f"it as oci://REPOSITORY@sha256:DIGEST (ADR-0016)")
    if loose:
        return "warn", "not digest-pinned: " + "; ".join(loose)
    return "ok", f"{images} image(s) pinned by @sha256 digest"


def _model_uris(pod: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for c in _containers(pod):
        for env in c.get("env") or []:
            if env.get("name") == "STORAGE_URI" and isinstance(env.get("value"), str):
                yield env["value"], f"STORAGE_URI of {c.get('name')}"
        if isinstance(c.get("storageUri"), str):
            yield c["storageUri"], f"storageUri of {c.get('name')}"
    for entry in pod.get("storageUris") or []:
        if isinstance(entry, dict) and isinstance(entry.get("uri"), str):
            yield entry["uri"], "storageUris"


def _per_container(pods: list[tuple[str, dict[str, Any]]],
                   problems_of: Callable[[dict[str, Any], dict[str, Any]], list[str]], fix: str,
                   ok: str) -> tuple[str, str]:
    """A rule over every container: ``problems_of(pod, container)`` lists what is wrong; one verdict for all."""
    problems = [p for _, pod in pods for c in _containers(pod) for p in problems_of(pod, c)]
    if problems:
        return "fail", "; ".join(problems) + f". Fix: {fix}"
    return "ok", ok


def _missing_resources(pod: dict[str, Any], c: dict[str, Any]) -> list[str]:
    res = c.get("resources") or {}
    missing = []
    for section in ("requests", "limits"):
        absent = [r for r in ("cpu", "memory") if r not in (res.get(section) or {})]
        if absent:
            missing.append(f"{c.get('name')} has no {section} for {', '.join(absent)}")
    return missing


def _root_risks(pod: dict[str, Any], c: dict[str, Any]) -> list[str]:
    pod_sc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    problems = []
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        problems.append(f"{c.get('name')} does not set runAsNonRoot: true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        problems.append(f"{c.get('name')} runs as uid 0")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{c.get('name')} does not set allowPrivilegeEscalation: false")
    return problems


def _inline_secrets(pod: dict[str, Any], c: dict[str, Any]) -> list[str]:
    return [f"{c.get('name')} sets {env['name']} inline" for env in c.get("env") or []
            if SECRET_NAME.search(str(env.get("name", ""))) and not SECRET_FILE_NAME.search(str(env.get("name", "")))
            and "value" in env]


def _resources(pods: list[tuple[str, dict[str, Any]]]) -> tuple[str, str]:
    return _per_container(pods, _missing_resources, "set resources.requests and resources.limits (cpu, memory)",
                          "every container requests and limits cpu and memory")


def _non_root(pods: list[tuple[str, dict[str, Any]]]) -> tuple[str, str]:
    return _per_container(pods, _root_risks, "set them in the pod and container securityContext",
                          "all containers run non-root without privilege escalation")


def _secrets(pods: list[tuple[str, dict[str, Any]]]) -> tuple[str, str]:
    return _per_container(pods, _inline_secrets, "use valueFrom.secretKeyRef (secrets never live in git, ADR-0011)",
                          "credentials only through secretKeyRef")


def _unprobed(pod: dict[str, Any], c: dict[str, Any]) -> list[str]:
    if c in (pod.get("initContainers") or []) or not c.get("ports") or c.get("readinessProbe"):
        return []
    return [f"{c.get('name')} serves port(s) {', '.join(str(p.get('containerPort')) for p in c['ports'])} "
            f"without a readinessProbe"]


def _probes(pods: list[tuple[str, dict[str, Any]]]) -> tuple[str, str]:
    """A server without a readiness probe takes traffic (and counts as rolled out) before it can answer."""
    return _per_container(pods, _unprobed, "add a readinessProbe (and a startupProbe for a slow model load, "
                                           "ADR-0025)", "every container that serves a port has a readiness probe")


def _secret_data(obj: dict[str, Any]) -> tuple[str, str]:
    """A Secret rendered with values would put them in git and in every artefact of the run (ADR-0011)."""
    keys = sorted({*(obj.get("data") or {}), *(obj.get("stringData") or {})})
    if keys:
        return "fail", (f"carries data for {', '.join(keys)}: rendered manifests hold no secret values. Fix: "
                        f"an ExternalSecret from the secret store (ADR-0011), or a Secret created at apply time")
    return "ok", "no data: the values come from the secret store"


def _asks_for_gpu(pods: list[tuple[str, dict[str, Any]]]) -> bool:
    """Whether a container of the workload requests or limits ``nvidia.com/gpu``."""
    for _, pod in pods:
        for c in _containers(pod):
            res = c.get("resources") or {}
            if any(str((res.get(s) or {}).get(GPU_RESOURCE, "0")) not in ("0", "") for s in ("limits", "requests")):
                return True
    return False


def _queue_label(obj: dict[str, Any]) -> tuple[str, str]:
    """A GPU workload names a Kueue LocalQueue (ADR-0002): without the label Kueue, run with
    ``manageJobsWithoutQueueName: false``, never sees it, and its pods take GPUs past the quota."""
    kind = obj.get("kind")
    problems = []
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
    if not value:
        problems.append(f"metadata.labels lack {QUEUE_LABEL}")
    if kind in POD_QUEUED_KINDS:
        template = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        if template.get(QUEUE_LABEL) != value or not template.get(QUEUE_LABEL):
            problems.append(f"the pod template's labels lack {QUEUE_LABEL}"
                            + (f" (or differ from {value!r})" if value else ""))
    if problems:
        return "fail", ("asks for " + GPU_RESOURCE + " but " + "; ".join(problems) + ", so Kueue never queues it and "
                        "it takes GPUs past the quota (ADR-0002, ADR-0029 SR2). Fix: select the layer's kueue "
                        f"component (a GPU profile renders the platform's Kueue), or add {QUEUE_LABEL}: gpu")
    return "ok", f"asks for {GPU_RESOURCE} and queues in LocalQueue {value}"


def _gpu_toleration(pods: list[tuple[str, dict[str, Any]]]) -> tuple[str, str] | None:
    """Applies only to pods that ask for a GPU: GPU nodes carry the nvidia.com/gpu NoSchedule taint."""
    asking = _asks_for_gpu(pods)
    tolerated = False
    for _, pod in pods:
        for tol in pod.get("tolerations") or []:
            if tol.get("key") == GPU_RESOURCE and tol.get("effect") in (None, "", "NoSchedule") \
                    and tol.get("operator", "Equal") in ("Exists", "Equal"):
                tolerated = True
    if not asking:
        return None
    if tolerated:
        return "ok", f"asks for {GPU_RESOURCE} and tolerates the GPU nodes' taint"
    return "fail", (f"asks for {GPU_RESOURCE} but has no toleration for it, so it never schedules on a tainted GPU "
                    f"node. Fix: add tolerations: [{{key: {GPU_RESOURCE}, operator: Exists, effect: NoSchedule}}]")
