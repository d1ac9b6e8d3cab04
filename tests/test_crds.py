"""CRD schemas: committed, verified against their lock, regenerated only from verified upstream files.

Nothing here reads ../shared or the network: the upstream side is a small CRD
written by the test, served from a folder or by an HTTP double of GitHub.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from inferbook import crds, layers, load_profile
from inferbook.crds import CrdChecksumMismatch, CrdError, CrdStore, load_lock, sha256_bytes
from inferbook.paths import Layout
from inferbook.profile import list_profiles
from inferbook.validate import validate

from .conftest import ROOT, run_cli

#: A small CRD in the upstream form: prose everywhere, a field literally named `description`, markers.
WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "names": {"kind": "Widget", "plural": "widgets"},
        "scope": "Namespaced",
        "versions": [
            {"name": "v1alpha1", "served": False, "storage": False,
             "schema": {"openAPIV3Schema": {"type": "object", "description": "old"}}},
            {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object",
                "description": "Widget is a test resource.",
                "properties": {
                    "apiVersion": {"type": "string", "description": "APIVersion defines..."},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "spec": {
                        "type": "object",
                        "description": "Spec of the widget.",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "default": 3, "description": "How many."},
                            "mode": {"type": "string", "enum": ["fast", "slow"], "example": "fast"},
                            "description": {"type": "string", "pattern": "^[a-z ]*$", "title": "free text"},
                            "port": {"x-kubernetes-int-or-string": True, "anyOf": [
                                {"type": "integer", "description": "a number"}, {"type": "string"}]},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                        "x-kubernetes-validations": [{"rule": "self.size < 100", "message": "too big"}],
                    },
                },
            }}},
        ],
    },
}


def _lock_entry(upstream: bytes, **overrides: str) -> dict[str, str]:
    entry = {"group": "example.com", "kind": "Widget", "repo": "example/widgets", "tag": "v1.2.3",
             "path": "config/crd/example.com_widgets.yaml", "local_path": "widgets/example.com_widgets.yaml",
             "upstream_sha256": hashlib.sha256(upstream).hexdigest()}
    entry.update(overrides)
    return entry


@pytest.fixture
def project(tmp_path: Path) -> tuple[Layout, Path, bytes]:
    """A checkout with one locked CRD (not yet derived) and, beside it, a folder with its upstream file."""
    root = tmp_path / "clone"
    (root / "manifests").mkdir(parents=True)
    upstream = yaml.safe_dump(WIDGET_CRD).encode()
    (root / "manifests" / "crds.lock.yaml").write_text(yaml.safe_dump({"crds": [_lock_entry(upstream)]}))
    folder = tmp_path / "upstream"
    (folder / "widgets").mkdir(parents=True)
    (folder / "widgets" / "example.com_widgets.yaml").write_bytes(upstream)
    return Layout(root=root, build_dir=tmp_path / "build"), folder, upstream


def _keywords(node: Any, found: set[str]) -> set[str]:
    """Every keyword used in schema position (property names excluded)."""
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            if key == "properties":
                for child in value.values():
                    _keywords(child, found)
            else:
                _keywords(value, found)
    elif isinstance(node, list):
        for item in node:
            _keywords(item, found)
    return found


# --------------------------------------------------------------------------- the committed schemas


def test_every_locked_crd_has_a_committed_schema_matching_its_lock(layout: Layout) -> None:
    sources = crds.verify(layout)
    assert {(s.group, s.kind) for s in sources} >= {("monitoring.coreos.com", "ServiceMonitor"),
                                                    ("serving.kserve.io", "InferenceService"),
                                                    ("postgresql.cnpg.io", "Cluster"),
                                                    ("external-secrets.io", "ExternalSecret")}
    for source in sources:
        path = ROOT / "manifests" / source.schema
        assert path.is_file() and sha256_bytes(path.read_bytes()) == source.schema_sha256
        doc = json.loads(path.read_text())
        assert doc["source"] == {"repo": source.repo, "tag": source.tag, "path": source.path,
                                 "sha256": source.upstream_sha256}
        assert "description" not in _keywords([v["openAPIV3Schema"] for v in doc["versions"]], set())


def test_committed_schemas_are_a_fraction_of_the_upstream_size(layout: Layout) -> None:
    """The KServe CRD is about 2 MB upstream; stripped of prose it must stay well under half of that."""
    kserve = next(s for s in load_lock(layout) if s.kind == "InferenceService")
    assert (ROOT / "manifests" / kserve.schema).stat().st_size < 1_000_000


def _refuse_network(monkeypatch: pytest.MonkeyPatch, attempts: list[str]) -> None:
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not str(address[0]).startswith("127."):
            attempts.append(f"connect {address}")
            raise OSError("network refused by the test")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            attempts.append(f"dns {host}")
            raise socket.gaierror(socket.EAI_NONAME, "network refused by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_validation_passes_with_the_network_refused_and_no_shared_folder(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    clone = tmp_path / "fresh" / "inferbook"  # nothing beside it: no ../shared
    for part in ("manifests", "profiles"):
        shutil.copytree(ROOT / part, clone / part)
    shutil.copy(ROOT / "_toc.yml", clone / "_toc.yml")
    assert not (clone.parent / "shared").exists()
    monkeypatch.delenv("INFERBOOK_CRDS_DIR", raising=False)
    attempts: list[str] = []
    _refuse_network(monkeypatch, attempts)
    forker = Layout(root=clone, build_dir=tmp_path / "build")
    store = CrdStore(forker)
    kinds: set[str] = set()
    for name in list_profiles(forker):
        profile = load_profile(name, layout=forker)
        for layer in [each.name for each in layers.enabled(profile)]:
            report = validate(layers.render(layer, profile, forker), forker, crds=store)
            assert report.failures == [], f"{name}/{layer}: {report.failures}"
            kinds |= {f.kind for f in report.findings if "CRD" in f.message}
    # custom resources were checked, not skipped
    assert {"ServiceMonitor", "Cluster", "ExternalSecret", "InferencePool", "HTTPRoute"} <= kinds
    assert attempts == []


def test_a_hand_edited_schema_fails_against_its_lock_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "manifests", clone / "manifests")
    forker = Layout(root=clone, build_dir=tmp_path / "build")
    source = next(s for s in load_lock(forker) if s.kind == "ServiceMonitor")
    path = clone / "manifests" / source.schema
    doc = json.loads(path.read_text())
    doc["versions"][0]["openAPIV3Schema"]["properties"]["spec"]["properties"]["endpoints"]["type"] = "object"
    path.write_text(json.dumps(doc))
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
               "spec": {"endpoints": [], "selector": {}}}
    with pytest.raises(CrdChecksumMismatch) as info:
        validate([monitor], forker, crds=CrdStore(forker))
    message = str(info.value)
    assert str(path) in message and source.schema_sha256 in message
    assert f"git checkout -- manifests/{source.schema}" in message and "inferbook crds update" in message


def test_crds_verify_cli_reports_the_checked_schemas_and_fails_on_a_missing_one(tmp_path: Path) -> None:
    result = run_cli("crds", "verify")
    assert result.returncode == 0 and "ServiceMonitor" in result.stdout and "match" in result.stdout
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "manifests", clone / "manifests")
    shutil.copytree(ROOT / "profiles", clone / "profiles")
    shutil.copy(ROOT / "_toc.yml", clone / "_toc.yml")
    source = load_lock(Layout(root=clone, build_dir=tmp_path / "build"))[0]
    (clone / "manifests" / source.schema).unlink()
    result = run_cli("crds", "verify", cwd=clone)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"git checkout -- manifests/{source.schema}" in result.stderr


# --------------------------------------------------------------------------- regeneration


def test_update_from_a_folder_writes_the_structural_schema_and_its_checksum(
        project: tuple[Layout, Path, bytes]) -> None:
    layout, folder, _ = project
    (result,) = crds.update(layout, from_dir=folder, say=lambda _: None)
    assert result.changed and result.schema == "crds/example.com_widgets.json"
    (source,) = load_lock(layout)
    path = layout.root / "manifests" / source.schema
    assert source.schema_sha256 == sha256_bytes(path.read_bytes()) == result.schema_sha256
    doc = json.loads(path.read_text())
    assert [(v["name"], v["served"]) for v in doc["versions"]] == [("v1alpha1", False), ("v1", True)]
    spec = doc["versions"][1]["openAPIV3Schema"]["properties"]["spec"]
    used = _keywords(doc["versions"], set())
    assert not used & {"description", "title", "example", "default"}  # prose gone from keyword positions
    assert set(spec["properties"]) == {"size", "mode", "description",  # a field named description stays
                                       "port", "extra"}
    assert spec["required"] == ["size"] and spec["properties"]["size"]["minimum"] == 1
    assert spec["properties"]["mode"]["enum"] == ["fast", "slow"]
    assert spec["properties"]["description"]["pattern"] == "^[a-z ]*$"
    assert spec["properties"]["port"]["x-kubernetes-int-or-string"] is True
    assert spec["x-kubernetes-validations"] == [{"rule": "self.size < 100", "message": "too big"}]
    # Validation reads it: a good object passes, a typo and a wrong enum fail.
    store = CrdStore(layout)
    good = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": 2, "mode": "fast", "description": "ok", "port": "http", "extra": {"any": 1}}}
    assert validate([good], layout, crds=store).findings[0].status == "ok"
    bad = {**good, "spec": {"size": 2, "mode": "medium", "sise": 1}}
    finding = validate([bad], layout, crds=store).findings[0]
    assert finding.status == "fail" and "sise" in finding.message and "medium" in finding.message
    served_not = {**good, "apiVersion": "example.com/v1alpha1"}
    assert "not served" in validate([served_not], layout, crds=store).findings[0].message
    # A second update from the same bytes changes nothing.
    (again,) = crds.update(layout, from_dir=folder, say=lambda _: None)
    assert not again.changed and again.schema_sha256 == source.schema_sha256


def test_update_refuses_a_mismatched_upstream_before_writing_anything(project: tuple[Layout, Path, bytes]) -> None:
    layout, folder, upstream = project
    lock = layout.root / "manifests" / "crds.lock.yaml"
    second = _lock_entry(upstream, kind="Gadget", local_path="gadgets/example.com_gadgets.yaml")
    (folder / "gadgets").mkdir()
    (folder / "gadgets" / "example.com_gadgets.yaml").write_bytes(upstream + b"# a different release\n")
    lock.write_text(yaml.safe_dump({"crds": [yaml.safe_load(lock.read_text())["crds"][0], second]}))
    before = lock.read_bytes()
    with pytest.raises(CrdChecksumMismatch) as info:
        crds.update(layout, from_dir=folder, say=lambda _: None)
    assert "Gadget" in str(info.value) and second["upstream_sha256"] in str(info.value)
    assert lock.read_bytes() == before
    assert not (layout.root / "manifests" / "crds").exists()  # not even the first, verified one


def test_update_names_a_missing_upstream_file_and_the_fix(project: tuple[Layout, Path, bytes], tmp_path: Path) -> None:
    layout, _, _ = project
    with pytest.raises(CrdError) as info:
        crds.update(layout, from_dir=tmp_path / "empty", say=lambda _: None)
    assert "widgets/example.com_widgets.yaml" in str(info.value) and "--from" in str(info.value)


def test_validation_before_any_update_says_to_run_it(project: tuple[Layout, Path, bytes]) -> None:
    layout, _, _ = project
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    with pytest.raises(CrdError, match="inferbook crds update"):
        validate([widget], layout, crds=CrdStore(layout))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def github_double(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP double of raw.githubusercontent.com serving a folder as <repo>/<tag>/<path>."""
    root = tmp_path / "srv"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_update_downloads_by_the_pinned_tag_and_verifies_it(project: tuple[Layout, Path, bytes],
                                                            github_double: tuple[str, Path]) -> None:
    layout, _, upstream = project
    base_url, served = github_double
    (source,) = load_lock(layout)
    file = served / source.repo / source.tag / source.path
    file.parent.mkdir(parents=True)
    file.write_bytes(upstream)
    lines: list[str] = []
    (result,) = crds.update(layout, base_url=base_url, say=lines.append)
    assert result.changed and "sha256 verified" in lines[0] and f"/{source.tag}/" in lines[0]
    file.write_bytes(upstream.replace(b"Widget is a test resource.", b"Widget, tampered."))
    with pytest.raises(CrdChecksumMismatch, match="download"):
        crds.update(layout, base_url=base_url, say=lambda _: None)


def test_unreachable_download_says_how_to_work_offline(project: tuple[Layout, Path, bytes]) -> None:
    layout, _, _ = project
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CrdError, match="--from DIR") as info:
        crds.update(layout, base_url=f"http://127.0.0.1:{port}", timeout=5, say=lambda _: None)
    assert "widgets/example.com_widgets.yaml" in str(info.value)
