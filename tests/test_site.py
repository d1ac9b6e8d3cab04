"""The whole book on `local`, run once per session through the CLI, and the site it publishes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from .conftest import ROOT

pytestmark = pytest.mark.slow

DECISIONS = sorted((ROOT / "book" / "decisions").glob("*.md"))


def test_the_run_reports_each_chapter_and_cell(built_book):
    err = built_book.result.stderr
    assert "[1/14] preflight (notebooks/00-preflight.ipynb)" in err
    assert "[2/14] platform (notebooks/10-platform.ipynb)" in err
    assert "[3/14] serving (notebooks/20-serving.ipynb)" in err
    assert "[4/14] routing (notebooks/30-routing.ipynb)" in err
    assert "[5/14] llm-gateway (notebooks/40-llm-gateway.ipynb)" in err
    assert "[6/14] experience (notebooks/50-experience.ipynb)" in err
    assert "[7/14] observability (notebooks/60-observability.ipynb)" in err
    assert "[8/14] autoscaling (notebooks/70-autoscaling.ipynb)" in err
    assert "[9/14] security (notebooks/80-security.ipynb)" in err
    assert "[10/14] resilience (notebooks/85-resilience.ipynb)" in err
    assert "[11/14] benchmarks (notebooks/90-benchmarks.ipynb)" in err
    assert "[12/14] economics (notebooks/92-economics.ipynb)" in err
    assert "[13/14] capacity (notebooks/94-capacity.ipynb)" in err
    assert "[14/14] gitops (notebooks/96-gitops.ipynb)" in err
    assert "cell 7/22: import pandas as pd" in err
    assert "14 chapter(s) ok, 0 skipped" in err
    assert "site built in" in err and str(built_book.html / "index.html") in err
    assert "secret scan of the run: no secret found" in err and "(secret scan: no secret found)" in err


def test_summary_json_records_profile_commit_and_chapters(built_book):
    summary = json.loads((built_book.run_dir / "summary.json").read_text())
    assert summary["profile"] == "local" and summary["status"] == "ok"
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?|unknown", summary["commit"])
    assert [(c["name"], c["status"]) for c in summary["chapters"]] == [
        ("preflight", "ok"), ("platform", "ok"), ("serving", "ok"), ("routing", "ok"), ("llm-gateway", "ok"),
        ("experience", "ok"), ("observability", "ok"), ("autoscaling", "ok"), ("security", "ok"),
        ("resilience", "ok"), ("benchmarks", "ok"), ("economics", "ok"), ("capacity", "ok"), ("gitops", "ok")]
    assert all(c["seconds"] > 0 for c in summary["chapters"] if c["status"] == "ok")
    for artefact in ("preflight.json", "platform.yaml", "platform-checks.json", "platform-admission.json",
                     "serving.yaml", "serving-validation.json", "serving-checks.json",
                     "serving-calls.json", "routing.yaml", "routing-validation.json", "routing-checks.json",
                     "routing-affinity.json", "routing-failover.json", "llm-gateway.yaml",
                     "llm-gateway-validation.json", "llm-gateway-checks.json",
                     "llm-gateway-overhead.json", "continue-config.yaml", "experience-spend.json",
                     "observability.yaml", "observability-rules.yaml", "observability-checks.json",
                     "observability-slo.json", "observability-dashboards.json", "observability-load.json",
                     "observability-spend.json", "resilience-drills.json", "resilience-load.json",
                     "benchmarks-figures.json", "economics-figures.json", "capacity-figures.json",
                     "autoscaling.yaml", "autoscaling-checks.json", "autoscaling-samples.json",
                     "autoscaling-figures.json", "security.yaml", "security-checks.json",
                     "security-reachability.json", "security-admission.json",
                     "gitops.yaml", "gitops-checks.json", "gitops-figures.json"):
        assert (built_book.run_dir / "artifacts" / artefact).is_file(), artefact


def test_the_site_has_the_intro_every_decision_and_the_run_record(built_book):
    html = built_book.html
    assert (html / "index.html").is_file()
    intro = (html / "book" / "intro.html").read_text()
    assert "How to run it" in intro and "_build/html/local/index.html" in intro
    for path in DECISIONS:
        page = html / "book" / "decisions" / f"{path.stem}.html"
        assert page.is_file(), f"{path.name} was not rendered"
        title = path.read_text().splitlines()[0].removeprefix("# ")
        assert title.split(":")[0] in page.read_text()
    record = (html / "run-record.html").read_text()
    assert "profile" in record and "preflight" in record and "<td" in record


def test_the_preflight_page_shows_its_tables_and_run_record(built_book):
    page = (built_book.html / "notebooks" / "00-preflight.html").read_text()
    assert "Run record" in page and "with profile <code" in page
    for fragment in ("budget mode", "fail-open",                 # the resolved profile
                     "required by experience", "llm-gateway",     # the feature table
                     "papermill", "jupyter-book",                 # tool versions
                     "port 8000 (serving)", "memory",             # reachability
                     "every shipped profile validates offline",   # the survey's verification row
                     "(profile, layer) pair(s) of",               # the survey's summary
                     "checks passed"):                             # the verdict
        assert fragment in page, f"{fragment!r} missing from the executed preflight page"
    assert page.count("<table") >= 5


def test_the_serving_page_shows_the_smoke_table_and_checks(built_book):
    page = (built_book.html / "notebooks" / "20-serving.html").read_text()
    for fragment in ("GET /v1/models", "chat (streamed)", "fill-in-the-middle", "tool call (grammar)",
                     "GET /metrics", "all 6 SLO metrics present", "usage in last chunk", "tokens_per_s",
                     "ttft_s", "get_weather", "tool call parsed", "manifests/serving/vllm"):
        assert fragment in page, f"{fragment!r} missing from the executed serving page"
    assert "True" in page and "False" not in page.split("Verification", 1)[1].split("Results", 1)[0]


def test_the_routing_page_shows_the_pool_the_split_and_every_check_passing(built_book):
    page = (built_book.html / "notebooks" / "30-routing.html").read_text()
    for fragment in ("replica-a", "replica-b", "replica-canary", "no-such-model", "cache_aware", "round_robin",
                     "InferencePool", "0 failed"):
        assert fragment in page, f"{fragment!r} missing from the executed routing page"
    checks = json.loads((built_book.run_dir / "artifacts" / "routing-checks.json").read_text())
    failed = [row for row in checks if not row["pass"]]
    assert len(checks) >= 10 and not failed, failed


def test_the_gateway_page_shows_the_enforcement_table(built_book):
    page = (built_book.html / "notebooks" / "40-llm-gateway.html").read_text()
    for fragment in ("allowed call (ide key, coder-chat)", "model not on the key", "invalid key", "revoked key",
                     "tiny budget exhausted", "rpm limit", "spend matches usage", "Air-gapped installs",
                     "demo-ide", "fail-open"):
        assert fragment in page, f"{fragment!r} missing from the executed gateway page"
    checks = json.loads((built_book.run_dir / "artifacts" / "llm-gateway-checks.json").read_text())
    assert len(checks) == 7 and all(row["pass"] for row in checks)


def test_the_experience_page_shows_chat_fim_and_the_agent_transcript(built_book):
    page = (built_book.html / "notebooks" / "50-experience.html").read_text()
    for fragment in ("demo-session-ide", "demo-session-agent",        # the keys, by alias only
                     "chat (streamed)", "first token after",          # streamed chat
                     "def mean(values):", "\u27e8", "\u27e9",          # the completion in place
                     "list_files", "result_chars", "tool calls;",     # the agent's transcript and verdict
                     "secrets.INFERBOOK_API_KEY", "booked_usd"):      # IDE config without a key; spend
        assert fragment in page, f"{fragment!r} missing from the executed experience page"
    spend = json.loads((built_book.run_dir / "artifacts" / "experience-spend.json").read_text())
    assert len(spend) == 2 and all(row["matches"] and row["booked_usd"] > 0 for row in spend)


def test_the_observability_page_shows_the_slo_table_and_draws_the_dashboards(built_book):
    page = (built_book.html / "notebooks" / "60-observability.html").read_text()
    for fragment in ("inferbook:slo_objective", "SUCCESS: 16 rules found",        # the rules, checked by promtool
                     "demo-observability-load", "demo-observability-limited",   # the load's keys, by alias only
                     "time to first token, p95", "vllm:time_to_first_token_seconds",  # the SLO table
                     "skipped: gpu.type: none",                                 # DCGM panels, skipped with a reason
                     "ledger_reader", "LiteLLM_SpendLogs"):                     # the spend dashboard, on the ledger
        assert fragment in page, f"{fragment!r} missing from the executed observability page"
    assert len(re.findall(r'<img [^>]*src="[^"]*_images/[0-9a-f]+\.png"', page)) >= 3  # serving, gateway, spend
    checks = json.loads((built_book.run_dir / "artifacts" / "observability-checks.json").read_text())
    assert checks and all(row["pass"] for row in checks)
    # ADR-0015's check: the spend panel equals LiteLLM's spend for each of the load's keys.
    assert {row["check"] for row in checks} >= {f"spend panel = LiteLLM's spend (demo-observability-{k})"
                                                for k in ("load", "limited")}
    panels = json.loads((built_book.run_dir / "artifacts" / "observability-spend.json").read_text())
    assert len(panels) == 4 and all(row["pass"] for row in panels)
    slos = json.loads((built_book.run_dir / "artifacts" / "observability-slo.json").read_text())
    assert {row["verdict"] for row in slos} <= {"met", "missed", "waiting (the alert fires after 5 min)"}


def test_no_secret_reaches_the_run_or_the_site(built_book, local_serving, local_gateway):
    from inferbook.secrets import SecretStore

    store = SecretStore("local")
    secrets = {name: store.peek(name) for name in store.names()}
    assert "vllm-api-key/api-key" in secrets and "litellm-master-key/master-key" in secrets
    virtual_key = re.compile(r"sk-[A-Za-z0-9_-]{20,}")
    for folder in (built_book.run_dir, built_book.html):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in {".ipynb", ".html", ".json", ".yaml", ".md", ".txt", ".log"}:
                text = path.read_text(errors="ignore")
                for name, value in secrets.items():
                    assert value not in text, f"{name} leaked into {path}"
                assert not virtual_key.search(text), f"a virtual key leaked into {path}"


def test_the_site_needs_no_network(built_book):
    remote = re.compile(r"<(?:script[^>]*\ssrc|link[^>]*\shref)=\"(https?:)?//", re.I)
    offenders = [p.relative_to(built_book.html) for p in built_book.html.rglob("*.html")
                 if remote.search(p.read_text())]
    assert not offenders, f"pages load remote scripts or styles: {offenders[:5]}"
    assert (built_book.html / "mathjax" / "tex-chtml.js").is_file()
    page = (built_book.html / "book" / "decisions" / "0014-autoscaling.html").read_text()
    assert "_static/../mathjax/tex-chtml.js" in page


def test_no_source_notebook_was_modified_by_the_run(built_book):
    changed = subprocess.run(["git", "diff", "--name-only", "--", "notebooks"],
                             cwd=ROOT, capture_output=True, text=True).stdout
    assert changed == ""


# --------------------------------------------------------------------------- screenshot


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("no Chromium found: `make test` installs it (as root or with passwordless sudo); otherwise: "
                "sudo apt-get install chromium")


def screenshot(url: str, out: Path, profile_dir: Path) -> Path:
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile_dir}", "--virtual-time-budget=5000", "--window-size=1280,900",
         f"--screenshot={out}", url],
        capture_output=True, timeout=120, check=False,
    )
    assert out.is_file(), f"Chromium made no screenshot of {url}"
    return out


def ink(path: Path) -> tuple[float, int]:
    """Share of pixels that are not the background colour, and how many colours there are."""
    image = Image.open(path).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    background = max(colours)[1] if colours else (255, 255, 255)
    total = image.width * image.height
    drawn = sum(count for count, colour in colours if colour != background)
    return drawn / total, len(colours)


def test_a_built_page_screenshots_as_a_non_blank_image(built_book, tmp_path):
    shot = screenshot((built_book.html / "index.html").as_uri(), tmp_path / "index.png", tmp_path / "chrome1")
    share, colours = ink(shot)
    shutil.copy(shot, built_book.run_dir / "artifacts" / "site-index.png")
    assert Image.open(shot).size == (1280, 900)
    assert share > 0.02 and colours > 50, f"the page looks blank: {share:.1%} ink, {colours} colours"


def test_the_blankness_check_catches_a_blank_page(tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body style='background:#fff'></body></html>")
    share, colours = ink(screenshot(blank.as_uri(), tmp_path / "blank.png", tmp_path / "chrome2"))
    assert share < 0.02 or colours <= 50
