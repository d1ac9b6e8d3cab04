"""``kubectl port-forward`` to a Service's ready pod, for the block of a ``with``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..say import Say
from ..waiting import wait_for
from . import timing
from .client import _Cluster, _Ref, _tail
from .errors import PortForwardError

# --------------------------------------------------------------------------- port-forward


def _backend(service: dict[str, Any], pods: list[dict[str, Any]], port: int) -> tuple[str, int]:
    """The pod a forward to ``service:port`` reaches, and its container port: what kubectl picks."""
    meta = service.get("metadata") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    ports = (service.get("spec") or {}).get("ports") or []
    match = next((p for p in ports if p.get("port") == port), None)
    if match is None:
        raise PortForwardError(f"service {where} has no port {port} (it has: "
                               f"{', '.join(str(p.get('port')) for p in ports) or 'none'})")
    target = match.get("targetPort", port)

    def ready(pod: dict[str, Any]) -> bool:
        status = pod.get("status") or {}
        return (status.get("phase") == "Running" and not (pod.get("metadata") or {}).get("deletionTimestamp")
                and any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []))

    candidates = sorted((p for p in pods if ready(p)), key=lambda p: p["metadata"]["name"])
    if not candidates:
        selector = _selector(service)
        raise PortForwardError(f"no ready pod behind service {where} (selector {selector or 'none'}): wait for "
                               f"the rollout first, and look at `kubectl -n {meta.get('namespace')} get pods -l "
                               f"{selector}`")
    pod = candidates[0]
    if isinstance(target, str):  # a named port: find it in the pod's containers
        named = [p.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or []
                 for p in c.get("ports") or [] if p.get("name") == target]
        if not named:
            raise PortForwardError(f"service {where} targets port '{target}', which no container of pod "
                                   f"{pod['metadata']['name']} declares")
        target = named[0]
    return pod["metadata"]["name"], int(target)


def _selector(service: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(((service.get("spec") or {}).get("selector") or {}).items()))


@contextmanager
def port_forward(context: str, namespace: str, service: str, port: int, *, kubeconfig: str | None = None,
                 say: Say = print) -> Iterator[str]:
    """Forward a local port to ``service:port``; yields ``http://127.0.0.1:PORT`` while the block runs.

    Like ``kubectl port-forward svc/...``, one ready pod behind the Service is chosen (here, so that
    its absence is a clear :class:`PortForwardError`), then ``kubectl port-forward pod/...`` runs for
    the block and is stopped at its end. For notebooks that reach the stack from outside the cluster
    when there is no gateway address.

    Exercised only against a real cluster: the test double speaks no port-forward streams, so only
    the choice of pod and port (and its errors) is tested.
    """
    ref = _Ref("Service", "v1", service, namespace, "services")
    with _Cluster(context, kubeconfig) as cluster:
        svc = cluster.call("get", ref, cluster.core.read_namespaced_service, service, namespace, missing_ok=True,
                           _preload_content=False)
        if svc is None:
            raise PortForwardError(f"no service {namespace}/{service} in the cluster of context '{context}'")
        selector = _selector(svc)
        if not selector:
            raise PortForwardError(f"service {namespace}/{service} has no selector: there is no pod to forward to")
        pods = cluster.call("list", _Ref("Pod", "v1", "", namespace, "pods"), cluster.core.list_namespaced_pod,
                            namespace, label_selector=selector, _preload_content=False) or {}
    pod, target = _backend(svc, pods.get("items") or [], port)
    from ..manifests import kubectl

    command = [str(kubectl()), *(["--kubeconfig", kubeconfig] if kubeconfig else []), "--context", context,
               "-n", namespace, "port-forward", f"pod/{pod}", f":{target}", "--address", "127.0.0.1"]
    with _forwarding(command, say) as local:
        url = f"http://127.0.0.1:{local}"
        say(f"forwarding {url} -> service {namespace}/{service}:{port} (pod {pod}, port {target})")
        yield url


@contextmanager
def _forwarding(command: list[str], say: Say) -> Iterator[int]:
    """Run a ``kubectl port-forward`` for the block; yields the local port of its ``Forwarding from`` line.

    Its output goes to a file, not a pipe: a pipe that nobody reads would stall it once full of
    ``Handling connection`` lines (the file is read through its own handles, so reads never move
    where kubectl writes). If it never starts, or stops before the block ends (the pod went away),
    the end of that output is the error, or is said.
    """
    with tempfile.TemporaryDirectory(prefix="inferbook-port-forward-") as folder:
        log = Path(folder) / "kubectl.log"
        try:
            with log.open("a") as out:
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise PortForwardError(f"cannot run {command[0]}: {exc}. Fix: reinstall kubectl (make venv)") from None
        try:
            found: list[int] = []

            def failed(why: str) -> str:
                return f"`{shlex.join(command)}` {why}: {_tail(log.read_text()) or 'no output'}"

            def forwarding() -> str | None:
                if match := re.search(r"^Forwarding from 127\.0\.0\.1:(\d+) ", log.read_text(), re.MULTILINE):
                    found.append(int(match[1]))
                    return None
                if proc.poll() is not None:
                    raise PortForwardError(failed(f"failed (exit {proc.returncode})"))
                return "no 'Forwarding from' line yet"

            start = timing.PORT_FORWARD_START_TIMEOUT
            wait_for(forwarding, timeout=start, what="kubectl port-forward to start", say=say, interval=0.1,
                     error=PortForwardError, message=lambda _: failed(f"did not start forwarding within {start:g} s"))
            yield found[0]
            if proc.poll() is not None:
                say(f"the port-forward stopped before the end (exit {proc.returncode}): {_tail(log.read_text())}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
