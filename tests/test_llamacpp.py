"""llama-server is built from a verified source for the CPU's level: options, keying, progress and refusals."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from inferbook import cpu
from inferbook.layers.serving import llamacpp
from inferbook.layers.serving.models import _sha256

DATA = Path(__file__).parent / "data" / "cpuinfo"


def machine(name: str, arch: str = "x86_64") -> cpu.CpuInfo:
    model, flags = cpu.parse_cpuinfo((DATA / name).read_text())
    return cpu.CpuInfo(model, arch, flags, 2, 24.0)


def test_each_cpu_level_gets_its_own_build_folder(tmp_path: Path) -> None:
    avx2, zen4 = llamacpp.level_for(machine("avx2-epyc.txt")), llamacpp.level_for(machine("avx512-bf16-zen4.txt"))
    assert (avx2, zen4) == ("avx2", "avx512-bf16")
    assert llamacpp.build_for(tmp_path, avx2).folder != llamacpp.build_for(tmp_path, zen4).folder
    assert llamacpp.level_for(machine("arm-neoverse-v1.txt", arch="aarch64")) == "native-aarch64"


def test_an_avx2_build_never_uses_native_or_avx512_instructions() -> None:
    options = llamacpp.cmake_options("avx2")
    assert "-DGGML_NATIVE=OFF" in options and "-DGGML_AVX2=ON" in options and "-DGGML_FMA=ON" in options
    assert "-DGGML_AVX512=OFF" in options and "-DGGML_AVX512_BF16=OFF" in options
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in options and "-DLLAMA_CURL=OFF" in options  # nothing reaches the network
    baseline = llamacpp.cmake_options("x86-64")
    assert "-DGGML_AVX=OFF" in baseline and "-DGGML_SSE42=OFF" in baseline
    assert "-DGGML_AVX512_BF16=ON" in llamacpp.cmake_options("avx512-bf16")
    with pytest.raises(llamacpp.EngineBuildError, match="no llama-server build level 'avx9'"):
        llamacpp.cmake_options("avx9")


@pytest.mark.parametrize(("line", "fraction"), [
    ("[42/206] Building CXX object src/llama.cpp.o", 42 / 206),
    ("[ 45%] Building CXX object common/chat.cpp.o", 0.45),
    ("-- Configuring done", None),
])
def test_build_progress_is_read_from_ninja_and_make_lines(line: str, fraction: float | None) -> None:
    assert llamacpp.progress(line) == (pytest.approx(fraction) if fraction is not None else None)


def _sdist(folder: Path, files: dict[str, bytes]) -> Path:
    path = folder / llamacpp.SDIST_NAME
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_a_source_with_another_checksum_is_refused_before_unpacking(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path, {"llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt": b"project(x)\n"})
    with pytest.raises(llamacpp.EngineBuildError, match="refusing to build unverified source"):
        llamacpp.unpack_verified(sdist, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_only_the_vendored_llama_cpp_is_unpacked_from_a_verified_source(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path, {"llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt": b"project(x)\n",
                              "llama_cpp_python-0.3.36/llama_cpp/__init__.py": b"import os\n"})
    source = llamacpp.unpack_verified(sdist, tmp_path / "out", expected=_sha256(sdist))
    assert (source / "CMakeLists.txt").read_bytes() == b"project(x)\n"
    assert not (tmp_path / "out" / "llama_cpp_python-0.3.36" / "llama_cpp").exists()


def test_a_source_without_llama_cpp_is_refused(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path, {"llama_cpp_python-0.3.36/README.md": b"hi\n"})
    with pytest.raises(llamacpp.EngineBuildError, match="has no vendor/llama.cpp"):
        llamacpp.unpack_verified(sdist, tmp_path / "out", expected=_sha256(sdist))
