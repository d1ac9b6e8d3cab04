"""What this machine's CPU can do, read from the kernel rather than assumed.

The machines this book runs on differ: most x86-64 CPUs have AVX2 and nothing wider, some have AVX-512 with
bf16 dot products (``avx512_bf16``) or Intel's AMX tiles. Which engine build and which precision serve a model
fastest depends on that: on a CPU without bf16 units vLLM-CPU's bf16 path emulates each product and prefill runs
at about a quarter of fp32 (measured: 22.7 vs 99.1 prompt tokens/s on SmolLM2-135M, two AVX2 cores), while on a
CPU with them bf16 halves the memory traffic of decode. So the choice is made here, from ``/proc/cpuinfo``, and
shown by the serving chapter; a profile can still override it (``serving.dtype``).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil

CPUINFO = Path("/proc/cpuinfo")
#: The precisions a profile may ask vLLM for (``serving.dtype``); ``auto`` lets the machine decide.
DTYPES = ("auto", "bfloat16", "float32", "float16")
#: Flags that give bf16 arithmetic in hardware: AVX-512 BF16 (Cooper Lake, Sapphire Rapids, Zen 4 and later),
#: AMX's bf16 tiles, and Arm's BF16 extension.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
#: The ISA levels an engine build can target, widest first: (name, flags the CPU must have).
ISA_LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("avx512-bf16", ("avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512vbmi", "avx512_bf16")),
    ("avx512", ("avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl")),
    ("avx2", ("avx2", "fma", "f16c", "bmi2")),
    ("x86-64", ()),
)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, instruction-set flags, usable cores and memory."""

    model: str
    arch: str
    flags: frozenset[str]
    cores: int
    memory_gib: float

    def has(self, *flags: str) -> bool:
        """Whether the CPU has every one of ``flags`` (names as ``/proc/cpuinfo`` spells them)."""
        return all(flag in self.flags for flag in flags)

    @property
    def bf16_native(self) -> bool:
        """Whether bf16 products run in hardware (rather than converted to fp32 one by one)."""
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def isa_level(self) -> str:
        """The widest :data:`ISA_LEVELS` entry this CPU runs (``x86-64`` is the floor; other architectures: arch)."""
        if self.arch not in ("x86_64", "AMD64"):
            return self.arch
        return next(name for name, needs in ISA_LEVELS if self.has(*needs))

    def table(self) -> pd.DataFrame:
        """The CPU as the serving chapter shows it: what was detected, flag by flag."""
        def yes(*flags: str) -> str:
            return "yes" if self.has(*flags) else "no"

        rows = [("CPU", self.model), ("architecture", self.arch), ("cores usable", self.cores),
                ("memory", f"{self.memory_gib:.1f} GiB"), ("AVX2", yes("avx2")), ("AVX-512", yes("avx512f")),
                ("AVX-512 BF16", yes("avx512_bf16")), ("AMX (bf16 tiles)", yes("amx_bf16")),
                ("bf16 in hardware", "yes" if self.bf16_native else "no"), ("ISA level", self.isa_level)]
        return pd.DataFrame(rows, columns=["detected", "value"]).set_index("detected")


@dataclass(frozen=True)
class Precision:
    """The dtype vLLM-CPU is started with, and why (a sentence a reader can check against the CPU table)."""

    dtype: str
    reason: str


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The model name and flags of the first processor in ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
        if line.strip() == "" and model and flags:
            break
    return model or "unknown", flags


def detect(cpuinfo: Path = CPUINFO) -> CpuInfo:
    """This machine's CPU; cores are the ones this process may run on (a container's or taskset's share)."""
    try:
        model, flags = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:  # not Linux: no flags to read, so nothing is assumed present
        model, flags = platform.processor() or "unknown", frozenset()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return CpuInfo(model, platform.machine(), flags, cores, psutil.virtual_memory().total / 1024**3)


def choose_dtype(cpu: CpuInfo, requested: str = "auto") -> Precision:
    """The dtype for vLLM on this CPU: the profile's when it names one, else bf16 only where the hardware has it."""
    if requested not in DTYPES:
        raise ValueError(f"serving.dtype '{requested}' is not one of {', '.join(DTYPES)}")
    if requested != "auto":
        note = ""
        if requested == "bfloat16" and not cpu.bf16_native:
            note = "; this CPU has no bf16 units, so expect prefill at about a quarter of float32"
        return Precision(requested, f"set by the profile (serving.dtype: {requested}){note}")
    if cpu.bf16_native:
        found = next(flag for flag in BF16_FLAGS if flag in cpu.flags)
        return Precision("bfloat16", f"the CPU computes bf16 in hardware ({found}): half the memory traffic of "
                                     "float32 at the same arithmetic speed")
    return Precision("float32", "the CPU has no bf16 units (no avx512_bf16 or amx_bf16): bf16 would be emulated, "
                                "prefill about 4x slower than float32")
