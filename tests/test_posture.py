"""Policy posture: checkov finds nothing wrong in any shipped profile's rendered manifests.

What a cluster would get (every layer with manifests the profile enables, rendered as the chapters render
it) goes through checkov's Kubernetes checks, offline, with the checkout's ``.checkov.yaml``: a check is
either passed or skipped there with its reason on the same line.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from inferbook import layers
from inferbook.envs import CHECKOV
from inferbook.manifests import write
from inferbook.paths import Layout, default_cache_dir
from inferbook.profile import list_profiles, load_profile

from .conftest import ROOT

CONFIG = ROOT / ".checkov.yaml"
#: One skipped check per line: ``- CKV_K8S_35  # why``.
SKIP_LINE = re.compile(r"^\s*-\s*(CKV2?_K8S_\d+)\s*#\s*(\S.*)$")


def skip_reasons() -> dict[str, str]:
    """Each skipped check of ``.checkov.yaml`` and the reason written on its line."""
    return {m.group(1): m.group(2).strip() for line in CONFIG.read_text().splitlines()
            if (m := SKIP_LINE.match(line))}


def test_every_skipped_check_says_why_on_its_line() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    reasons = skip_reasons()
    assert config["framework"] == ["kubernetes"]
    assert config["skip-check"], "an empty skip list: drop the key instead"
    assert sorted(config["skip-check"]) == sorted(reasons), "a skipped check without `# reason` on its line"
    for check, reason in reasons.items():
        assert len(reason.split()) >= 5, f"{check}: say why in a sentence, not '{reason}'"
    assert reasons["CKV2_K8S_6"] == "the security layer brings default-deny NetworkPolicy"


def test_the_skip_list_is_read_line_by_line() -> None:
    assert SKIP_LINE.match("  - CKV_K8S_43  # no digest is cited").groups() == ("CKV_K8S_43", "no digest is cited")
    assert SKIP_LINE.match("  - CKV_K8S_43") is None, "a bare id carries no reason"
    assert SKIP_LINE.match("  - CKV_K8S_43  #   ") is None, "an empty comment is no reason"


@pytest.fixture(scope="module")
def checkov() -> Path:
    """The pinned checkov of ``envs/checkov.txt`` (built once per machine, about a minute)."""
    return CHECKOV.ensure(default_cache_dir(), say=lambda line: print(line, flush=True)).with_name("checkov")


def test_checkov_fails_no_check_on_any_shipped_profile(checkov: Path, layout: Layout, tmp_path: Path) -> None:
    profiles = list_profiles(layout)
    workloads = 0
    for name in profiles:
        profile = load_profile(name, layout=layout)
        objects = [obj for layer in layers.enabled(profile) for obj in layers.render(layer.name, profile, layout)]
        kinds = [o["kind"] for o in objects]
        assert {"Deployment", "Job"} <= set(kinds), f"{name}: no workload to check"
        workloads += kinds.count("Deployment") + kinds.count("Job")
        write(objects, tmp_path / f"{name}.yaml")
    proc = subprocess.run([str(checkov), "--config-file", str(CONFIG), "--framework", "kubernetes",
                           "--skip-download", "--quiet", "-o", "json", "-d", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: some check failed, listed below
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [f"{Path(f['file_path']).stem}: {f['check_id']} {f['resource']} ({f['check_name']})"
              for f in report["results"]["failed_checks"]]
    assert failed == [], f"{len(failed)} failed check(s):\n" + "\n".join(sorted(failed))
    summary = report["summary"]
    assert summary["parsing_errors"] == 0 and proc.returncode == 0
    # Every workload went through the container and pod checks (some 60 each), not an empty file.
    assert summary["resource_count"] >= workloads and summary["passed"] >= 50 * workloads, summary
