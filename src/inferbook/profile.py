"""Deployment profiles: load a YAML file, validate it, fill defaults, resolve features.

A profile is the one place a deployment is described (ADR-0027/0031). Loading
is strict on purpose: an unknown key, a duplicate key, a wrong type or an
impossible combination is an error that names the file, the line, the field and
the fix, and every problem is reported at once.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema
import pandas as pd
import yaml

from .errors import InferbookError, ProfileError, ProfileIssue
from .features import BY_NAME, FeatureConflict, ResolvedFeatures, resolve
from .paths import Layout

FieldPath = tuple[str | int, ...]

#: Replica floor per tier (ADR-0014): cost may scale to zero, dev keeps one, prod keeps two.
REPLICA_FLOOR = {"cost": 0, "dev": 1, "prod": 2}
#: Postgres instances the prod tier's fail-closed budgets need (ADR-0029 SR3).
PROD_DB_INSTANCES = 3
#: Keys that used to be valid and now live elsewhere: where it was -> (where it went, why). A profile written for
#: an older inferbook then says where the setting went, not only that the key is unknown.
MOVED_KEYS: dict[FieldPath, tuple[FieldPath, str]] = {
    ("benchmarks", "slo"): (("slo",), "one set of objectives judges the observability and the benchmarks chapters, "
                                      "for the benchmark shape, benchmarks.input_tokens / output_tokens"),
}


def load_schema() -> dict[str, Any]:
    """The profile JSON Schema shipped with the package."""
    text = resources.files("inferbook").joinpath("schemas/profile.schema.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class Profile:
    """A validated profile with defaults filled in and features resolved."""

    name: str
    source: str
    data: dict[str, Any]
    features: ResolvedFeatures
    overrides: dict[str, Any] = field(default_factory=dict)
    ref: str = ""  # what load_profile needs to find this profile again: a shipped name or an absolute path

    def get(self, dotted: str, default: Any = None) -> Any:
        """A value by dotted path, e.g. ``profile.get("serving.replicas")``."""
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def target_kind(self) -> str:
        return self.data["target"]["kind"]

    @property
    def tier(self) -> str:
        return self.data["tier"]

    @property
    def budget_mode(self) -> str:
        """ADR-0029 SR3: budgets fail closed on prod and open elsewhere; derived, never configured."""
        return "fail-closed" if self.tier == "prod" else "fail-open"

    @property
    def autoscaling_paused(self) -> bool:
        """ADR-0014: the ScaledObject is paused on the cost tier unless ``autoscaling.paused`` says otherwise."""
        paused = (self.data.get("autoscaling") or {}).get("paused")
        return bool(paused) if paused is not None else self.tier == "cost"

    @property
    def replicas_scaled_by_keda(self) -> bool:
        """Whether KEDA's HPA, not the serving Deployment, owns vLLM's replica count.

        Then the Deployment carries no ``spec.replicas``: server-side apply would otherwise own the field and reset
        what the HPA scaled to on every re-apply. A paused ScaledObject leaves the count to the profile.
        """
        return "autoscaling" in self.features and "kserve" not in self.features and not self.autoscaling_paused

    @property
    def gpu_slots(self) -> int:
        """Schedulable GPU slots: physical GPUs times the time-slicing factor."""
        gpu = self.data["gpu"]
        return gpu["count"] * gpu["time_slicing"]

    def alias_model(self, role: str) -> dict[str, Any]:
        """The model behind a tenant alias role (``chat`` for coder-chat, ``fim`` for coder-fim).

        ``models.fim`` for FIM when named; else the coder (``models.coder``, served by llama.cpp) when the profile
        has one; else ``models.chat``. One rule for the gateway's config, the FIM format and the agent's mode.
        """
        models = self.data["models"]
        model = (models.get("fim") if role == "fim" else None) or models.get("coder") or models.get("chat")
        if not model:
            raise InferbookError(f"profile {self.name} names no models.chat, so the gateway's aliases have no model. "
                                 "Fix: add models.chat with id and served_name")
        return model

    def summary_table(self) -> pd.DataFrame:
        """The resolved settings a reader checks before anything is provisioned."""
        d = self.data
        gpu = d["gpu"]
        chat = d["models"].get("chat")
        fim = d["models"].get("fim")
        coder = d["models"].get("coder")
        rows = [
            ("profile", self.name),
            ("source", self.source),
            ("description", d["description"]),
            ("target", d["target"]["kind"]
             + (f" (context {d['target']['context']})" if "context" in d["target"] else "")),
            ("namespace", d["target"]["namespace"]),
            ("tier", d["tier"]),
            ("budget mode", self.budget_mode),
            ("gpu", "none (CPU)" if gpu["type"] == "none" else
             f"{gpu['count']} x {gpu['type']}, stack {gpu['stack']}, time-slicing {gpu['time_slicing']}"),
            ("serving replicas", f"{d['serving']['replicas']} ({d['serving']['strategy']})"),
            ("max model length", d["serving"]["max_model_len"]),
            ("chat model", f"{chat['id']} as {chat['served_name']}" if chat else "-"),
            ("fim model", f"{fim['id']} as {fim['served_name']}" if fim else "same as chat"),
            ("coder model", f"{coder['id']} as {coder['served_name']} (llama.cpp)" if coder else "-"),
            ("database", f"{d['database']['instances']} Postgres instance(s)"
             + (" + Redis" if d["database"]["redis"] else "")),
            ("demo keys", ", ".join(sorted(d["tenants"]["keys"])) or "-"),
            ("cell timeout", f"{d['runner']['cell_timeout_seconds']} s"),
            ("features on", ", ".join(self.features.enabled) or "-"),
        ]
        if self.overrides:
            rows.append(("overrides", ", ".join(f"{k}={v!r}" for k, v in self.overrides.items())))
        return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: the resolved data plus the enabled features."""
        return {
            "name": self.name,
            "source": self.source,
            "profile": self.data,
            "budget_mode": self.budget_mode,
            "features": {s.name: {"enabled": s.enabled, "why": s.reason} for s in self.features.states},
            "overrides": self.overrides,
        }


# --------------------------------------------------------------------------- loading


def list_profiles(layout: Layout | None = None) -> list[str]:
    """Names of the shipped profiles (``profiles/*.yaml``)."""
    layout = layout or Layout.discover()
    return sorted(p.stem for p in layout.profiles_dir.glob("*.yaml"))


def profile_path(name_or_path: str, layout: Layout | None = None) -> Path:
    """Resolve ``local`` to ``profiles/local.yaml``; a path to a file is taken as it is."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.is_file():
        if not candidate.is_file():
            raise ProfileError(str(candidate), [ProfileIssue(str(candidate), "", "file not found",
                                                             "give the path of an existing profile file")])
        return candidate
    layout = layout or Layout.discover()
    path = layout.profiles_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        known = list_profiles(layout)
        close = difflib.get_close_matches(name_or_path, known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ProfileError(name_or_path, [ProfileIssue(
            str(path), "", f"no profile named '{name_or_path}'",
            f"{hint}use one of: {', '.join(known)} (or a path to a YAML file)")])
    return path


def load_profile(name_or_path: str, overrides: dict[str, Any] | Iterable[str] | None = None,
                 layout: Layout | None = None) -> Profile:
    """Load, validate and resolve a profile by name (``local``) or by path.

    ``overrides`` are dotted-path settings applied on top of the file, either as
    a mapping (``{"tier": "prod"}``) or as ``key=value`` strings from the command
    line; they are validated exactly like the file.
    """
    layout = layout or Layout.discover()
    path = profile_path(name_or_path, layout)
    try:
        display = str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        display = str(path)
    text = _read_text(path, display)
    profile = parse_profile(text, display, name=path.stem, overrides=overrides)
    shipped = path.resolve().parent == layout.profiles_dir.resolve()
    return replace(profile, ref=path.stem if shipped else str(path.resolve()))


def _read_text(path: Path, display: str) -> str:
    """The file's text; a file that is not UTF-8 text, or cannot be read, is a :class:`ProfileError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(display, [ProfileIssue(
            display, "", f"the file cannot be read ({exc.strerror or exc})",
            "give the path of a readable YAML profile file")]) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        looks = "; it looks like a binary file" if b"\x00" in raw else ""
        raise ProfileError(display, [ProfileIssue(
            f"{display}:{line}", "",
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start} is not valid UTF-8{looks})",
            "give a YAML profile file saved as UTF-8 text, e.g. a copy of profiles/local.yaml")]) from None


#: How far validation got: it stops at the first stage that finds a problem (``_VALID``: none did).
_SCHEMA, _FEATURES, _COMBINATIONS, _VALID = 1, 2, 3, 4


def parse_profile(text: str, source: str, name: str,
                  overrides: dict[str, Any] | Iterable[str] | None = None) -> Profile:
    """Validate profile text; raise :class:`ProfileError` listing every problem."""
    locator = _Locator(source)
    data = locator.parse(text)
    override_map = _normalise_overrides(overrides, source)
    file_data = copy.deepcopy(data)
    for dotted, value in override_map.items():
        locator.mark_override(dotted, value)
        problem = _set_dotted(data, dotted, copy.deepcopy(value))
        if problem:
            locator.issues.append(ProfileIssue(locator.override_where(dotted), dotted, problem,
                                               "override a setting inside a mapping, e.g. -p serving.replicas=2"))
    if locator.issues:
        raise ProfileError(source, locator.issues)

    schema = load_schema()
    stage, issues, profile = _validate(data, schema, locator, name, source, override_map)
    if issues:
        if override_map:
            issues = _blame_overrides(issues, stage, file_data, override_map, schema, locator)
        raise ProfileError(source, issues)
    assert profile is not None
    return profile


def _validate(data: dict[str, Any], schema: dict[str, Any], locator: "_Locator", name: str, source: str,
              overrides: dict[str, Any]) -> tuple[int, list[ProfileIssue], Profile | None]:
    """Schema, feature resolution, cross-field rules: the stage that stopped, its issues, the profile if valid."""
    issues = [_explain(err, schema, locator) for err in _schema_errors(schema, data)]
    if issues:
        return _SCHEMA, issues, None

    _fill_defaults(schema, schema, data)
    try:
        features = resolve(data["features"])
    except FeatureConflict as conflict:
        chain = " -> ".join(conflict.chain)
        return _FEATURES, [ProfileIssue(
            locator.where(("features", conflict.needs)), f"features.{conflict.needs}",
            f"is false, but features.{conflict.feature} needs it ({chain})",
            f"set features.{conflict.needs}: true, or features.{conflict.feature}: false")], None

    profile = Profile(name=name, source=source, data=data, features=features, overrides=overrides, ref=name)
    issues = list(_check_combinations(profile, locator))
    if issues:
        return _COMBINATIONS, issues, None
    return _VALID, [], profile


# --------------------------------------------------------------------------- overrides


def _normalise_overrides(overrides: dict[str, Any] | Iterable[str] | None, source: str) -> dict[str, Any]:
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    result: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ProfileError(source, [ProfileIssue(
                f"command line (-p {item})", "", "an override must look like key=value",
                "write e.g. -p tier=prod or -p features.routing=true")])
        try:
            result[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            result[key.strip()] = raw
    return result


def _blame_overrides(issues: list[ProfileIssue], stage: int, file_data: dict[str, Any], overrides: dict[str, Any],
                     schema: dict[str, Any], locator: "_Locator") -> list[ProfileIssue]:
    """Point every issue that the command line causes at the ``-p`` argument(s) that cause it.

    :meth:`_Locator.where` already names the override for an issue at a field an override set (or
    created). This covers the rest: an issue placed at a field of the file but triggered by an override,
    e.g. ``-p tier=prod`` making the file's ``serving.replicas: 1`` fall below the prod floor. An override
    causes an issue when validating without it gets as far as the issue's stage and finds no problem at
    the issue's field (the wording may differ: it quotes values); validating the file alone decides when
    no single override does. An issue the file has on its own keeps its ``file:line``, and so does one
    that cannot be judged because without the override the file fails at an earlier stage.
    """
    pending = [i for i, issue in enumerate(issues) if not locator.is_override_where(issue.where)]
    if not pending:
        return issues

    def without(dropped: set[str]) -> tuple[int, set[str]]:
        data = copy.deepcopy(file_data)
        for dotted, value in overrides.items():
            if dotted not in dropped and _set_dotted(data, dotted, copy.deepcopy(value)):
                return 0, set()  # this combination cannot even be applied: it judges nothing
        reached, found, _ = _validate(data, schema, locator.file_only(), "", locator.source, {})
        return reached, {issue.field for issue in found}

    file_alone = without(set(overrides))
    each = {key: without({key}) for key in overrides} if len(overrides) > 1 else {key: file_alone for key in overrides}
    result = list(issues)
    for i in pending:
        issue = issues[i]
        culprits = [key for key, (reached, found) in each.items() if reached >= stage and issue.field not in found]
        if not culprits and file_alone[0] >= stage and issue.field not in file_alone[1]:
            culprits = list(overrides)  # no single override is needed (any one suffices), but together they are
        if culprits:
            result[i] = ProfileIssue(locator.override_where(*culprits), issue.field, issue.problem, issue.fix)
    return result


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> str | None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return f"'{part}' is not a mapping, so '{dotted}' cannot be set"
    node[parts[-1]] = value
    return None


# --------------------------------------------------------------------------- locations


class _Locator:
    """Maps field paths to ``file:line`` (or to the command-line override that set them)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[FieldPath, int] = {}
        self.overridden: dict[str, Any] = {}
        self.issues: list[ProfileIssue] = []

    def parse(self, text: str) -> dict[str, Any]:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{self.source}:{mark.line + 1}" if mark else self.source
            problem = getattr(exc, "problem", None) or str(exc)
            raise ProfileError(self.source, [ProfileIssue(where, "", f"not valid YAML ({problem})",
                                                          "correct the YAML syntax at that line")]) from None
        if root is None or not isinstance(root, yaml.MappingNode):
            raise ProfileError(self.source, [ProfileIssue(
                self.source, "", "the file must be a YAML mapping of settings",
                "start from a shipped profile, e.g. profiles/local.yaml")])
        self._index(root, ())
        return yaml.safe_load(text)

    def _index(self, node: yaml.Node, path: FieldPath) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.issues.append(ProfileIssue(
                        f"{self.source}:{line}", _dotted(path + (key,)),
                        f"duplicate key (first written at line {seen[key]})",
                        "keep one of the two; YAML would silently use the last"))
                seen[key] = line
                self._index(value_node, path + (key,))
                self.lines[path + (key,)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, path + (i,))

    def mark_override(self, dotted: str, value: Any) -> None:
        self.overridden[dotted] = value

    def override_where(self, *dotted: str) -> str:
        """Where an issue caused by these overrides is: the ``-p`` argument(s), not a line of the file."""
        return "command line (" + " ".join(f"-p {key}={self.overridden[key]}" for key in dotted) + ")"

    def is_override_where(self, where: str) -> bool:
        return where.startswith("command line (")

    def file_only(self) -> "_Locator":
        """A locator of the same file that knows no override."""
        other = _Locator(self.source)
        other.lines = self.lines
        return other

    def where(self, path: FieldPath) -> str:
        dotted = _dotted(path)
        for key in self.overridden:
            if dotted == key or dotted.startswith(key + ".") or dotted.startswith(key + "["):
                return self.override_where(key)
        if path not in self.lines:
            # Not in the file, so an override created it on its way to a deeper key (-p nosuch.key=1 creates nosuch).
            for key in self.overridden:
                if key.startswith(dotted + "."):
                    return self.override_where(key)
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe)
        return f"{self.source}:{line}" if line else self.source


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


# --------------------------------------------------------------------------- schema


def _schema_errors(schema: dict[str, Any], data: Any) -> list[jsonschema.ValidationError]:
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.validator))


def _explain(err: jsonschema.ValidationError, schema: dict[str, Any], loc: _Locator) -> ProfileIssue:
    path: FieldPath = tuple(err.absolute_path)
    kind = err.validator
    sub = err.schema if isinstance(err.schema, dict) else {}
    hint = sub.get("description", "")
    if kind == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted((sub.get("properties") or {}).keys())
        # a moved key first: its message says where it went, where a typo's only says what is allowed
        extras = sorted((k for k in err.instance if k not in allowed), key=lambda k: path + (k,) not in MOVED_KEYS)
        key = extras[0] if extras else "?"
        if path + (key,) in MOVED_KEYS:
            return _moved(loc, path + (key,), extras[1:])
        close = difflib.get_close_matches(str(key), allowed, n=1)
        fix = (f"did you mean '{close[0]}'? " if close else "remove it; ") + \
              (f"allowed here: {', '.join(allowed)}" if allowed else "this mapping takes no keys")
        if len(extras) > 1:
            fix += f" (also unknown here: {', '.join(map(str, extras[1:]))})"
        return ProfileIssue(loc.where(path + (key,)), _dotted(path + (key,)), "unknown key", fix)
    if kind == "required":
        missing = [r for r in err.validator_value if r not in err.instance]
        # one error per missing key: name the one this error is about, not always the first
        name = next((r for r in missing if repr(r) in err.message), missing[0] if missing else "?")
        prop = (sub.get("properties") or {}).get(name, {})
        choices = f" (one of: {', '.join(prop['enum'])})" if "enum" in prop else ""
        return ProfileIssue(loc.where(path), _dotted(path + (name,)), "required key is missing",
                            f"add '{name}:'{choices}. {prop.get('description', '')}".strip())
    if kind == "enum":
        options = [str(o) for o in err.validator_value]
        close = difflib.get_close_matches(str(err.instance), options, n=1)
        fix = (f"did you mean '{close[0]}'? " if close else "") + f"use one of: {', '.join(options)}"
        return ProfileIssue(loc.where(path), _dotted(path), f"{err.instance!r} is not an allowed value", fix)
    if kind == "type":
        expected = err.validator_value
        found = type(err.instance).__name__ if err.instance is not None else "nothing (null)"
        return ProfileIssue(loc.where(path), _dotted(path), f"expected {expected}, found {found} {err.instance!r}",
                            f"write {'an' if str(expected)[0] in 'aeiou' else 'a'} {expected} here. {hint}".strip())
    if kind in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        bound = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return ProfileIssue(loc.where(path), _dotted(path), f"{err.instance!r} is out of range",
                            f"use a value {bound} {err.validator_value}. {hint}".strip())
    if kind == "pattern":
        return ProfileIssue(loc.where(path), _dotted(path), f"{err.instance!r} has the wrong form",
                            f"it must match {err.validator_value}. {hint}".strip())
    if kind == "propertyNames":
        return ProfileIssue(loc.where(path), _dotted(path), f"a key has the wrong form ({err.message})",
                            "use lower-case names with letters, digits and dashes")
    return ProfileIssue(loc.where(path), _dotted(path), err.message,
                        hint or "see src/inferbook/schemas/profile.schema.json")


def _moved(loc: _Locator, at: FieldPath, others: list[Any]) -> ProfileIssue:
    """A key of :data:`MOVED_KEYS`: where it went and how to move it (in the file, or in a ``-p`` override)."""
    to, why = MOVED_KEYS[at]
    old, new = _dotted(at), _dotted(to)
    where = loc.where(at)
    place = f"the top-level '{new}:'" if len(to) == 1 else f"'{new}:'"
    if loc.is_override_where(where):
        fix = f"write -p {new}.KEY=VALUE instead of -p {old}.KEY=VALUE"
    else:
        fix = f"move the settings under '{old}' into {place} and delete '{old}'"
    if others:
        fix += f" (also unknown here: {', '.join(map(str, others))})"
    return ProfileIssue(where, old, f"moved to {place} ({why})", fix)


def _fill_defaults(root: dict[str, Any], schema: dict[str, Any], data: dict[str, Any]) -> None:
    """Write schema defaults into ``data`` in place, recursing into nested mappings."""
    for key, prop in (schema.get("properties") or {}).items():
        if "$ref" in prop and "default" not in prop:
            prop = _deref(root, prop["$ref"])
        if key not in data and "default" in prop:
            data[key] = copy.deepcopy(prop["default"])
        if isinstance(data.get(key), dict) and prop.get("properties"):
            _fill_defaults(root, prop, data[key])


def _deref(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


# --------------------------------------------------------------------------- combinations


def _check_combinations(profile: Profile, loc: _Locator) -> Iterator[ProfileIssue]:
    """Rules across fields that a JSON Schema cannot say clearly."""
    d = profile.data
    target, gpu, serving, db = d["target"], d["gpu"], d["serving"], d["database"]
    tier = d["tier"]
    at = lambda *p: loc.where(tuple(p))  # noqa: E731 - a short alias keeps the rules readable

    if target["kind"] == "kube" and "context" not in target:
        yield ProfileIssue(at("target"), "target.context", "a kube target needs a kubeconfig context",
                           "add target.context (see `kubectl config get-contexts`)")
    if target["kind"] == "local":
        if "context" in target:
            yield ProfileIssue(at("target", "context"), "target.context", "a local target has no kubeconfig context",
                               "remove target.context, or set target.kind: kube")
        if gpu["type"] != "none":
            yield ProfileIssue(at("gpu", "type"), "gpu.type", "the local stack runs vLLM on the CPU",
                               "set gpu.type: none for target.kind: local")
    if gpu["type"] == "none":
        if gpu["count"] != 0:
            yield ProfileIssue(at("gpu", "count"), "gpu.count", f"{gpu['count']} GPUs of type none",
                               "set gpu.count: 0, or name the GPU in gpu.type")
        if gpu["time_slicing"] != 1:
            yield ProfileIssue(at("gpu", "time_slicing"), "gpu.time_slicing", "time-slicing needs a GPU",
                               "set gpu.time_slicing: 1, or name the GPU in gpu.type")
    else:
        if gpu["count"] < 1:
            yield ProfileIssue(at("gpu", "count"), "gpu.count", f"gpu.type is {gpu['type']} but no GPU is counted",
                               "set gpu.count to the number of physical GPUs (>= 1)")
        if target["kind"] == "kube" and gpu["stack"] == "none":
            yield ProfileIssue(at("gpu", "stack"), "gpu.stack", "a GPU cluster needs a driver and device plugin",
                               "set gpu.stack: gke-managed on GKE, operator elsewhere (ADR-0001)")

    store = d["platform"]["secret_store"]
    if store["provider"] == "gcpsm" and "project_id" not in store:
        yield ProfileIssue(at("platform", "secret_store", "provider"), "platform.secret_store.project_id",
                           "the gcpsm secret store reads GCP Secret Manager of a project, but none is named",
                           "set platform.secret_store.project_id to your GCP project, or provider: kubernetes "
                           "(ADR-0011)")

    floor = REPLICA_FLOOR[tier]
    if serving["replicas"] < floor:
        yield ProfileIssue(at("serving", "replicas"), "serving.replicas",
                           f"{serving['replicas']} is below the {tier} tier's replica floor of {floor}",
                           f"set serving.replicas: {floor} or more (ADR-0014)")
    if serving["strategy"] == "RollingUpdate" and gpu["type"] != "none" and profile.gpu_slots <= serving["replicas"]:
        yield ProfileIssue(at("serving", "strategy"), "serving.strategy",
                           f"a rolling update with maxUnavailable 0 needs a spare GPU slot, but "
                           f"{serving['replicas']} replica(s) fill all {profile.gpu_slots} slot(s)",
                           "use strategy: Recreate, add a GPU, or raise gpu.time_slicing")
    if tier == "prod":
        if db["instances"] < PROD_DB_INSTANCES:
            yield ProfileIssue(at("database", "instances"), "database.instances",
                               "the prod tier fails closed and needs an HA database, "
                               f"but instances is {db['instances']}",
                               f"set database.instances: {PROD_DB_INSTANCES} (ADR-0029 SR3)")
        if not db["redis"]:
            yield ProfileIssue(at("database", "redis"), "database.redis",
                               "the prod tier runs several gateway replicas that must share limits",
                               "set database.redis: true")

    if "serving" in profile.features and "chat" not in d["models"]:
        yield ProfileIssue(at("models"), "models.chat", "serving is enabled but no chat model is named",
                           "add models.chat with id and served_name")
    if "llm-d" in profile.features and (target["kind"] != "kube" or gpu["count"] < 2):
        yield ProfileIssue(at("features", "llm-d"), "features.llm-d",
                           "llm-d disaggregates prefill and decode across >= 2 GPUs on a cluster",
                           "use a kube target with gpu.count >= 2, or set features.llm-d: false")

    ports = d["local"]["ports"]
    seen: dict[int, str] = {}
    for layer, port in ports.items():
        if port in seen:
            yield ProfileIssue(at("local", "ports", layer), f"local.ports.{layer}",
                               f"port {port} is already used by local.ports.{seen[port]}",
                               "give every local layer its own port")
        seen[port] = layer

    coder = d["models"].get("coder")
    if coder and gpu["type"] != "none":
        yield ProfileIssue(at("models", "coder"), "models.coder",
                           "llama.cpp serves a coder's GGUF on CPUs; with a GPU vLLM serves the coder",
                           "remove models.coder and name the coder as models.chat (vLLM on the GPU)")
    known = {"coder-chat", "coder-fim", "embeddings", d["models"].get("chat", {}).get("served_name")}
    for alias, key in d["tenants"]["keys"].items():
        unknown = [m for m in key["models"] if m not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(n for n in known if n), n=1)
            yield ProfileIssue(at("tenants", "keys", alias, "models"), f"tenants.keys.{alias}.models",
                               f"{', '.join(unknown)} is no gateway alias (coder-chat, coder-fim, embeddings) and not "
                               "the served name of models.chat",
                               f"did you mean '{close[0]}'?" if close else "name one of those")
        if "embeddings" in key["models"] and "embeddings" not in profile.features:
            yield ProfileIssue(at("tenants", "keys", alias, "models"), f"tenants.keys.{alias}.models",
                               "the key names the embeddings alias but features.embeddings is off",
                               "set features.embeddings: true, or drop embeddings from the key")


def feature_names() -> list[str]:
    """Every feature the schema and the resolver know, in catalogue order."""
    return list(BY_NAME)
