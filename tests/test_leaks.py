"""Secret hygiene: a secret anywhere in what a run or a site build wrote fails it, named but never shown.

Planted values are generated per test (never committed), so the checkout's "published values" allowlist
cannot excuse them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import string
import subprocess
import uuid
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from inferbook import leaks
from inferbook.layers.serving import models
from inferbook.paths import Layout
from inferbook.runner import RunSummary
from inferbook.secrets import SecretStore
from inferbook.site import run_page

from .conftest import ROOT, make_book, run_cli

MASTER = "litellm-master-key/master-key"


@pytest.fixture()
def store_dir(tmp_path: Path) -> Path:
    """A secret store of profile local with the gateway's master key, vLLM's API key and the ledger's password."""
    directory = tmp_path / "secrets"
    store = SecretStore("local", directory)
    for name in (MASTER, "vllm-api-key/api-key", "litellm-db/password"):
        store.get(name)
    return directory


def stored(store_dir: Path, name: str = MASTER) -> str:
    value = SecretStore("local", store_dir).peek(name)
    assert value
    return value


def virtual_key() -> str:
    """A key shaped as LiteLLM mints them: ``sk-`` and token_urlsafe(16)."""
    return "sk-" + secrets.token_urlsafe(16)


def notebook(path: Path, cells: list[tuple[str, list[dict]]]) -> Path:
    """An executed-looking notebook: (source, outputs) per code cell, after a title cell."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Chapter")]
    for source, outputs in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def result(data: dict) -> dict:
    return {"output_type": "execute_result", "execution_count": 1, "data": data, "metadata": {}}


def check_run(build: Path, store_dir: Path) -> leaks.ScanReport:
    layout = Layout(root=ROOT, build_dir=build)
    return leaks.check(layout, leaks.run_targets(layout, "local"), "the run of profile local", store_dir)


def test_a_stored_secret_and_a_virtual_key_in_outputs_fail_naming_file_and_cell_not_value(tmp_path, store_dir):
    build = tmp_path / "_build"
    master, key = stored(store_dir), virtual_key()
    notebook(build / "runs" / "local" / "notebooks" / "40-llm-gateway.ipynb", [
        ("gateway = connect(profile)", [stream("connected\n"), stream(f"master key: {master}\n")]),
        ("tenants.keys", [result({"text/plain": f"{{'ide': '{key}'}}"})]),
    ])
    with pytest.raises(leaks.SecretLeaked) as caught:
        check_run(build, store_dir)
    message = str(caught.value)
    assert "runs/local/notebooks/40-llm-gateway.ipynb cell 2 output 2 line 1: stored secret local:" + MASTER in message
    assert "runs/local/notebooks/40-llm-gateway.ipynb cell 3 output 1 line 1: sk- key [sk-…, 25 chars]" in message
    assert master not in message and key not in message
    assert master[3:12] not in message and key[3:12] not in message
    assert "\n" not in message and "Fix:" in message


def test_a_clean_build_with_images_digests_and_commit_ids_passes(tmp_path, store_dir):
    build = tmp_path / "_build"
    models = yaml.safe_load((ROOT / "src/inferbook/layers/serving/models.yaml").read_text())["models"]
    checksums = [p["wheel_sha256"] for m in models.values() for p in m["parts"]]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    png = base64.b64encode(os.urandom(6000)).decode()  # as random as a compressed image gets
    run = build / "runs" / "local"
    notebook(run / "notebooks" / "20-serving.ipynb", [
        ("plot(latencies)", [{"output_type": "display_data", "metadata": {},
                              "data": {"image/png": png, "text/plain": "<Figure size 640x480 with 1 Axes>"}}]),
        ("provenance", [result({
            "text/plain": f"{checksums[:3]!r}",  # quoted, unlabelled: allowed because models.yaml publishes them
            "text/html": f'<table><tr><th>sha256</th><td>{checksums[0]}</td></tr></table>'
                         f'<img src="data:image/png;base64,{png}"/>'})]),
        ("record", [stream(f"commit {commit[:12]} at '{commit}'\n"
                           f"file sha256: '{secrets.token_hex(32)}'\n"  # labelled: a digest
                           f"request id '{secrets.token_hex(8)}' uuid {uuid.uuid4()}\n"
                           "model /root/.cache/inferbook/envs/vllm-cpu-0ecc3f070053/lib/python3.11/x.py "
                           "HuggingFaceTB/SmolLM2-135M-Instruct Qwen/Qwen2.5-Coder-1.5B-Instruct\n")]),
    ])
    (run / "logs").mkdir()
    (run / "logs" / "llm-gateway.log").write_text(
        "Budget has been exceeded! Key=demo-tiny (sk-...rwWg) Current cost: 0.0001\n"
        f"Invalid proxy server token passed. key={secrets.token_hex(32)}, not found in db.\n"
        '  File "/root/.cache/inferbook/envs/litellm-141960d35a1d/lib/python3.11/site-packages/httpx/_x.py"\n')
    (run / "summary.json").write_text(json.dumps({"commit": commit[:12], "status": "ok"}, indent=2))
    static = build / "html" / "local" / "_static"
    static.mkdir(parents=True)
    (static / "bundle.js").write_text(f'var a="{base64.b64encode(os.urandom(48)).decode()}";')
    report = check_run(build, store_dir)
    assert report.findings == [] and report.files == 3 and report.stored == 3
    layout = Layout(root=ROOT, build_dir=build)
    assert leaks.check(layout, leaks.site_targets(layout, "local"), "the site", store_dir).findings == []


@pytest.mark.parametrize("where, text, kind", [
    ("logs/llm-gateway.log", "\x1b[32mINFO\x1b[0m Authorization: Bearer {key}\n", "sk- key"),
    ("artifacts/calls.json", '{{"transcript": "line one\\n{key}\\nline three"}}', "sk- key"),
    ("artifacts/db.txt", "DATABASE_URL=postgresql://litellm:{token}@127.0.0.1:5433/db\n", "Basic Auth Credentials"),
    ("artifacts/key.pem", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n", "Private Key"),
    ("logs/serving.log", "token hf_{letters} loaded\n", "Hugging Face token"),
    ("logs/serving.log", "VLLM_API_KEY is {b64}\n", "Base64 High Entropy String"),
    ("artifacts/secret.json", '{{"api-key": "{hex}"}}', "Hex High Entropy String"),
])
def test_a_secret_shaped_value_is_found_in_logs_and_artefacts(tmp_path, where, text, kind):
    values = {"key": virtual_key(), "token": secrets.token_urlsafe(12),
              "letters": "".join(secrets.choice(string.ascii_letters) for _ in range(34)),
              "b64": base64.b64encode(os.urandom(48)).decode(), "hex": secrets.token_hex(32)}
    path = tmp_path / "_build" / "runs" / "local" / where
    path.parent.mkdir(parents=True)
    path.write_text(text.format(**values))
    with pytest.raises(leaks.SecretLeaked) as caught:
        check_run(tmp_path / "_build", tmp_path / "no-store")
    assert f"runs/local/{where} line 1" in str(caught.value) or f"runs/local/{where} line 2" in str(caught.value)
    assert f": {kind} [" in str(caught.value)
    for value in values.values():
        assert value not in str(caught.value)


def test_a_stored_secret_is_found_in_every_form_and_every_file_even_vendored_or_binary(tmp_path, store_dir):
    build = tmp_path / "_build"
    password = stored(store_dir, "litellm-db/password")
    api_key = stored(store_dir, "vllm-api-key/api-key")
    secret_yaml = build / "runs" / "local" / "artifacts" / "secret.yaml"
    secret_yaml.parent.mkdir(parents=True)
    secret_yaml.write_text(f"kind: Secret\ndata:\n  password: {base64.b64encode(password.encode()).decode()}\n")
    bundle = build / "html" / "local" / "_static" / "app.js"
    bundle.parent.mkdir(parents=True)
    bundle.write_text(f"var k='{api_key}';")
    pickle = build / ".doctrees" / "local" / "page.doctree"
    pickle.parent.mkdir(parents=True)
    pickle.write_bytes(b"\x80\x04\x00" + api_key.encode() + b"\x00")
    layout = Layout(root=ROOT, build_dir=build)
    findings = leaks.scan(build, [build], "all", leaks.stored_secrets(store_dir), checkout=ROOT).findings
    assert sorted(str(f) for f in findings) == [
        ".doctrees/local/page.doctree line 1: stored secret local:vllm-api-key/api-key [sk-…, 41 chars]",
        "html/local/_static/app.js line 1: stored secret local:vllm-api-key/api-key [sk-…, 41 chars]",
        f"runs/local/artifacts/secret.yaml line 3: stored secret local:litellm-db/password […, "
        f"{len(base64.b64encode(password.encode()))} chars]",
    ]
    with pytest.raises(leaks.SecretLeaked, match="the site"):
        leaks.check(layout, leaks.site_targets(layout, "local"), "the site", store_dir)


def test_mask_withholds_stored_values_and_key_shapes_but_keeps_the_rest(store_dir):
    master, key = stored(store_dir), virtual_key()
    text = f"master {master} ide {key} placeholder sk-... and sk-xxxxxxxxxxxxxxxxxxxxxxxx"
    masked = leaks.mask(text, leaks.stored_secrets(store_dir))
    assert masked == (f"master [secret local:{MASTER} withheld] ide [sk- key withheld] placeholder sk-... "
                      "and sk-xxxxxxxxxxxxxxxxxxxxxxxx")


def test_the_run_record_page_reports_the_secret_scan():
    summary = RunSummary("local", "profiles/local.yaml", "abc", "2026-01-01",
                         secret_scan="no secret found in 3 file(s)")
    assert "Secret scan of the run's files: no secret found in 3 file(s)." in run_page(summary)


def test_a_run_whose_cell_prints_a_key_fails_names_the_cell_and_never_shows_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the runner's and the kernel's store
    root = make_book(tmp_path / "book", {"00-leaky": [
        "from inferbook.secrets import SecretStore\n"
        f"print('master key:', SecretStore('local').get('{MASTER}'))",
        "import secrets\nkey = 'sk-' + secrets.token_urlsafe(16)\nprint('the ide key is', key)",
        "raise ValueError('refused: ' + key)",
    ]})
    result = run_cli("run", "--profile", "local", "--no-site", cwd=root)
    assert result.returncode == 1
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert "error: the run of profile local (under" in error
    assert f"runs/local/notebooks/00-leaky.ipynb cell 4 output 1 line 1: stored secret local:{MASTER}" in error
    assert "runs/local/notebooks/00-leaky.ipynb cell 5 output 1 line 1: sk- key [sk-…, 25 chars]" in error
    assert "runs/local/notebooks/00-leaky.ipynb cell 6 output 1 line 2: sk- key" in error  # the traceback
    assert "the run had also stopped: chapter 'leaky' failed at cell 6" in error
    assert "ValueError: refused: [sk- key withheld]" in error
    master = SecretStore("local", tmp_path / "config" / "inferbook" / "secrets").peek(MASTER)
    assert master and master not in result.stderr
    assert "master key: [secret local:" + MASTER + " withheld]" in result.stderr  # the live echo, masked
    run_dir = root / "_build" / "runs" / "local"
    printed = [o for c in nbformat.read(run_dir / "notebooks" / "00-leaky.ipynb", as_version=4).cells
               if c.cell_type == "code" for o in c.get("outputs", []) if o.get("name") == "stdout"]
    key = printed[-1]["text"].split()[-1]
    assert key.startswith("sk-") and key not in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["secret_scan"].startswith("failed: ")


def test_inferbook_scan_checks_a_build_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    build = tmp_path / "_build"
    notebook(build / "runs" / "local" / "notebooks" / "00-a.ipynb", [("x", [stream("fine\n")])])
    clean = run_cli("scan", "--build-dir", str(build))
    assert clean.returncode == 0, clean.stderr
    assert "local run: no secret found in 1 file(s)" in clean.stdout
    key = virtual_key()
    (build / "runs" / "local" / "logs").mkdir()
    (build / "runs" / "local" / "logs" / "kernel.log").write_text(f"ok\nkey={key}\n")
    leaked = run_cli("scan", "--profile", "local", "--build-dir", str(build))
    assert leaked.returncode == 1
    assert "runs/local/logs/kernel.log line 2: sk- key [sk-…, 25 chars]" in leaked.stderr
    assert key not in leaked.stderr + leaked.stdout


def test_the_checkouts_own_values_excuse_a_random_string_but_never_a_key_shape(tmp_path):
    checkout, build = tmp_path / "checkout", tmp_path / "_build"
    key, token = virtual_key(), base64.b64encode(os.urandom(48)).decode()
    (checkout / "profiles").mkdir(parents=True)
    (checkout / "profiles" / "demo.yaml").write_text(f"example_key: {key}\nfixture: {token}\n")  # published
    log = build / "runs" / "local" / "logs" / "demo.log"
    log.parent.mkdir(parents=True)
    log.write_text(f"fixture {token}\nkey {key}\n")
    findings = leaks.scan(build, [build], "all", [], checkout=checkout).findings
    assert [(f.where, f.kind) for f in findings] == [("line 2", "sk- key")]


# --------------------------------------------------------------------------- digests the book shows on purpose

FILES = ("chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json")


def prepared_model(folder: Path) -> dict[str, str]:
    """A prepared model's PROVENANCE.json with fresh digests (never committed), as ``models.prepare`` writes it."""
    digests = {name: secrets.token_hex(32) for name in FILES}
    folder.mkdir(parents=True)
    (folder / models.PROVENANCE).write_text(json.dumps({
        "model_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "Apache-2.0",
        "license_url": "https://example.test/LICENSE",
        "packages": [{"package": "smollm2-part1", "version": "1.0", "wheel_sha256": secrets.token_hex(32)}],
        "gguf_name": "smollm2-135m-instruct-q8_0.gguf", "gguf_size": 144_810_720, "gguf_sha256": secrets.token_hex(32),
        "files": digests}))
    return digests


def served(build: Path, model: Path, whole: bool) -> str:
    """The serving chapter's executed notebook with its provenance table; returns the table's HTML.

    ``whole``: as the book shows it; otherwise as a plain DataFrame (a reader's fork), which pandas cuts to 46
    characters and "...".
    """
    table = models.provenance(model)
    table = table if whole else pd.DataFrame(table)
    html = table._repr_html_()
    notebook(build / "runs" / "local" / "notebooks" / "20-serving.ipynb", [
        ("serving.provenance(run.profile, endpoint)", [result({"text/plain": repr(table), "text/html": html})])])
    return html


def search_index(build: Path, html: str, planted: str = "") -> Path:
    """The site's search index as Sphinx 7.4 writes it: one line of JSON, keys sorted, each word of a page a term.

    The words are the table's text split as Sphinx splits it; one is stemmed (its last letter dropped), as the
    English stemmer does to a word ending in ``e``. The page's title names the served model by its id.
    ``planted`` goes into the titles, after every term: after ``sha256``, ``digest`` and ``commit`` on the same
    line.
    """
    words = sorted({w.lower() for w in re.findall(r"\w+", re.sub(r"<[^>]+>", " ", html))} | {"digest", "commit"})
    digest = next(w for w in words if len(w) >= 40)
    words[words.index(digest)] = digest[:-1]
    title = "Serving HuggingFaceTB/SmolLM2-135M-Instruct"
    index = {"alltitles": {title: [[0, None]]}, "docnames": ["notebooks/20-serving"],
             "envversion": {"sphinx": 62}, "filenames": ["notebooks/20-serving.ipynb"], "indexentries": {},
             "objects": {}, "objnames": {}, "objtypes": {}, "terms": {w: 0 for w in words},
             "titles": [title, *([planted] if planted else [])], "titleterms": {"serving": 0}}
    path = build / "html" / "local" / "searchindex.js"
    path.parent.mkdir(parents=True)
    path.write_text("Search.setIndex(" + json.dumps(index, sort_keys=True) + ")")
    return path


def check_site(build: Path, store_dir: Path) -> leaks.ScanReport:
    layout = Layout(root=ROOT, build_dir=build)
    return leaks.check(layout, leaks.site_targets(layout, "local"), "the site of profile local", store_dir,
                       records=leaks.record_sources(layout, "local"))


@pytest.mark.parametrize("whole", [True, False], ids=["shown-whole", "cut-by-pandas"])
def test_a_verified_digest_in_the_search_index_passes_whole_or_cut_short(tmp_path, store_dir, whole):
    """The serving chapter's checksums and model id, as the site's search index repeats them, are no finding."""
    build = tmp_path / "_build"
    digests = prepared_model(tmp_path / "model")
    index = search_index(build, served(build, tmp_path / "model", whole))
    shown = [d if whole else d[:46] for d in digests.values()]
    assert sum(f'"{d}"' in index.read_text() or f'"{d[:-1]}"' in index.read_text() for d in shown) == len(FILES)
    assert check_run(build, store_dir).findings == []
    assert check_site(build, store_dir).findings == []


def test_a_digest_the_run_never_labelled_is_a_finding_in_the_search_index(tmp_path, store_dir):
    """The control of the test above: the site's copy alone excuses nothing; the run's labelled record does."""
    build = tmp_path / "_build"
    digests = prepared_model(tmp_path / "model")
    search_index(build, served(build, tmp_path / "model", whole=False))
    log = build / "runs" / "local" / "logs" / "serving.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"loaded {d}\n" for d in digests.values()))  # unlabelled: records nothing
    (build / "runs" / "local" / "notebooks" / "20-serving.ipynb").unlink()
    with pytest.raises(leaks.SecretLeaked) as caught:
        check_site(build, store_dir)
    assert caught.value.findings and {str(f).split(" [")[0] for f in caught.value.findings} == {
        "html/local/searchindex.js line 1: Hex High Entropy String"}
    assert "passes once its line labels it (`sha256 <value>`" in str(caught.value)


@pytest.mark.parametrize("planted, kind", [
    ("key", "sk- key"),
    ("hex", "Hex High Entropy String"),
    ("longer", "Hex High Entropy String"),
    ("stored", "stored secret local:" + MASTER),
])
def test_a_planted_secret_in_the_search_index_fails_beside_verified_digests(tmp_path, store_dir, planted, kind):
    """A key, a random hex string in quotes (after digest labels on the same line), a hex string that begins as a
    verified digest but runs past what the run showed, or a stored secret: each named by file, line and kind."""
    build = tmp_path / "_build"
    digests = prepared_model(tmp_path / "model")
    html = served(build, tmp_path / "model", whole=False)
    value = {"key": virtual_key(), "hex": secrets.token_hex(20), "stored": stored(store_dir),
             "longer": digests["config.json"][:46] + secrets.token_hex(9)}[planted]
    search_index(build, html, planted=value)
    with pytest.raises(leaks.SecretLeaked) as caught:
        check_site(build, store_dir)
    message = str(caught.value)
    assert [str(f).split(" [")[0] for f in caught.value.findings] == [f"html/local/searchindex.js line 1: {kind}"]
    assert value not in message and value[3:15] not in message
    assert "Fix:" in message


@pytest.mark.parametrize("line, found", [
    ("sha256 tokenizer_config.json                '{hex}'", False),
    ('{{"gguf_sha256": "{hex}", "gguf_size": 124}}', False),
    ("image vllm@sha256:{other} pulled, layer '{hex}'", True),
    ('"digest": 0, "{hex}": 0', True),
])
def test_a_digest_label_names_only_the_value_in_its_own_clause(tmp_path, line, found):
    log = tmp_path / "_build" / "runs" / "local" / "logs" / "x.log"
    log.parent.mkdir(parents=True)
    log.write_text(line.format(hex=secrets.token_hex(32), other=secrets.token_hex(32)) + "\n")
    findings = leaks.scan(tmp_path / "_build", [log], "the log", [], checkout=None).findings
    assert [f.kind for f in findings] == (["Hex High Entropy String"] if found else [])


def test_a_digest_the_checkout_publishes_passes_on_the_site_cut_by_the_stemmer(tmp_path, store_dir):
    """A pinned checksum a decision page shows (the llama.cpp source's sha256) reaches the search index one letter
    short, as the stemmer drops a final "e": a prefix of a public value is public. A look-alike is still a finding."""
    from inferbook.layers.serving import llamacpp

    pinned = llamacpp.SDIST_SHA256
    assert pinned.endswith("e") and pinned in (ROOT / "book" / "decisions" / "0036-cpu-engines.md").read_text()
    build = tmp_path / "_build"
    prepared_model(tmp_path / "model")
    html = served(build, tmp_path / "model", whole=True)
    search_index(build, html, planted=pinned[:-1])
    assert check_site(build, store_dir).findings == []
    changed = pinned[:-2] + ("0" if pinned[-2] != "0" else "1")  # the same length, not a prefix of it
    (build / "html").rename(tmp_path / "first")
    search_index(build, html, planted=changed)
    with pytest.raises(leaks.SecretLeaked) as caught:
        check_site(build, store_dir)
    assert {f.kind for f in caught.value.findings} == {"Hex High Entropy String"}


def _ulid() -> str:
    crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "01" + "".join(secrets.choice(crockford) for _ in range(24))


@pytest.mark.parametrize("line, found", [
    # Prometheus names each TSDB block it compacts by a ULID: 80 random bits, an id by its label and shape
    ('ts=2026-12-05T11:46:26.113Z caller=compact.go:519 level=info component=tsdb msg="write block" '
     'mint=1796458486029 maxt=1796464800000 ulid={ulid} duration=76.377571ms', False),
    # the same random characters unlabelled, or a key in a logfmt field, stay findings
    ("block {b64}", True),
    ("level=info api_key={b64} msg=ready", True),
    ("ulid={b64}", True),  # a label does not excuse a value that is not a ULID
])
def test_a_labelled_ulid_is_an_id_but_a_logfmt_value_is_still_judged(tmp_path, line, found):
    log = tmp_path / "_build" / "runs" / "local" / "logs" / "prometheus.log"
    log.parent.mkdir(parents=True)
    for _ in range(20):  # a ULID's entropy varies with its draw: the flake CI met was one draw in a few
        log.write_text(line.format(ulid=_ulid(), b64=base64.b64encode(os.urandom(48)).decode()) + "\n")
        findings = leaks.scan(tmp_path / "_build", [log], "the log", [], checkout=None).findings
        assert [f.kind for f in findings] == (["Base64 High Entropy String"] if found else [])
