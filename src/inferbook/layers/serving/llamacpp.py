"""llama.cpp's own server (``llama-server``), built once per machine from a pinned, verified source.

Why llama.cpp beside vLLM: a quantised GGUF (the coder's Q4_K_M is 1.1 GB) decodes from its 4-bit blocks, while
vLLM-CPU needs the weights dequantised (6 GB in fp32 for the 1.5B coder); decode is memory-bound, so on two CPU
cores the GGUF decodes about six times faster (9.2 vs 1.5 tokens/s measured). ``llama-server`` speaks the OpenAI
API (chat, completions with raw FIM tokens, tool calls from the model's chat template with ``--jinja``), exposes
Prometheus metrics and keeps a prompt cache per slot across an agent's turns.

No registry ships a ``llama-server`` binary we can cite, but PyPI ships llama-cpp-python's source distribution,
which vendors llama.cpp whole (``vendor/llama.cpp``, ``tools/server`` included). So the sdist is the pin: fetched
from the package index, checked against :data:`SDIST_SHA256` before a byte of it is built, and compiled with
CMake into the user's cache. The build targets the CPU's instruction-set level (:data:`inferbook.cpu.ISA_LEVELS`)
with ``GGML_NATIVE`` off, so the binary runs on every CPU of that level, and the cache folder is keyed by the
level: a cache carried to a CPU of another level builds again instead of dying on an illegal instruction.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ... import cpu
from ...envs import file_lock
from ...errors import InferbookError
from ...say import Say

#: The source: llama-cpp-python 0.3.36's sdist as PyPI serves it (sha256 of that file; it vendors llama.cpp).
SDIST_PACKAGE = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_NAME = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VENDORED = "vendor/llama.cpp"
BINARY = "llama-server"
COMPLETE = ".inferbook-complete"
#: ggml's instruction-set switches for each ISA level (ggml/CMakeLists.txt); every other one is turned off.
GGML_SWITCHES = ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
                 "AVX512_BF16", "AVX_VNNI", "AMX_TILE", "AMX_INT8", "AMX_BF16")
LEVEL_SWITCHES: dict[str, tuple[str, ...]] = {
    "avx512-bf16": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
                    "AVX512_BF16"),
    "avx512": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512"),
    "avx2": ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"),
    "x86-64": (),
}
#: Everything that reaches the network or builds what the server does not need stays off.
BASE_OPTIONS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_SERVER=ON",
                "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF",
                "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF")
PROGRESS = re.compile(r"^\[\s*(\d+)/(\d+)\]|^\[\s*(\d+)%\]")


class EngineBuildError(InferbookError):
    """llama-server could not be fetched, verified or built."""


@dataclass(frozen=True)
class Build:
    """One build of llama-server: where it lives and what it was built for."""

    folder: Path
    level: str

    @property
    def binary(self) -> Path:
        return self.folder / "bin" / BINARY

    @property
    def ready(self) -> bool:
        return (self.folder / COMPLETE).is_file() and self.binary.is_file()

    def record(self) -> dict[str, object]:
        """What the build recorded (source, its checksum, the level and switches, the time it took)."""
        path = self.folder / "BUILD.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def level_for(machine: cpu.CpuInfo) -> str:
    """The build level for ``machine``: its ISA level on x86-64, ``native-<arch>`` elsewhere (built for that CPU)."""
    level = machine.isa_level
    return level if level in LEVEL_SWITCHES else f"native-{level}"


def cmake_options(level: str) -> list[str]:
    """CMake's options for a build of ``level``: the base set, ``GGML_NATIVE`` off and each switch on or off."""
    if level.startswith("native-"):
        return [*BASE_OPTIONS, "-DGGML_NATIVE=ON"]
    if level not in LEVEL_SWITCHES:
        raise EngineBuildError(f"no llama-server build level '{level}'; the levels are {', '.join(LEVEL_SWITCHES)}")
    on = set(LEVEL_SWITCHES[level])
    return [*BASE_OPTIONS, "-DGGML_NATIVE=OFF", *(f"-DGGML_{s}={'ON' if s in on else 'OFF'}" for s in GGML_SWITCHES)]


def build_for(cache_dir: Path, level: str) -> Build:
    """Where the build of ``level`` lives in ``cache_dir`` (it may not exist yet)."""
    return Build(cache_dir / "engines" / f"llama-server-{SDIST_VERSION}-{level}", level)


def ensure(cache_dir: Path, say: Say = print, level: str | None = None) -> Build:
    """A ready llama-server for this CPU (or ``level``), fetched, verified and built the first time."""
    build = build_for(cache_dir, level or level_for(cpu.detect()))
    if build.ready:
        return build
    with file_lock(build.folder.with_suffix(".lock")):
        if build.ready:
            return build
        if build.folder.exists():
            shutil.rmtree(build.folder)  # an interrupted build
        missing = [tool for tool in ("cmake", "c++", "cc") if shutil.which(tool) is None]
        if missing:
            raise EngineBuildError(f"building llama-server needs {', '.join(missing)}, not found on PATH. Fix: "
                                   "apt-get install cmake g++ (make run installs them), then run again")
        build.folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=build.folder.parent, prefix=".build-") as tmp:
            source = fetch_source(Path(tmp), say)
            _compile(source, Path(tmp) / "build", build, say)
    return build


def fetch_source(folder: Path, say: Say = print) -> Path:
    """The vendored llama.cpp of the pinned sdist, downloaded into ``folder`` and verified; its source folder."""
    say(f"fetching {SDIST_PACKAGE}=={SDIST_VERSION}'s source (76 MB) from the package index")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", f"{SDIST_PACKAGE}=={SDIST_VERSION}", "--no-deps",
                           "--no-binary=:all:", "--disable-pip-version-check", "--quiet", "-d", str(folder)],
                          capture_output=True, text=True)
    sdist = folder / SDIST_NAME
    if proc.returncode != 0 or not sdist.is_file():
        raise EngineBuildError(f"could not download {SDIST_NAME} from the package index:\n{proc.stderr[-1500:]}\n"
                               "Fix: make the package index reachable, then run again")
    return unpack_verified(sdist, folder)


def unpack_verified(sdist: Path, folder: Path, expected: str = SDIST_SHA256) -> Path:
    """Check ``sdist`` against ``expected`` and unpack its vendored llama.cpp into ``folder``; refuse on a mismatch."""
    from .models import _sha256

    found = _sha256(sdist)
    if found != expected:
        raise EngineBuildError(f"{sdist.name} has sha256 {found}, expected {expected}; refusing to build unverified "
                               "source. Fix: check the package index you install from")
    top = sdist.name.removesuffix(".tar.gz")
    prefix = f"{top}/{VENDORED}/"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise EngineBuildError(f"{sdist.name} has no {VENDORED}: not the source this build expects")
        archive.extractall(folder, members=members, filter="data")
    return folder / top / VENDORED


def _compile(source: Path, work: Path, build: Build, say: Say) -> None:
    """Configure and build the server target, with a progress line every tenth of the way."""
    options = cmake_options(build.level)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    log = build.folder.parent / f"{build.folder.name}.build.log"
    started = time.monotonic()
    say(f"building llama-server for {build.level} CPUs with {jobs} job(s) (about 10 minutes on two cores; "
        f"once per machine); log {log}")
    with open(log, "w") as out:
        _run(["cmake", "-S", str(source), "-B", str(work), *generator, *options], out, log, say, started)
        _run(["cmake", "--build", str(work), "--target", BINARY, "-j", jobs], out, log, say, started)
    built = next((p for p in (work / "bin" / BINARY, work / BINARY) if p.is_file()), None)
    if built is None:
        raise EngineBuildError(f"the build finished without {BINARY}; see {log}")
    (build.folder / "bin").mkdir(parents=True)
    shutil.copy2(built, build.binary)
    seconds = time.monotonic() - started
    record = {"source": SDIST_NAME, "sha256": SDIST_SHA256, "level": build.level, "cmake_options": options,
              "compiler": _compiler(), "machine": platform.machine(), "build_seconds": round(seconds)}
    (build.folder / "BUILD.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (build.folder / COMPLETE).write_text(BINARY + "\n")
    say(f"llama-server built in {seconds / 60:.1f} min: {build.binary}")


def _run(argv: list[str], out: object, log: Path, say: Say, started: float) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    shown = -1
    for line in proc.stdout:
        out.write(line)  # type: ignore[attr-defined]
        done = progress(line)
        if done is not None and int(done * 10) > shown:
            shown = int(done * 10)
            say(f"  ... {shown * 10}% built, {(time.monotonic() - started) / 60:.1f} min")
    if proc.wait() != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:]) if log.is_file() else ""
        raise EngineBuildError(f"{' '.join(argv[:2])} failed (exit {proc.returncode}); last lines of {log}:\n{tail}\n"
                               "Fix: install a C++17 compiler and CMake >= 3.21 (apt-get install g++ cmake)")


def progress(line: str) -> float | None:
    """The fraction done that a build line reports (Ninja's ``[n/m]``, Make's ``[ nn%]``), else None."""
    match = PROGRESS.match(line)
    if not match:
        return None
    if match.group(3) is not None:
        return int(match.group(3)) / 100
    return int(match.group(1)) / max(int(match.group(2)), 1)


def _compiler() -> str:
    try:
        return subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "unknown"
