"""CRD schemas: committed structural schemas derived from pinned upstream CRDs, and their regeneration.

Custom resources (ServiceMonitor, InferenceService, ...) are validated offline
against their CRD's ``openAPIV3Schema``. The upstream CRD files are large (the
KServe one is 2 MB, mostly descriptions) and live on GitHub, which a user's
machine may not reach. So the repository carries, for each CRD pinned in
``manifests/crds.lock.yaml``, a compact JSON file under ``manifests/crds/`` with
the structural schema only: types, required, enums, patterns, formats, bounds
and the ``x-kubernetes-*`` markers, with descriptions, titles, examples and
defaults stripped. Validation reads only those files, and only after their
sha256 matches the lock, so a hand edit is caught rather than trusted.

``inferbook crds update`` regenerates them: it takes each upstream file from a
folder (``--from DIR``, laid out like the lock's ``local_path``) or downloads it
by the pinned tag, refuses any whose sha256 differs from the pin before writing
anything, then writes the derived files and their checksums into the lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import InferbookError
from .paths import Layout

#: Where upstream files are downloaded from by ``crds update``; a parameter, so tests can serve a double.
GITHUB_RAW = "https://raw.githubusercontent.com"
DOWNLOAD_TIMEOUT_SECONDS = 60.0
#: The lock file and the folder of derived schemas, relative to the checkout.
LOCK_FILE = Path("manifests") / "crds.lock.yaml"
SCHEMA_DIR = Path("manifests") / "crds"
UPDATE_COMMAND = ("inferbook crds update --from DIR (a folder of the upstream files) "
                  "or inferbook crds update (downloads)")

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KServe CRD is ~2 MB: use libyaml when present

#: Schema keywords that document rather than constrain; the derived schema drops them.
_PROSE_KEYWORDS = frozenset({"description", "title", "example", "externalDocs", "default", "$schema", "id"})
#: Keywords whose value maps names to schemas (the names are data, not keywords).
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "definitions", "dependencies"})
#: Keywords whose value is a schema or a list of schemas.
_SCHEMA_VALUES = frozenset({"items", "additionalProperties", "additionalItems", "not", "allOf", "anyOf", "oneOf"})

_LOCK_HEADER = """\
# The CustomResourceDefinitions the manifests use, each pinned to an upstream file and its sha256,
# and the compact schema derived from it that this repository commits (manifests/crds/*.json).
# Validation (src/inferbook/validate.py) reads only the derived schemas, after checking schema_sha256,
# so it needs no network and no copy of the upstream files.
#   upstream_sha256  sha256 of <repo>@<tag>:<path>, checked before anything is derived from it
#   local_path       where that file sits in a folder of upstream CRDs (inferbook crds update --from DIR)
#   schema           the derived structural schema (descriptions, examples and defaults stripped)
#   schema_sha256    sha256 of that file as committed
# To add a CRD or bump a tag: edit group/kind/repo/tag/path/local_path/upstream_sha256, then run
# `inferbook crds update --from DIR` (or without --from where GitHub is reachable); it rewrites this file.
"""


class CrdError(InferbookError):
    """A pinned CRD schema could not be found, fetched or read."""


class CrdVersionError(CrdError):
    """An object asks for a version its (pinned) CRD does not define or serve: a manifest problem."""


class CrdChecksumMismatch(CrdError):
    """A file's bytes differ from the sha256 the lock pins for it."""

    def __init__(self, source: "CrdSource", where: str, actual: str, expected: str, fix: str) -> None:
        self.source = source
        self.where = where
        self.actual = actual
        super().__init__(
            f"CRD {source.kind} ({source.group}): {where} has sha256 {actual}, but manifests/crds.lock.yaml "
            f"pins {expected}. Fix: {fix}"
        )


@dataclass(frozen=True)
class CrdSource:
    """One lock entry: which upstream file defines a kind, its checksum, and the schema derived from it."""

    group: str
    kind: str
    repo: str
    tag: str
    path: str
    local_path: str
    upstream_sha256: str
    schema: str = ""
    schema_sha256: str = ""

    def url(self, base_url: str = GITHUB_RAW) -> str:
        return f"{base_url.rstrip('/')}/{self.repo}/{self.tag}/{self.path}"

    @property
    def pin(self) -> str:
        return f"{self.repo}@{self.tag}"

    def default_schema_path(self) -> str:
        """``crds/<file>.json`` beside the lock, named after the upstream file."""
        return f"crds/{Path(self.path).stem}.json"


#: Fields every lock entry must have, and the two that ``crds update`` fills in.
_REQUIRED = ("group", "kind", "repo", "tag", "path", "local_path", "upstream_sha256")
_DERIVED = ("schema", "schema_sha256")


def lock_file(layout: Layout) -> Path:
    return layout.root / LOCK_FILE


def load_lock(layout: Layout) -> list[CrdSource]:
    """The pinned CRDs of this checkout (``manifests/crds.lock.yaml``)."""
    path = lock_file(layout)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CrdError(f"cannot read the CRD lock {path}: {exc}. Fix: restore it from git") from None
    sources = []
    for i, entry in enumerate(data.get("crds") or []):
        missing = [f for f in _REQUIRED if not isinstance(entry, dict) or not entry.get(f)]
        if missing:
            raise CrdError(f"{path}: entry {i} lacks {', '.join(missing)}. Fix: give every entry "
                           f"{', '.join(_REQUIRED)}, then run {UPDATE_COMMAND}")
        sources.append(CrdSource(**{f: str(entry.get(f) or "") for f in _REQUIRED + _DERIVED}))
    return sources


def write_lock(layout: Layout, sources: list[CrdSource]) -> Path:
    """Rewrite the lock from ``sources`` (header comment included), atomically."""
    entries = [{f: getattr(s, f) for f in _REQUIRED + _DERIVED} for s in sources]
    text = _LOCK_HEADER + yaml.safe_dump({"crds": entries}, sort_keys=False, width=200)
    return _write_atomic(lock_file(layout), text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- derivation


def structural(node: Any) -> Any:
    """A copy of an OpenAPI v3 schema node without its prose keywords.

    Names under ``properties`` are data (a field may be called ``description``),
    so only keyword positions are stripped.
    """
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _PROSE_KEYWORDS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: structural(child) for name, child in value.items()}
        elif key in _SCHEMA_VALUES:
            out[key] = [structural(v) for v in value] if isinstance(value, list) else structural(value)
        else:
            out[key] = value
    return out


def derive(source: CrdSource, upstream: bytes) -> bytes:
    """The compact schema file for one upstream CRD: kind, scope, versions and their structural schemas."""
    try:
        doc = yaml.load(upstream.decode("utf-8"), Loader=_Loader)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CrdError(f"the upstream file of {source.kind} ({source.pin}:{source.path}) is not YAML: {exc}") from None
    spec = doc.get("spec") if isinstance(doc, dict) else None
    if not isinstance(spec, dict) or doc.get("kind") != "CustomResourceDefinition":
        raise CrdError(f"the upstream file of {source.kind} ({source.pin}:{source.path}) is not a "
                       f"CustomResourceDefinition. Fix: check path and local_path in {LOCK_FILE}")
    names = spec.get("names") or {}
    if spec.get("group") != source.group or names.get("kind") != source.kind:
        raise CrdError(f"{source.pin}:{source.path} defines {names.get('kind')} ({spec.get('group')}), not "
                       f"{source.kind} ({source.group}). Fix: correct the entry in {LOCK_FILE}")
    versions = [{"name": v.get("name"), "served": bool(v.get("served")), "storage": bool(v.get("storage")),
                 "openAPIV3Schema": structural((v.get("schema") or {}).get("openAPIV3Schema") or {})}
                for v in spec.get("versions") or []]
    derived = {
        "generated_by": "inferbook crds update; do not edit (validation checks this file's sha256 against the lock)",
        "source": {"repo": source.repo, "tag": source.tag, "path": source.path, "sha256": source.upstream_sha256},
        "group": source.group, "kind": source.kind, "scope": spec.get("scope"), "versions": versions,
    }
    return (json.dumps(derived, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- regeneration


@dataclass(frozen=True)
class Updated:
    """What ``crds update`` did for one CRD."""

    kind: str
    pin: str
    upstream_bytes: int
    schema: str
    schema_bytes: int
    schema_sha256: str
    changed: bool


def fetch_upstream(source: CrdSource, *, from_dir: Path | None, base_url: str = GITHUB_RAW,
                   timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> tuple[bytes, str]:
    """The upstream file's bytes and where they came from, verified against ``upstream_sha256``."""
    if from_dir is not None:
        path = Path(from_dir) / source.local_path
        try:
            data, where = path.read_bytes(), str(path)
        except OSError as exc:
            raise CrdError(f"cannot read the upstream CRD of {source.kind} at {path}: {exc.strerror}. Fix: put "
                           f"{source.pin}:{source.path} there (the lock's local_path), or omit --from to download it"
                           ) from None
        fix = f"put the file of {source.pin}:{source.path} at {path}; if the tag was bumped on purpose, " \
              f"update upstream_sha256 in {LOCK_FILE}"
    else:
        url = source.url(base_url)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https or a test double)
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CrdError(f"cannot download the CRD of {source.kind} from {url}: {getattr(exc, 'reason', exc)}. "
                           f"Fix: run where GitHub is reachable, or pass --from DIR with the upstream files "
                           f"(this one at DIR/{source.local_path})") from None
        where = f"{url} (download)"
        fix = f"check the tag and path of {source.kind} in {LOCK_FILE}; if the tag was bumped on purpose, " \
              f"update upstream_sha256"
    actual = sha256_bytes(data)
    if actual != source.upstream_sha256:
        raise CrdChecksumMismatch(source, where, actual, source.upstream_sha256, fix)
    return data, where


def update(layout: Layout, *, from_dir: Path | None = None, base_url: str = GITHUB_RAW,
           timeout: float = DOWNLOAD_TIMEOUT_SECONDS, say: Callable[[str], None] = print) -> list[Updated]:
    """Regenerate every derived schema and the lock's ``schema``/``schema_sha256`` fields.

    Every upstream file is fetched and verified first; a single mismatch or
    unreachable file raises before any file is written, so a failed update
    leaves the checkout as it was.
    """
    sources = load_lock(layout)
    derived: list[tuple[CrdSource, bytes, int]] = []
    for source in sources:
        data, where = fetch_upstream(source, from_dir=from_dir, base_url=base_url, timeout=timeout)
        say(f"  {source.kind} ({source.pin}): {len(data):,} bytes from {where}, sha256 verified")
        derived.append((source, derive(source, data), len(data)))
    results, new_sources = [], []
    for source, blob, upstream_bytes in derived:
        rel = source.schema or source.default_schema_path()
        target = lock_file(layout).parent / rel
        old = target.read_bytes() if target.is_file() else None
        _write_atomic(target, blob)
        digest = sha256_bytes(blob)
        new_sources.append(replace(source, schema=rel, schema_sha256=digest))
        results.append(Updated(source.kind, source.pin, upstream_bytes, rel, len(blob), digest, old != blob))
    write_lock(layout, new_sources)
    return results


def verify(layout: Layout) -> list[CrdSource]:
    """Check every committed schema against its lock entry; returns the sources, raises on the first mismatch."""
    store = CrdStore(layout)
    for source in store.sources:
        store.document(source)
    return store.sources


def _write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        tmp.replace(path)
        return path
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reading


@dataclass
class CrdStore:
    """The committed schemas of the locked CRDs, verified and parsed on first use.

    One store per validation run (or per test session) avoids re-reading the
    larger schemas for every object, without any module-level cache.
    """

    layout: Layout
    _sources: list[CrdSource] | None = field(default=None, init=False, repr=False)
    _docs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    @property
    def sources(self) -> list[CrdSource]:
        if self._sources is None:
            self._sources = load_lock(self.layout)
        return self._sources

    def source_for(self, group: str, kind: str) -> CrdSource | None:
        return next((s for s in self.sources if s.group == group and s.kind == kind), None)

    def knows_group(self, group: str) -> bool:
        return any(s.group == group for s in self.sources)

    def document(self, source: CrdSource) -> dict[str, Any]:
        """The derived schema file of ``source``, after its sha256 matched the lock."""
        key = (source.group, source.kind)
        if key not in self._docs:
            if not source.schema or not source.schema_sha256:
                raise CrdError(f"{LOCK_FILE} has no derived schema for {source.kind} ({source.group}). "
                               f"Fix: run {UPDATE_COMMAND}")
            path = lock_file(self.layout).parent / source.schema
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise CrdError(f"cannot read the schema of {source.kind} at {path}: {exc.strerror}. Fix: restore "
                               f"it with `git checkout -- {SCHEMA_DIR.parent / source.schema}`, or run "
                               f"{UPDATE_COMMAND}") from None
            actual = sha256_bytes(data)
            if actual != source.schema_sha256:
                raise CrdChecksumMismatch(
                    source, str(path), actual, source.schema_sha256,
                    f"derived schemas are generated, never edited: restore it with "
                    f"`git checkout -- {SCHEMA_DIR.parent / source.schema}`, or regenerate it with {UPDATE_COMMAND}")
            self._docs[key] = json.loads(data)
        return self._docs[key]

    def schema(self, group: str, kind: str, version: str) -> dict[str, Any] | None:
        """``openAPIV3Schema`` of one served version; None if the kind is not locked.

        Raises :class:`CrdVersionError` if the CRD exists but does not serve ``version``.
        """
        source = self.source_for(group, kind)
        if source is None:
            return None
        versions = self.document(source).get("versions", [])
        for entry in versions:
            if entry.get("name") == version:
                if not entry.get("served", False):
                    raise CrdVersionError(f"{kind} {group}/{version} is not served by the pinned CRD. "
                                          "Fix: use one of "
                                          f"{', '.join(v['name'] for v in versions if v.get('served'))}")
                return entry.get("openAPIV3Schema", {})
        raise CrdVersionError(f"{kind} has no version {version} in the pinned CRD. "
                              f"Fix: use one of {', '.join(v.get('name', '?') for v in versions)}")
