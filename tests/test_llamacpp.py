"""llama-server is built from a verified source for the CPU's level: options, keying, progress and refusals."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from inferbook import cpu
from inferbook.layers.serving import llamacpp
from inferbook.layers.serving.models import _sha256

ROOT = Path(__file__).resolve().parents[1]
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


def test_the_local_coder_runs_from_the_rendered_deployment(tmp_path: Path) -> None:
    from inferbook.layers.serving import local_llamacpp
    from inferbook.paths import Layout
    from inferbook.profile import load_profile
    from inferbook.secrets import SecretStore

    profile = load_profile("local", overrides={"local.ports.coder": 8111, "serving.max_model_len": 4096})
    build = llamacpp.build_for(tmp_path, "avx2")
    gguf = tmp_path / "coder.gguf"
    secrets = SecretStore("local", tmp_path / "secrets")
    spec = local_llamacpp.launch_spec(profile, Layout(ROOT, tmp_path), gguf, build, secrets,
                                      machine=machine("avx2-epyc.txt"))
    assert spec.argv == [str(build.binary)]
    env = spec.env
    assert env["LLAMA_ARG_MODEL"] == str(gguf) and env["LLAMA_ARG_ALIAS"] == "qwen2.5-coder-1.5b-instruct"
    assert (env["LLAMA_ARG_HOST"], env["LLAMA_ARG_PORT"], env["LLAMA_ARG_THREADS"]) == ("127.0.0.1", "8111", "2")
    assert env["LLAMA_ARG_CTX_SIZE"] == str(4096 * int(env["LLAMA_ARG_N_PARALLEL"]))  # max_model_len per slot
    assert env["LLAMA_ARG_JINJA"] == "1" and env["LLAMA_ARG_ENDPOINT_METRICS"] == "1"
    assert spec.secret_env == {"LLAMA_API_KEY": "vllm-api-key/api-key"}
    shown = spec.table().to_string()
    assert env["LLAMA_API_KEY"] not in shown and "(from secret vllm-api-key/api-key)" in shown


def test_a_profile_without_a_coder_runs_no_llama_server(tmp_path: Path) -> None:
    from inferbook.layers import serving
    from inferbook.paths import Layout
    from inferbook.profile import load_profile

    profile = load_profile("local-coder")
    assert "llamacpp" not in serving.MANIFESTS.selection(profile).component_names
    assert serving.LocalServing(profile, Layout(ROOT, tmp_path), cache_dir=tmp_path).coder is None


def test_a_coder_beside_a_gpu_is_refused_naming_the_fix() -> None:
    from inferbook.errors import ProfileError
    from inferbook.profile import load_profile

    with pytest.raises(ProfileError, match="with a GPU vLLM serves the coder"):
        load_profile("gke-l4", overrides={"models.coder": {"id": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
                                                           "served_name": "coder"}})
