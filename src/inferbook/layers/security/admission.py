"""Kyverno's verdict on a Pod: an evaluator of ours for exactly the subset of Kyverno the book's policies use.

No Kyverno engine ships in a package registry (PyPI and npm have none; its CLI is a Go binary released on
GitHub), so the chapter evaluates its policies here, offline, and a kube profile proves them at admission.
The subset, and only it (anything else raises :class:`UnsupportedPolicy` naming the construct):

- ``match.any[].resources`` with ``kinds`` (Pod), ``namespaces`` and ``selector.matchLabels``;
- ``preconditions.any`` with operator ``AnyIn``, a literal ``key`` and a ``value`` that is one variable of the
  form ``{{ request.object.<path> }}``, where the path is dotted field names (quoted when they hold dots),
  ``[]`` projections over lists, and ``keys(@)`` (JMESPath semantics: projections drop nulls, a trailing
  ``[]`` flattens);
- ``validate.pattern``: maps (every key of the pattern must match), lists (every element of the resource
  matches the pattern's one element), strings with Kyverno's wildcards ``*`` and ``?`` (``"?*"``: any
  non-empty value), and the equality anchor ``=(key)`` (checked only when the key is present);
- ``validate.failureAction``: Enforce denies, Audit admits and reports the violation.

Pod templates of Deployments, Jobs and StatefulSets are evaluated as the Pods they make, which is what
Kyverno's autogen does with a Pod rule (its rule for the controller reads ``spec.template``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ...errors import InferbookError


class UnsupportedPolicy(InferbookError):
    """A Kyverno policy uses a construct outside the evaluator's subset (the module docstring lists it)."""


@dataclass(frozen=True)
class Verdict:
    """One rule's outcome on one pod: skip (not matched, precondition false), pass, or fail."""

    policy: str
    rule: str
    result: str  # "skip" | "pass" | "fail"
    action: str  # Enforce | Audit
    message: str = ""

    @property
    def admitted(self) -> bool:
        return not (self.result == "fail" and self.action == "Enforce")


_VARIABLE = re.compile(r"^\{\{\s*request\.object\.(.+?)\s*\}\}$")
_TOKEN = re.compile(r'"([^"]+)"|([A-Za-z0-9_\-]+)\(@\)|([A-Za-z0-9_\-]+)|(\[\])')


def _tokens(path: str) -> list[tuple[str, str]]:
    """The path as (kind, value) tokens: field, call, project."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _TOKEN.finditer(path):
        between = path[pos:m.start()]
        if between.strip(".") or (between and set(between) - {"."}):
            raise UnsupportedPolicy(f"variable path {path!r}: {between!r} is outside the supported subset")
        pos = m.end()
        quoted, call, name, project = m.groups()
        if call:
            if call != "keys":
                raise UnsupportedPolicy(f"variable path {path!r}: function {call}() is not supported (keys(@) is)")
            out.append(("call", call))
        elif project:
            out.append(("project", ""))
        else:
            out.append(("field", quoted or name))
    if path[pos:].strip("."):
        raise UnsupportedPolicy(f"variable path {path!r}: {path[pos:]!r} is outside the supported subset")
    return out


def _step(value: Any, token: tuple[str, str]) -> Any:
    kind, name = token
    if value is None:
        return None
    if kind == "field":
        return value.get(name) if isinstance(value, dict) else None
    if kind == "call":
        return list(value) if isinstance(value, dict) else None
    return value  # "project" is handled by the caller


def resolve(path: str, obj: Any) -> Any:
    """JMESPath's meaning of ``path`` (the subset above) on ``obj``."""
    return _eval(_tokens(path), obj)


def _eval(tokens: list[tuple[str, str]], value: Any) -> Any:
    """JMESPath: ``[]`` flattens the list before it one level and projects the expression up to the next ``[]``
    over its elements, dropping null results; the next ``[]`` flattens those results and projects again."""
    i = 0
    while i < len(tokens):
        if tokens[i][0] != "project":
            value = _step(value, tokens[i])
            i += 1
            continue
        if not isinstance(value, list):
            return None
        flat: list[Any] = []
        for v in value:
            flat.extend(v if isinstance(v, list) else [v])
        j = next((k for k in range(i + 1, len(tokens)) if tokens[k][0] == "project"), len(tokens))
        results = [_eval(tokens[i + 1:j], v) for v in flat]
        value = [r for r in results if r is not None]
        i = j
    return value


def wildcard(pattern: str, value: Any) -> bool:
    """Kyverno's string pattern: ``*`` any run, ``?`` one character; compared on the value's text."""
    if value is None or isinstance(value, (dict, list)):
        return False
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return fnmatch.fnmatchcase(text, pattern)


def matches(pattern: Any, value: Any) -> bool:
    """Whether ``value`` satisfies the validate ``pattern`` (the subset in the module docstring)."""
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        for key, sub in pattern.items():
            anchored = re.fullmatch(r"=\((.+)\)", key)
            if anchored:
                name = anchored[1]
                if name in value and not matches(sub, value[name]):
                    return False
                continue
            if re.match(r"^[<>^+X(]?\(", key):
                raise UnsupportedPolicy(f"pattern key {key!r}: only the equality anchor =(key) is supported")
            if key not in value or not matches(sub, value[key]):
                return False
        return True
    if isinstance(pattern, list):
        if len(pattern) != 1:
            raise UnsupportedPolicy("a list in a pattern must hold one element (every item must match it)")
        return isinstance(value, list) and all(matches(pattern[0], v) for v in value)
    if isinstance(pattern, str):
        return wildcard(pattern, value)
    return pattern == value


def _matched(rule: Mapping[str, Any], pod: Mapping[str, Any], namespace: str, policy: Mapping[str, Any]) -> bool:
    match = rule.get("match") or {}
    if set(match) - {"any"}:
        raise UnsupportedPolicy(f"rule {rule.get('name')}: match.{', '.join(set(match) - {'any'})} is not supported")
    if policy.get("kind") == "Policy" and (policy.get("metadata") or {}).get("namespace", namespace) != namespace:
        return False
    labels = (pod.get("metadata") or {}).get("labels") or {}
    for entry in match.get("any") or []:
        res = entry.get("resources") or {}
        if "Pod" not in (res.get("kinds") or []):
            continue
        if res.get("namespaces") and namespace not in res["namespaces"]:
            continue
        wanted = ((res.get("selector") or {}).get("matchLabels")) or {}
        if any(labels.get(k) != v for k, v in wanted.items()):
            continue
        return True
    return False


def _preconditions(rule: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    pre = rule.get("preconditions")
    if not pre:
        return True
    if set(pre) - {"any"}:
        raise UnsupportedPolicy(f"rule {rule.get('name')}: preconditions take only `any` here")
    for cond in pre["any"]:
        if cond.get("operator") != "AnyIn":
            raise UnsupportedPolicy(f"rule {rule.get('name')}: operator {cond.get('operator')} (AnyIn is supported)")
        m = _VARIABLE.match(str(cond.get("value", "")).strip())
        if not m:
            raise UnsupportedPolicy(f"rule {rule.get('name')}: value must be one {{{{ request.object.... }}}}")
        found = resolve(m[1], pod)
        found = found if isinstance(found, list) else ([] if found is None else [found])
        keys = cond["key"] if isinstance(cond["key"], list) else [cond["key"]]
        if any(k in found for k in keys):
            return True
    return False


def evaluate(policy: Mapping[str, Any], pod: Mapping[str, Any], namespace: str) -> list[Verdict]:
    """Every rule of ``policy`` on ``pod`` (a Pod object or a pod template with metadata and spec) in ``namespace``."""
    name = policy["metadata"]["name"]
    out = []
    for rule in policy["spec"]["rules"]:
        validate = rule.get("validate") or {}
        action = validate.get("failureAction") or policy["spec"].get("validationFailureAction") or "Audit"
        action = action.capitalize()
        if not _matched(rule, pod, namespace, policy) or not _preconditions(rule, pod):
            out.append(Verdict(name, rule["name"], "skip", action))
            continue
        if "pattern" not in validate:
            raise UnsupportedPolicy(f"rule {rule['name']}: only validate.pattern is supported")
        ok = matches(validate["pattern"], pod)
        out.append(Verdict(name, rule["name"], "pass" if ok else "fail", action,
                           "" if ok else str(validate.get("message", "")).strip()))
    return out


def as_pod(workload: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """A Pod (or a workload's template, as autogen reads it) as a Pod object, with its namespace."""
    meta = workload.get("metadata") or {}
    if workload.get("kind") == "Pod":
        return dict(workload), str(meta.get("namespace") or "")
    template = workload["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": meta.get("name"), **template.get("metadata", {})},
            "spec": template["spec"]}, str(meta.get("namespace") or "")
