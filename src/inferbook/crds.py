"""CRD sourcing: find each pinned CustomResourceDefinition, prove it is the pinned file, load its schema.

Custom resources (ServiceMonitor, InferenceService, ...) are validated offline
against their CRD's ``openAPIV3Schema``. The CRD files are large upstream
artefacts, so the repository holds only a catalogue (``manifests/crds.lock.yaml``:
repository, tag, path and sha256 of each file) and this module finds the bytes:

1. ``$INFERBOOK_CRDS_DIR`` (a folder laid out like ``../shared/crds``),
2. ``../shared/crds`` next to the checkout,
3. the user cache (``~/.cache/inferbook/crds/<repo>/<tag>/<path>``),
4. a download from ``https://raw.githubusercontent.com/<repo>/<tag>/<path>`` into that cache.

Whatever the source, the file's sha256 must equal the pinned one; a mismatch is
an error, never a fallback to the next source, because it means someone supplied
a different version than the one the manifests were written against.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InferbookError
from .paths import Layout, default_cache_dir

#: Where upstream files are downloaded from; a parameter everywhere, so tests can serve a double.
GITHUB_RAW = "https://raw.githubusercontent.com"
#: Environment variable naming a folder of CRD files laid out like ``../shared/crds``.
ENV_DIR = "INFERBOOK_CRDS_DIR"
DOWNLOAD_TIMEOUT_SECONDS = 60.0

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KServe CRD is ~2 MB: use libyaml when present


class CrdError(InferbookError):
    """A pinned CRD could not be found, fetched or read."""


class CrdVersionError(CrdError):
    """An object asks for a version its (pinned) CRD does not define or serve: a manifest problem."""


class CrdChecksumMismatch(CrdError):
    """A CRD file's bytes differ from the pinned sha256."""

    def __init__(self, source: "CrdSource", where: str, actual: str) -> None:
        self.source = source
        self.where = where
        self.actual = actual
        super().__init__(
            f"CRD {source.kind} ({source.group}) at {where} has sha256 {actual}, but "
            f"manifests/crds.lock.yaml pins {source.sha256} ({source.repo}@{source.tag}:{source.path}). "
            f"Fix: replace that file with the upstream file at tag {source.tag} (or delete it from the cache "
            f"to download it again); if the tag was bumped on purpose, update sha256 in crds.lock.yaml"
        )


@dataclass(frozen=True)
class CrdSource:
    """One catalogue entry: which upstream file defines a kind, and its checksum."""

    group: str
    kind: str
    repo: str
    tag: str
    path: str
    local_path: str
    sha256: str

    def url(self, base_url: str = GITHUB_RAW) -> str:
        return f"{base_url.rstrip('/')}/{self.repo}/{self.tag}/{self.path}"

    def cache_file(self, cache_dir: Path) -> Path:
        """Cache location keyed by repo and tag, so bumping a tag never reuses the old file."""
        return cache_dir / self.repo / self.tag / self.path


def catalogue_file(layout: Layout) -> Path:
    return layout.root / "manifests" / "crds.lock.yaml"


def load_catalogue(layout: Layout) -> list[CrdSource]:
    """The pinned CRDs of this checkout (``manifests/crds.lock.yaml``)."""
    path = catalogue_file(layout)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise CrdError(f"cannot read the CRD catalogue {path}: {exc}. Fix: restore it from git") from None
    fields = ("group", "kind", "repo", "tag", "path", "local_path", "sha256")
    sources = []
    for i, entry in enumerate(data.get("crds") or []):
        missing = [f for f in fields if not isinstance(entry, dict) or not entry.get(f)]
        if missing:
            raise CrdError(f"{path}: entry {i} lacks {', '.join(missing)}. Fix: give every entry {', '.join(fields)}")
        sources.append(CrdSource(**{f: str(entry[f]) for f in fields}))
    return sources


def search_dirs(layout: Layout) -> list[tuple[str, Path]]:
    """Folders laid out like ``../shared/crds``, in lookup order, with a label for messages."""
    dirs = []
    env = os.environ.get(ENV_DIR)
    if env:
        dirs.append((f"${ENV_DIR}", Path(env)))
    dirs.append(("../shared/crds", layout.root.parent / "shared" / "crds"))
    return dirs


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(source: CrdSource, path: Path, where: str) -> Path:
    actual = sha256_of(path)
    if actual != source.sha256:
        raise CrdChecksumMismatch(source, where, actual)
    return path


def locate(source: CrdSource, layout: Layout, *, cache_dir: Path | None = None,
           base_url: str = GITHUB_RAW, timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> Path:
    """The verified local file of one CRD, downloading it into the cache if no copy exists."""
    for label, folder in search_dirs(layout):
        candidate = folder / source.local_path
        if candidate.is_file():
            return _verified(source, candidate, f"{candidate} (from {label})")
    cache = (cache_dir or default_cache_dir() / "crds")
    cached = source.cache_file(cache)
    if cached.is_file():
        return _verified(source, cached, f"{cached} (cache)")
    return download(source, cached, base_url=base_url, timeout=timeout)


def download(source: CrdSource, dest: Path, *, base_url: str = GITHUB_RAW,
             timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> Path:
    """Fetch one CRD to ``dest``; the file only appears there once its sha256 matched."""
    url = source.url(base_url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https or a test double)
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise CrdError(
                    f"cannot download CRD {source.kind} from {url}: {getattr(exc, 'reason', exc)}. "
                    f"Fix: connect to the internet once (the file is cached afterwards), or put the file at "
                    f"$INFERBOOK_CRDS_DIR/{source.local_path} or ../shared/crds/{source.local_path}"
                ) from None
        _verified(source, tmp, f"{url} (download)")
        tmp.replace(dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class CrdStore:
    """Schemas of the catalogued CRDs, loaded on first use and kept for this store's lifetime.

    One store per validation run (or per test module) avoids re-reading a 2 MB CRD for every
    object without any module-level cache.
    """

    layout: Layout
    cache_dir: Path | None = None
    base_url: str = GITHUB_RAW
    timeout: float = DOWNLOAD_TIMEOUT_SECONDS
    _sources: list[CrdSource] | None = field(default=None, init=False, repr=False)
    _docs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    @property
    def sources(self) -> list[CrdSource]:
        if self._sources is None:
            self._sources = load_catalogue(self.layout)
        return self._sources

    def source_for(self, group: str, kind: str) -> CrdSource | None:
        return next((s for s in self.sources if s.group == group and s.kind == kind), None)

    def knows_group(self, group: str) -> bool:
        return any(s.group == group for s in self.sources)

    def crd(self, group: str, kind: str) -> dict[str, Any] | None:
        """The parsed CRD document of ``kind`` in ``group``, or None if it is not catalogued."""
        key = (group, kind)
        if key not in self._docs:
            source = self.source_for(group, kind)
            if source is None:
                return None
            path = locate(source, self.layout, cache_dir=self.cache_dir, base_url=self.base_url, timeout=self.timeout)
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                raise CrdError(f"{path} is not a CustomResourceDefinition. Fix: check local_path in crds.lock.yaml")
            self._docs[key] = doc
        return self._docs[key]

    def schema(self, group: str, kind: str, version: str) -> dict[str, Any] | None:
        """``openAPIV3Schema`` of one served version; None if the kind is not catalogued.

        Raises :class:`CrdVersionError` if the CRD exists but does not serve ``version``.
        """
        doc = self.crd(group, kind)
        if doc is None:
            return None
        versions = doc.get("spec", {}).get("versions", [])
        for entry in versions:
            if entry.get("name") == version:
                if not entry.get("served", False):
                    raise CrdVersionError(f"{kind} {group}/{version} is not served by the pinned CRD. "
                                   f"Fix: use one of {', '.join(v['name'] for v in versions if v.get('served'))}")
                return entry.get("schema", {}).get("openAPIV3Schema", {})
        raise CrdVersionError(f"{kind} has no version {version} in the pinned CRD. "
                       f"Fix: use one of {', '.join(v.get('name', '?') for v in versions)}")
