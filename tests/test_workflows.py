"""The CI workflows under .github/workflows/: valid GitHub Actions workflows, checked offline.

check-jsonschema vendors SchemaStore's github-workflow schema (``--builtin-schema vendor.github-workflows``), so
no network is needed; the controls below prove the check rejects a broken workflow. The kind workflow is the
fork's way to run ``inferbook run --profile kind``: it pins its actions by tag and its node image by digest.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inferbook.layers import LAYERS
from inferbook.profile import load_profile

from .conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
CHECK = Path(sys.executable).with_name("check-jsonschema")
#: The layers the kind profile leaves off: resilience's drills kill and time the local stack's processes; the MCP
#: gateway needs agentgateway's controller, which the kind workflow does not install (only its CRDs), and
#: switching routing off (as forkers do on a laptop) would then be refused, since it needs routing.
NOT_ON_KIND = {"resilience", "mcp-gateway"}


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK), "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_the_workflows_are_found() -> None:
    assert {"book.yml", "kind.yml"} <= {p.name for p in WORKFLOWS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_workflow_is_valid_against_the_github_workflow_schema(path: Path) -> None:
    result = check(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("text", "complaint"), [
    ("name: x\non: push\n", "'jobs' is a required property"),
    ("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v6.0.2\n"
     "        runs: echo typo\n", "runs"),
    ("on: pushh\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo\n", "pushh"),
])
def test_an_invalid_workflow_is_rejected(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(text)
    result = check(path)
    assert result.returncode != 0 and complaint in result.stdout + result.stderr, result.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_action_is_pinned_by_a_version_tag(path: Path) -> None:
    uses = re.findall(r"^\s*(?:-\s+)?uses:\s*(\S+)", path.read_text(), re.M)
    assert uses
    loose = [u for u in uses if not re.search(r"@v\d+(\.\d+){0,2}$|@[0-9a-f]{40}$", u)]
    assert loose == [], f"{path.name}: actions not pinned by a version tag or commit: {loose}"


def test_the_kind_workflow_makes_the_profile_s_cluster_and_runs_the_book_on_it() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "kind.yml").read_text())
    steps = workflow["jobs"]["book"]["steps"]
    kind = next(s for s in steps if str(s.get("uses", "")).startswith("helm/kind-action@"))
    assert f"kind-{kind['with']['cluster_name']}" == load_profile("kind").data["target"]["context"]
    assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", kind["with"]["node_image"])
    runs = " ".join(s.get("run", "") for s in steps)
    assert workflow["jobs"]["book"]["env"]["PROFILE"] == "kind"
    assert 'inferbook run --profile "${PROFILE}"' in runs and "make venv" in runs
    for chart in ("kube-prometheus-stack --version 86.2.3", "argo-cd --version 9.5.21",
                  "external-secrets --version 2.6.0"):
        assert chart in runs, chart


def test_the_kind_profile_enables_every_layer_that_can_run_on_kind() -> None:
    enabled = load_profile("kind").features
    off = {layer.name for layer in LAYERS if layer.name not in enabled}
    assert off == NOT_ON_KIND
