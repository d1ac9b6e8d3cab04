"""Waits on a cluster: rollouts, conditions, Jobs, a Job run anew, and a Secret's value; each prints progress and
fails early with a diagnosis.
"""

from __future__ import annotations

import base64
import time
from functools import partial
from typing import Any, Callable, Iterable

from ..say import Say
from . import timing
from .apply import apply
from .client import CRD_PROVIDERS, AppliedObject, _Cluster, _condition_text, _conditions, _Ref, _shorten
from .errors import (
    ConditionFailed,
    ConditionTimeout,
    JobFailed,
    KubeError,
    RolloutFailed,
    RolloutTimeout,
    SecretUnavailable,
)
from .timing import Clock


def _rollout_state(dep: dict[str, Any]) -> tuple[bool, str, str | None]:
    """(rolled out?, where the rollout is, why it can never finish or None), after kubectl's rollout status."""
    spec, status, meta = dep.get("spec") or {}, dep.get("status") or {}, dep.get("metadata") or {}
    desired = spec.get("replicas", 1)
    if desired == 0:
        return True, "scaled to zero: nothing to roll out", None
    if spec.get("paused"):
        return False, "paused", "the Deployment is paused (spec.paused); resume it with `kubectl rollout resume`"
    if status.get("observedGeneration", 0) < meta.get("generation", 1):
        return False, "waiting for the Deployment controller to observe the new spec", None
    progressing = _conditions(dep).get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return False, "past its progress deadline", (
            f"it exceeded its progress deadline ({progressing.get('message', '')})")
    updated, available = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    if updated < desired:
        return False, f"{updated} of {desired} new replicas updated", None
    if total > updated:
        return False, f"{total - updated} old replica(s) pending termination", None
    if available < desired:
        return False, f"{available} of {desired} updated replicas available", None
    return True, f"{available} of {desired} replicas available", None


def _diagnosis(cluster: _Cluster, dep: dict[str, Any], namespace: str, name: str) -> str:
    """Conditions, replica counts and the kubectl commands that show why a Deployment is stuck."""
    status = dep.get("status") or {}
    conditions = _condition_text(_conditions(dep)) or "none reported (is the kube-controller-manager running?)"
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    pods = cluster.kubectl(namespace, "describe pods", f"-l {selector}") if selector else \
        cluster.kubectl(namespace, "get pods")
    return (f"\n  conditions: {conditions}"
            f"\n  replicas: desired {(dep.get('spec') or {}).get('replicas', 1)}, updated "
            f"{status.get('updatedReplicas', 0)}, ready {status.get('readyReplicas', 0)}, available "
            f"{status.get('availableReplicas', 0)}"
            f"\n  look at:\n    {cluster.kubectl(namespace, 'describe', f'deploy/{name}')}"
            f"\n    {pods}   (pod events: Pending for lack of a GPU, image pulls, failing probes)"
            f"\n    {cluster.kubectl(namespace, 'get events --sort-by=.lastTimestamp')}")


def wait_rollout(context: str, namespace: str, name: str, *, timeout: float, kubeconfig: str | None = None,
                 say: Say = print, clock: Clock = time.monotonic) -> None:
    """Wait until Deployment ``name`` has rolled out: the controller saw its latest spec and every
    desired replica is updated and available, with no old one left.

    A Deployment scaled to 0 (the cost tier) is rolled out at once. Progress lines carry the
    elapsed time, on every change and at least every :data:`timing.PROGRESS_EVERY` seconds. A paused
    Deployment, or one past its progress deadline, fails at once with :class:`RolloutFailed`;
    at ``timeout`` seconds :class:`RolloutTimeout` names the Deployment, its conditions and the
    kubectl commands that show why. ``clock`` is where the wait reads the time (tests pass a virtual one).
    """
    ref = _Ref("Deployment", "apps/v1", name, namespace, "deployments")
    with _Cluster(context, kubeconfig) as cluster:
        apps = cluster.apps
        _wait_for(cluster, ref, partial(apps.read_namespaced_deployment, name, namespace, _preload_content=False),
                  partial(apps.list_namespaced_deployment, namespace), _rollout_state,
                  lambda dep: _diagnosis(cluster, dep, namespace, name), ("roll out", "rolled out"), timeout, say,
                  failed=RolloutFailed, timed_out=RolloutTimeout, label=f"deploy/{name} in {namespace}", clock=clock)


# --------------------------------------------------------------------------- conditions, Jobs, Secrets

#: (done?, where the object is, why it can never get there or None): what a wait learns from one state.
State = tuple[bool, str, str | None]


def _stale(obj: dict[str, Any], condition: dict[str, Any] | None = None) -> int | None:
    """The generation the status (or ``condition``) describes when it is older than the spec's, else None.

    Why: right after an apply the controller has not yet looked at the new spec, and a ``Ready=True``
    written for the previous spec would end the wait too early.
    """
    generation = (obj.get("metadata") or {}).get("generation")
    observed = [v for v in ((obj.get("status") or {}).get("observedGeneration"),
                            (condition or {}).get("observedGeneration")) if isinstance(v, int) and v > 0]
    older = [v for v in observed if isinstance(generation, int) and v < generation]
    return min(older) if older else None


def _wait_for(cluster: _Cluster, ref: _Ref, read: Callable[[], Any], list_objects: Callable[..., Any],
              state: Callable[[dict[str, Any]], State],
              diagnosis: Callable[[dict[str, Any]], str], goal: tuple[str, str], timeout: float, say: Say,
              failed: type[KubeError] = ConditionFailed, timed_out: type[KubeError] = ConditionTimeout,
              label: str | None = None, clock: Clock = time.monotonic) -> dict[str, Any]:
    """Watch ``ref`` until ``state`` says done, fails for good, or ``timeout`` passes; returns the last object.

    ``read`` gets the object (raw), ``list_objects`` is the list call that :meth:`_Cluster.watch_until` watches.

    The one wait loop of every kind (rollouts, conditions, Jobs): ``goal`` is the awaited state as a verb
    phrase and its past ("become Ready", "became Ready"); progress lines name the object as ``label``
    (default: the ref) and carry the elapsed time, on every change and at least every
    :data:`timing.PROGRESS_EVERY` seconds; ``failed`` and ``timed_out`` are the errors raised, and they end with
    ``diagnosis`` (conditions, kubectl commands). Every reading of the time comes from ``clock``.
    """
    label = label or str(ref)
    start = clock()
    obj = cluster.call("get", ref, read, missing_ok=True)
    if obj is None:
        raise failed(f"{ref} does not exist in the cluster of context '{cluster.context}': apply it first "
                     f"(`{cluster.kubectl(ref.namespace, 'get', ref.resource)}` lists what is there)")
    latest: dict[str, Any] = {"obj": obj}

    def observe(current: dict | None) -> bool:
        if current is None:
            raise failed(f"{ref} was deleted while inferbook waited for it to {goal[0]}")
        latest["obj"] = current
        done, text, why = state(current)
        if why:
            raise failed(f"{ref} cannot {goal[0]}: {why}" + diagnosis(current))
        if text != latest.get("text") and not done and "text" in latest:
            say(f"  {clock() - start:4.0f} s: {text}")
        latest["text"] = text
        return done

    if observe(obj):
        say(f"{label}: {latest['text']}")
        return obj
    say(f"waiting up to {timeout:g} s for {label} to {goal[0]}: {latest['text']}")

    def heartbeat() -> None:
        say(f"  {clock() - start:4.0f} s: {latest['text']}")

    if cluster.watch_until(ref, list_objects, observe, start + timeout, heartbeat, clock):
        say(f"{label} {goal[1]} in {clock() - start:.1f} s: {latest['text']}")
        return latest["obj"]
    raise timed_out(f"{ref} did not {goal[0]} within {timeout:g} s (context '{cluster.context}'): "
                           f"{latest['text']}" + diagnosis(latest["obj"]))


def _condition_state(obj: dict[str, Any], condition: str, pending: Callable[[dict[str, Any]], str | None] | None,
                     progress: Callable[[dict[str, Any]], str] | None) -> State:
    """Where an object is on its way to ``condition``=True (and ``pending`` having nothing left to wait for)."""
    found = _conditions(obj).get(condition)
    shown = progress(obj) if progress else ""

    def text(head: str) -> str:
        return f"{head}; {shown}" if shown else head

    stale = _stale(obj, found)
    if stale is not None:
        return False, text(f"the status describes generation {stale}: waiting for the controller to observe the "
                           f"new spec (generation {obj['metadata']['generation']})"), None
    if found is None:
        return False, text(f"no {condition} condition reported yet"), None
    if found.get("status") != "True":
        return False, text(f"{condition}={found.get('status')} ({found.get('reason')}: "
                           f"{_shorten(found.get('message'))})"), None
    left = pending(obj) if pending else None
    if left:
        return False, text(f"{condition}=True but {left}"), None
    return True, text(f"{condition}=True"), None


def _condition_diagnosis(cluster: _Cluster, ref: _Ref, obj: dict[str, Any], hints: Iterable[str]) -> str:
    """Conditions of a custom resource and the kubectl commands that show why it is not there yet."""
    conditions = _condition_text(_conditions(obj))
    if not conditions:
        owner = CRD_PROVIDERS.get(ref.group, f"the controller of {ref.group or ref.kind}")
        conditions = f"none reported (is {owner} running? its controller writes this status)"
    lines = [cluster.kubectl(ref.namespace, "describe", f"{ref.resource}/{ref.name}"), *hints,
             cluster.kubectl(ref.namespace, "get events", f"--field-selector involvedObject.name={ref.name}",
                             "--sort-by=.lastTimestamp")]
    return f"\n  conditions: {conditions}\n  look at:" + "".join(f"\n    {line}" for line in lines)


def wait_condition(context: str, namespace: str | None, api_version: str, kind: str, name: str, *, timeout: float,
                   condition: str = "Ready", pending: Callable[[dict[str, Any]], str | None] | None = None,
                   progress: Callable[[dict[str, Any]], str] | None = None, hints: Iterable[str] = (),
                   kubeconfig: str | None = None, say: Say = print, clock: Clock = time.monotonic) -> dict[str, Any]:
    """Wait until object ``name`` reports condition ``condition`` with status True; returns the object.

    Operators report readiness this way (CloudNativePG, External Secrets, KServe, cert-manager): a
    ``status.conditions`` entry of that type. A status whose ``observedGeneration`` (top level, or the
    condition's own) is older than the object's generation is not trusted: it describes the spec before
    the last apply. ``pending(obj)`` returns what is still missing although the condition holds (None
    when nothing), ``progress(obj)`` a short state for the progress lines, and ``hints`` are extra
    kubectl commands for the timeout message. The kind is looked up in discovery, so a kind that is not
    served is :class:`MissingCrd`; at ``timeout`` seconds :class:`ConditionTimeout` names the object, its
    conditions (or says that no controller wrote any) and what to look at. ``clock`` is where the wait
    reads the time (tests pass a virtual one).
    """
    with _Cluster(context, kubeconfig) as cluster:
        resource = cluster.resource(_Ref(kind, api_version, name, namespace))
        scoped = namespace if resource.namespaced else None
        ref = _Ref(kind, api_version, name, scoped, resource.name)
        return _wait_for(cluster, ref, partial(resource.get, name=name, namespace=scoped, serialize=False),
                         partial(resource.get, namespace=scoped, serialize=False),
                         lambda obj: _condition_state(obj, condition, pending, progress),
                         lambda obj: _condition_diagnosis(cluster, ref, obj, hints),
                         (f"become {condition}", f"became {condition}"), timeout, say, clock=clock)



def wait_status(context: str, namespace: str | None, api_version: str, kind: str, name: str, *, timeout: float,
                state: Callable[[dict[str, Any]], tuple[bool, str]],
                goal: tuple[str, str] = ("become ready", "became ready"), hints: Iterable[str] = (),
                kubeconfig: str | None = None, say: Say = print, clock: Clock = time.monotonic) -> dict[str, Any]:
    """Wait until ``state(obj)`` says done, for a kind whose readiness is not a condition; returns the object.

    Argo CD's Application reports ``status.health.status`` and ``status.sync.status`` rather than a Ready
    condition: ``state`` reads what the kind reports and returns (done, a short text for the progress lines).
    The same watch as :func:`wait_condition` (one look, then one watch; no polling); ``goal`` is the awaited
    state as a verb phrase and its past; at ``timeout`` :class:`ConditionTimeout` names the object, its
    conditions and what to look at.
    """
    with _Cluster(context, kubeconfig) as cluster:
        resource = cluster.resource(_Ref(kind, api_version, name, namespace))
        scoped = namespace if resource.namespaced else None
        ref = _Ref(kind, api_version, name, scoped, resource.name)
        return _wait_for(cluster, ref, partial(resource.get, name=name, namespace=scoped, serialize=False),
                         partial(resource.get, namespace=scoped, serialize=False),
                         lambda obj: (*state(obj), None),
                         lambda obj: _condition_diagnosis(cluster, ref, obj, hints), goal, timeout, say, clock=clock)

def _job_finished(job: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` when the Job will run no more pods, else None."""
    conditions = _conditions(job)
    if any(conditions.get(t, {}).get("status") == "True" for t in ("Failed", "FailureTarget")):
        return "Failed"
    spec, status = job.get("spec") or {}, job.get("status") or {}
    wanted = spec.get("completions")
    if any(conditions.get(t, {}).get("status") == "True" for t in ("Complete", "SuccessCriteriaMet")) or \
            status.get("succeeded", 0) >= (1 if wanted is None else wanted):
        return "Complete"
    return None


def _job_state(job: dict[str, Any]) -> State:
    """Where a Job is: complete, failed for good, suspended, or its pods so far."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    attempts = (f"{status.get('active', 0)} pod(s) running, {status.get('succeeded', 0)} succeeded, "
                f"{status.get('failed', 0)} failed (backoff limit {spec.get('backoffLimit', 6)})")
    finished = _job_finished(job)
    if finished == "Failed":
        conditions = _conditions(job)
        failure = conditions.get("Failed") or conditions.get("FailureTarget") or {}
        return False, attempts, f"it failed ({failure.get('reason')}: {_shorten(failure.get('message'))})"
    if finished == "Complete":
        return True, f"complete, {attempts}", None
    if spec.get("suspend"):
        return False, ("suspended (spec.suspend: true): it starts when a queue admits it (Kueue), or with "
                       "`kubectl patch job NAME --type=merge -p '{\"spec\":{\"suspend\":false}}'`"), None
    if not status:
        return False, "no status yet: waiting for the Job controller to create its pod", None
    return False, attempts, None


def _job_diagnosis(cluster: _Cluster, job: dict[str, Any], namespace: str, name: str) -> str:
    """The Job's conditions and where its pods' output is."""
    conditions = _condition_text(_conditions(job)) or "none reported yet"
    return (f"\n  conditions: {conditions}"
            f"\n  read its output: `{cluster.kubectl(namespace, 'logs', f'job/{name}', '--all-containers')}` "
            f"(one pod per attempt: `{cluster.kubectl(namespace, 'get pods', f'-l job-name={name}')}`)"
            f"\n  look at: {cluster.kubectl(namespace, 'describe', f'job/{name}')}   (pods Pending, a missing "
            "Secret, image pulls)")


def wait_job(context: str, namespace: str, name: str, *, timeout: float, kubeconfig: str | None = None,
             say: Say = print, clock: Clock = time.monotonic) -> dict[str, Any]:
    """Wait until Job ``name`` has completed (condition Complete, or enough pods succeeded); returns it.

    A Job that failed for good (condition Failed, or FailureTarget while its last pods stop) raises
    :class:`JobFailed` at once, with the command that shows its pods' output: the reason of a failed
    batch step is in its log, not in the Job's status. A suspended Job is waited for (a queue may admit
    it); at ``timeout`` seconds :class:`ConditionTimeout` says how many attempts ran and what to look at.
    ``clock`` is where the wait reads the time (tests pass a virtual one).
    """
    ref = _Ref("Job", "batch/v1", name, namespace, "jobs")
    with _Cluster(context, kubeconfig) as cluster:
        batch = cluster.batch
        return _wait_for(cluster, ref, partial(batch.read_namespaced_job, name, namespace, _preload_content=False),
                         partial(batch.list_namespaced_job, namespace), _job_state,
                         lambda job: _job_diagnosis(cluster, job, namespace, name), ("complete", "completed"),
                         timeout, say, failed=JobFailed, clock=clock)


def _wait_gone(cluster: _Cluster, ref: _Ref, deadline: float, say: Say, clock: Clock = time.monotonic) -> None:
    """Return once Job ``ref`` no longer exists (a finalizer or a foreground deletion may keep it a while)."""
    while cluster.call("get", ref, cluster.batch.read_namespaced_job, ref.name, ref.namespace, missing_ok=True,
                       _preload_content=False) is not None:
        if clock() >= deadline:
            raise ConditionTimeout(f"{ref} was deleted but is still there (finalizers?); "
                                   f"`{cluster.kubectl(ref.namespace, 'get', ref.resource, ref.name, '-o yaml')}` "
                                   "shows what holds it")
        # a bounded watch: if the object vanished between the GET and the watch, the next GET sees it
        cluster.watch_until(ref, partial(cluster.batch.list_namespaced_job, ref.namespace), lambda obj: obj is None,
                            min(deadline, clock() + timing.PROGRESS_EVERY),
                            lambda: say(f"  waiting for {ref} to be gone"), clock)


def run_job(job: dict[str, Any], context: str, *, namespace: str, kubeconfig: str | None = None, say: Say = print,
            timeout: float = 60.0, clock: Clock = time.monotonic) -> AppliedObject:
    """Apply a Job so that it runs for this apply: a finished Job of the same name is deleted first.

    Why: a Job runs once. Re-applying an unchanged finished Job changes nothing (the old result would be
    awaited again, a failure included), and applying a changed one (a new image) is rejected, as a Job's
    pod template is immutable. So, like Argo CD's ``BeforeHookCreation`` hook policy, a finished Job
    (complete or failed) is deleted, its pods with it (in the background), and the Job is created anew;
    a Job still running is applied onto (a no-op when unchanged). ``timeout`` bounds the wait for the
    old Job to be gone, read on ``clock``.
    """
    name = job["metadata"]["name"]
    ref = _Ref("Job", "batch/v1", name, namespace, "jobs")
    with _Cluster(context, kubeconfig) as cluster:
        old = cluster.call("get", ref, cluster.batch.read_namespaced_job, name, namespace, missing_ok=True,
                           _preload_content=False)
        finished = _job_finished(old) if old is not None else None
        if finished:
            say(f"{ref}: the previous run is {finished.lower()}; deleting it so that the Job runs again")
            cluster.call("delete", ref, cluster.batch.delete_namespaced_job, name, namespace, missing_ok=True,
                         propagation_policy="Background", _preload_content=False)
            _wait_gone(cluster, ref, clock() + timeout, say, clock)
    return apply([job], context, kubeconfig=kubeconfig, namespace=namespace, say=say)[0]


def secret_value(context: str, namespace: str, name: str, key: str, *, kubeconfig: str | None = None,
                 made_by: str = "") -> str:
    """The decoded value of ``key`` in Secret ``name``: pass it straight to where it is used, never print it.

    ``made_by`` says what creates the Secret (an ExternalSecret, an operator), for the error when it
    is absent. Messages name the Secret and its keys, never a value.
    """
    ref = _Ref("Secret", "v1", name, namespace, "secrets")
    with _Cluster(context, kubeconfig) as cluster:
        secret = cluster.call("get", ref, cluster.core.read_namespaced_secret, name, namespace, missing_ok=True,
                              _preload_content=False)
        look = cluster.kubectl(namespace, "get secret", name)
    if secret is None:
        raise SecretUnavailable(f"Secret {namespace}/{name} does not exist in the cluster of context '{context}'"
                                + (f": {made_by}" if made_by else "") + f"; `{look}` checks it")
    data = secret.get("data") or {}
    if key not in data:
        raise SecretUnavailable(f"Secret {namespace}/{name} has no key '{key}' (its keys: "
                                f"{', '.join(sorted(data)) or 'none'})" + (f"; {made_by}" if made_by else ""))
    return base64.b64decode(data[key]).decode()
