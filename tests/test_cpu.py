"""The CPU is read, not assumed: detection from recorded /proc/cpuinfo texts, and the precision chosen from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferbook import cpu
from inferbook.layers.serving import launch_spec
from inferbook.paths import Layout
from inferbook.profile import load_profile
from inferbook.secrets import SecretStore

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "cpuinfo"


def machine(name: str, arch: str = "x86_64") -> cpu.CpuInfo:
    model, flags = cpu.parse_cpuinfo((DATA / name).read_text())
    return cpu.CpuInfo(model, arch, flags, 2, 24.0)


def test_an_avx2_only_cpu_has_no_bf16_units_and_gets_float32() -> None:
    epyc = machine("avx2-epyc.txt")
    assert epyc.model == "AMD EPYC 7B12" and epyc.has("avx2", "fma") and not epyc.has("avx512f")
    assert not epyc.bf16_native and epyc.isa_level == "avx2"
    chosen = cpu.choose_dtype(epyc)
    assert chosen.dtype == "float32" and "no bf16 units" in chosen.reason


def test_a_cpu_with_avx512_bf16_gets_bfloat16() -> None:
    zen4 = machine("avx512-bf16-zen4.txt")
    assert zen4.bf16_native and zen4.isa_level == "avx512-bf16"
    chosen = cpu.choose_dtype(zen4)
    assert chosen.dtype == "bfloat16" and "avx512_bf16" in chosen.reason


def test_arm_features_are_read_and_its_bf16_counts() -> None:
    arm = machine("arm-neoverse-v1.txt", arch="aarch64")
    assert arm.has("asimd", "sve") and arm.bf16_native and arm.isa_level == "aarch64"
    assert cpu.choose_dtype(arm).dtype == "bfloat16"


def test_the_profile_overrides_the_machine_and_is_warned_when_bf16_is_emulated() -> None:
    epyc = machine("avx2-epyc.txt")
    forced = cpu.choose_dtype(epyc, "bfloat16")
    assert forced.dtype == "bfloat16" and "serving.dtype" in forced.reason and "no bf16 units" in forced.reason
    assert cpu.choose_dtype(machine("avx512-bf16-zen4.txt"), "float32").dtype == "float32"
    with pytest.raises(ValueError, match="not one of auto, bfloat16"):
        cpu.choose_dtype(epyc, "int4")


def test_a_cpu_without_flags_assumes_nothing(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Mystery\n")
    found = cpu.detect(tmp_path / "cpuinfo")
    assert found.model == "Mystery" and not found.flags and not found.bf16_native and found.cores >= 1
    table = found.table()
    assert table.loc["AVX2", "value"] == "no" and table.loc["bf16 in hardware", "value"] == "no"


def test_this_machine_is_detected_from_its_own_cpuinfo() -> None:
    found = cpu.detect()
    assert found.cores >= 1 and found.memory_gib > 0
    if Path("/proc/cpuinfo").is_file():
        assert found.flags, "a Linux /proc/cpuinfo lists flags (x86) or Features (Arm)"


@pytest.mark.parametrize(("cpuinfo", "override", "expected"), [
    ("avx2-epyc.txt", {}, "float32"),
    ("avx512-bf16-zen4.txt", {}, "bfloat16"),
    ("avx2-epyc.txt", {"serving.dtype": "bfloat16"}, "bfloat16"),
])
def test_the_local_launch_runs_the_precision_chosen_for_its_cpu(tmp_path: Path, cpuinfo: str, override: dict,
                                                                 expected: str) -> None:
    profile = load_profile("local", overrides=override)
    spec = launch_spec(profile, Layout(ROOT, tmp_path), Path("/models/x"), Path("/venv/bin/python"),
                       SecretStore("local", tmp_path / "secrets"), tmp_path, machine=machine(cpuinfo))
    assert [a for a in spec.argv if a.startswith("--dtype=")] == [f"--dtype={expected}"]
    assert spec.precision.dtype == expected


def test_a_profile_dtype_is_rendered_for_a_cluster_too(tmp_path: Path) -> None:
    from inferbook import manifests as m
    from inferbook.layers.serving import MANIFESTS

    for name, dtype in (("kind", "float32"), ("gke-l4", "float16")):
        objects = MANIFESTS.render(load_profile(name, overrides={"serving.dtype": dtype}), Layout(ROOT, tmp_path))
        vllm = m.container(m.find(objects, "Deployment", "vllm"), "vllm")
        assert m.arg_value(vllm["args"], "--dtype") == dtype
