"""Server-side apply and delete, in the book's order: every kind checked in discovery before the first write,
Namespaces, then CRDs until Established, then the rest (:func:`plan_order`).
"""

from __future__ import annotations

import copy
import time
from functools import partial
from typing import Any, Iterable

from ..say import Say
from . import timing
from .client import AppliedObject, _Cluster, _condition_text, _conditions, _Ref
from .errors import CrdNotEstablished, MalformedObject, MissingCrd

FIELD_MANAGER = "inferbook"


# --------------------------------------------------------------------------- apply and delete


def _plan(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deep copies of ``objects`` (``List`` kinds flattened), checked, Namespaces then CRDs then the rest.

    The sort is stable: within a rank the caller's order (kustomize's) is kept.
    """
    flat: list[dict[str, Any]] = []
    for index, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise MalformedObject(f"object #{index + 1} is a {type(obj).__name__}, not a mapping")
        if obj.get("kind") == "List" and isinstance(obj.get("items"), list):
            flat.extend(copy.deepcopy(item) for item in obj["items"])
        else:
            flat.append(copy.deepcopy(obj))
    for index, obj in enumerate(flat):
        meta = obj.get("metadata")
        missing = [f for f, ok in (("apiVersion", obj.get("apiVersion")), ("kind", obj.get("kind")),
                                   ("metadata.name", isinstance(meta, dict) and meta.get("name"))) if not ok]
        if missing:
            raise MalformedObject(f"object #{index + 1} ({obj.get('kind', 'no kind')}) has no "
                                  f"{', '.join(missing)}: every object needs apiVersion, kind and metadata.name")
    return sorted(flat, key=_rank)


def plan_order(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order :func:`apply` sends ``objects`` in (Namespaces, CRDs, the rest), checked; no cluster needed."""
    return _plan(objects)


def _rank(obj: dict[str, Any]) -> int:
    """0 for Namespaces, 1 for CRDs, 2 for everything else: what must exist before what lives in it."""
    if obj["kind"] == "Namespace" and obj["apiVersion"] == "v1":
        return 0
    if obj["kind"] == "CustomResourceDefinition" and obj["apiVersion"].startswith("apiextensions.k8s.io/"):
        return 1
    return 2


def _scope(obj: dict[str, Any], resource: Any, namespace: str | None) -> str | None:
    """Put ``obj`` in its namespace: the target one when it carries none; cluster-scoped objects get none."""
    meta = obj["metadata"]
    if not resource.namespaced:
        meta.pop("namespace", None)
        return None
    meta.setdefault("namespace", namespace)
    if not meta["namespace"]:
        raise MalformedObject(f"{obj['kind']} {meta['name']} is namespaced but has no metadata.namespace and no "
                              "namespace was given: pass namespace= (the profile's target.namespace)")
    return meta["namespace"]


def _ref(obj: dict[str, Any], namespace: str | None = None, resource: Any = None) -> _Ref:
    return _Ref(obj["kind"], obj["apiVersion"], obj["metadata"]["name"],
                namespace if namespace is not None else obj["metadata"].get("namespace"),
                getattr(resource, "name", "") or "")


def apply(objects: list[dict[str, Any]], context: str, *, kubeconfig: str | None = None,
          field_manager: str = FIELD_MANAGER, namespace: str | None = None, say: Say = print,
          crd_timeout: float = timing.CRD_ESTABLISH_TIMEOUT) -> list[AppliedObject]:
    """Server-side apply ``objects`` to the cluster of ``context``; one result per object, in apply order.

    Namespaces go first and CRDs next (both must exist before what lives in them); the CRDs are
    waited for until Established, so the custom resources after them find their type. Every
    kind not provided by a CRD of this batch is looked up in discovery before the first write,
    so a missing CRD fails the call without a half-applied layer. Namespaced objects without a
    namespace get ``namespace``. Applying the same objects twice gives ``unchanged``; nothing
    printed includes an object's content (Secrets pass through here).
    """
    planned = _plan(objects)
    with _Cluster(context, kubeconfig) as cluster:
        cluster.probe()
        from_crds = {((crd.get("spec") or {}).get("group"), ((crd.get("spec") or {}).get("names") or {}).get("kind"))
                     for crd in planned if _rank(crd) == 1}
        for obj in planned:
            if (obj["apiVersion"].rpartition("/")[0], obj["kind"]) not in from_crds:
                cluster.resource(_ref(obj))

        results: list[AppliedObject] = []
        crds_to_wait: list[str] = []
        for obj in planned:
            if crds_to_wait and obj["kind"] != "CustomResourceDefinition":
                _wait_crds(cluster, crds_to_wait, crd_timeout, say)
                crds_to_wait = []
            result = _apply_one(cluster, obj, namespace, field_manager)
            say(str(result))
            results.append(result)
            if obj["kind"] == "CustomResourceDefinition":
                crds_to_wait.append(obj["metadata"]["name"])
        if crds_to_wait:
            _wait_crds(cluster, crds_to_wait, crd_timeout, say)
        return results


def _apply_one(cluster: _Cluster, obj: dict[str, Any], namespace: str | None, field_manager: str) -> AppliedObject:
    """Server-side apply one object; ``created`` when it did not exist, ``unchanged`` when its resourceVersion
    stayed the same (the server made no change), else ``configured``."""
    resource = cluster.resource(_ref(obj))
    ns = _scope(obj, resource, namespace)
    ref = _ref(obj, ns, resource)
    # Metadata only: the state before, without reading a Secret's data or a 2 MB CRD schema.
    before = cluster.call("get", ref, resource.get, name=ref.name, namespace=ns, serialize=False, missing_ok=True,
                          header_params={"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,"
                                                   "application/json"})
    after = cluster.call("patch", ref, resource.server_side_apply, body=obj, name=ref.name, namespace=ns,
                         field_manager=field_manager, force_conflicts=True, serialize=False) or {}
    after_meta = after.get("metadata", {})
    if before is None:
        action = "created"
    elif before.get("metadata", {}).get("resourceVersion") == after_meta.get("resourceVersion"):
        action = "unchanged"
    else:
        action = "configured"
    return AppliedObject(ref.kind, ref.api_version, ns, ref.name, action, after_meta.get("generation"))


def _wait_crds(cluster: _Cluster, names: list[str], timeout: float, say: Say) -> None:
    """Wait until each CRD is Established: until then its custom resources are 404 on the server."""
    crds = cluster.resource(_Ref("CustomResourceDefinition", "apiextensions.k8s.io/v1"))
    start = time.monotonic()
    for name in names:
        seen: dict[str, dict[str, Any]] = {}

        def established(crd: dict | None, name: str = name, seen: dict[str, dict[str, Any]] = seen) -> bool:
            if crd is None:
                raise CrdNotEstablished(f"CRD {name} was deleted while inferbook waited for it to be Established")
            seen.update(_conditions(crd))
            accepted = seen.get("NamesAccepted", {})
            if accepted.get("status") == "False":
                raise CrdNotEstablished(f"CRD {name} was not accepted: {accepted.get('reason')}: "
                                        f"{accepted.get('message')} (another CRD already uses its names?)")
            return seen.get("Established", {}).get("status") == "True"

        if not cluster.watch_until(_Ref(crds.kind, crds.group_version, name, None, crds.name),
                                   partial(crds.get, serialize=False), established, start + timeout,
                                   lambda name=name: say(f"  {time.monotonic() - start:4.0f} s: waiting for CRD "
                                                         f"{name} to be Established")):
            raise CrdNotEstablished(
                f"CRD {name} was applied but not Established within {timeout:g} s (conditions: "
                f"{_condition_text(seen) or 'none'}); `{cluster.kubectl(None, 'describe crd', name)}` shows why")


def delete(objects: list[dict[str, Any]], context: str, *, kubeconfig: str | None = None,
           namespace: str | None = None, delete_crds: bool = False, say: Say = print) -> list[AppliedObject]:
    """Delete ``objects`` in the reverse of apply order; one that is already gone counts as ``absent``.

    CRDs are ``kept`` unless ``delete_crds``: deleting a CRD deletes every object of its kind in
    every namespace, including other teams' ServiceMonitors. Deletion is asynchronous on a real
    cluster (pods terminate, a Namespace goes through Terminating): ``deleted`` means the API
    server accepted the deletion. Dependents go with ``propagationPolicy=Background``.
    """
    planned = list(reversed(_plan(objects)))
    with _Cluster(context, kubeconfig) as cluster:
        cluster.probe()
        results: list[AppliedObject] = []
        for obj in planned:
            ref = _ref(obj)
            if obj["kind"] == "CustomResourceDefinition" and not delete_crds:
                action, ns = "kept", None
            else:
                try:
                    resource = cluster.resource(ref)
                except MissingCrd:  # the kind is not served, so no object of it can exist
                    action, ns = "absent", obj["metadata"].get("namespace") or namespace
                else:
                    ns = _scope(obj, resource, namespace)
                    ref = _ref(obj, ns, resource)
                    gone = cluster.call("delete", ref, resource.delete, name=ref.name, namespace=ns,
                                        propagation_policy="Background", serialize=False, missing_ok=True)
                    action = "absent" if gone is None else "deleted"
            result = AppliedObject(ref.kind, ref.api_version, ns, ref.name, action)
            say(str(result))
            results.append(result)
        return results
