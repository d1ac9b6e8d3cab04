"""Secret hygiene, enforced: nothing a run wrote may hold a secret.

As each chapter ends, what it wrote is scanned, then after the chapters ran the run's whole folder
(:func:`inferbook.runner.run_book`), and again after the site is built (:func:`inferbook.site.build_site`)
every file the build wrote; a finding fails the run with one line that names each file and cell or line,
and the kind of secret, never its value.

Two nets, because the secrets of a run are of two sorts:

- Secrets this machine stores: every value of the local secret stores (the LiteLLM master key, the vLLM
  API key, the ledger's password; :class:`inferbook.secrets.SecretStore`, every profile's) is searched for
  verbatim, as the base64 a Kubernetes Secret holds it in, and URL-quoted, in every byte of every file:
  binary, vendored and image payloads included. A random value of 32 characters does not occur by chance,
  so this net needs no exclusions and cannot raise a false alarm.
- Secrets nobody stored: the virtual keys minted during a run live in memory only, and a cluster's
  secrets never reach this machine's stores. So the *text* a run produced is also searched for the shape
  of a secret: an ``sk-`` key (LiteLLM's virtual and master keys, OpenAI's), detect-secrets' provider
  detectors (AWS, GitHub, private keys, JWTs, a password inside a URL, ...) and its high-entropy strings.
  This net reads cell sources and text outputs, log, artefact and page lines; it skips image payloads
  (base64 PNGs, ``data:`` URIs) and the third-party files a site vendors (Sphinx's ``_static``, MathJax),
  and lets a value pass that the checkout itself publishes (a model's sha256 in ``models.yaml``, a lock
  file's hashes, a commit id), that a digest label names in its own clause (``sha256 config.json 3a5f…``),
  or that begins a digest the run's files show so (:class:`Recorded`: the serving chapter's checksums, which
  the site's search index holds without their label and possibly cut short).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from .errors import InferbookError
from .paths import Layout
from .secrets import SecretStore, default_secrets_dir

#: Folders of third-party files a site vendors (theme bundles, MathJax) and Sphinx's pickles: searched for
#: the stored secrets only, since their minified code is all "high entropy".
VENDORED = frozenset({"_static", "_vendor", "mathjax", ".doctrees"})
#: Build metadata (Sphinx's hash of its configuration): searched for the stored secrets only.
METADATA_FILES = frozenset({".buildinfo"})
#: detect-secrets detectors left out: KeywordDetector reports the *names* of secrets (``secretKeyRef``,
#: ``api_key: os.environ/...``) all over the rendered manifests; a public IP address is not a secret.
SKIPPED_DETECTORS = frozenset({"KeywordDetector", "IPPublicDetector"})
#: A stored value shorter than this is not searched for verbatim: it could occur by chance.
MIN_STORED = 12
#: A high-entropy candidate longer than this is a data payload (an image, a bundle), not a key.
MAX_TOKEN = 512
#: A hex string shorter than this (128 bits) is an id or a short digest, not a key.
MIN_HEX = 32
#: The shortest piece of a recorded digest that still names it (git's short ids are 7 to 12): a table cell
#: or a search index may hold a digest cut short (``3a5f0c…`` in pandas' HTML, a stemmed index term).
MIN_PREFIX = 12
#: Files larger than this are not read for published or recorded values (a GGUF, a benchmark's raw data).
MAX_INDEXED = 4_000_000
#: The run-record banner the runner puts into an executed notebook, and papermill's error banners: cells
#: added after execution, left out of the count so that "cell N" means what the runner's progress said.
RUN_RECORD_TAG = "inferbook-run-record"
UNCOUNTED_TAGS = frozenset({RUN_RECORD_TAG, "papermill-error-cell-tag"})
#: How many findings the error lists before it counts the rest.
MAX_LISTED = 20

#: An ``sk-`` key: ``sk-`` then at least 20 key characters, not inside a longer word (``disk-...``), but
#: possibly right after an escaped newline (``...\nsk-...`` in a JSON or repr'd string).
SK_KEY = re.compile(r"(?:(?<![A-Za-z0-9_-])|(?<=\\[nrt]))sk-[A-Za-z0-9_-]{20,}")
#: A Hugging Face access token (``hf_`` and 34 letters), the one other key a model-serving run may hold.
HF_TOKEN = re.compile(r"(?:(?<![A-Za-z0-9_-])|(?<=\\[nrt]))hf_[A-Za-z]{34}(?![A-Za-z0-9])")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,[A-Za-z0-9+/=]+")
TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{16,}")
HEX_OBJECT = re.compile(r"[0-9a-fA-F]{7,40}")
#: A whole hex word (a digest, possibly cut short and followed by ``...`` or ``…``), as a run prints it.
HEX_WORD = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{%d,}(?![0-9A-Za-z])" % MIN_PREFIX)
DIGEST_LABEL = re.compile(r"sha1|sha224|sha256|sha384|sha512|md5|digest|checksum|hash|commit|etag|revision", re.I)
#: What ends the clause a digest label names: a label and a value with a ``,`` or ``;`` between them are
#: neighbours, not a label and its value (``"digest": 0, "3a5f…": 0`` in a search index's one line).
CLAUSE_BREAK = re.compile(r"[,;]")
#: A logfmt or environment field's name before its value (``ulid=``, ``VLLM_API_KEY=``).
LOGFMT_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]*=(?=[^=])")
#: A ULID (Crockford base32, 26 characters, 48-bit time first) and the field that names one.
ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
ULID_LABEL = re.compile(r"\bulid[=:]\s*[\"']?$", re.I)


class SecretLeaked(InferbookError):
    """A file the run wrote holds a secret; the message lists where, never the value."""

    def __init__(self, what: str, findings: list["Finding"], also: str = "", stopped: str = "") -> None:
        self.findings = findings
        listed = "; ".join(str(f) for f in findings[:MAX_LISTED])
        if len(findings) > MAX_LISTED:
            listed += f"; and {len(findings) - MAX_LISTED} more"
        after = f" (the run had also stopped: {also})" if also else ""
        after += f" (the run stopped here: {stopped})" if stopped else ""
        super().__init__(f"{what} holds {len(findings)} secret(s), values withheld: {listed}{after}. {_fix(findings)}")


def _fix(findings: list["Finding"]) -> str:
    """What to do about ``findings``: a key is shown by its alias; a digest, which is no secret, by its label."""
    digest = ("; a flagged hex value that is a digest, not a secret, passes once its line labels it "
              "(`sha256 <value>`, as the provenance table does)") if any("Hex" in f.kind for f in findings) else ""
    return ("Fix: show a key by its alias or redacted, never its value" + digest + ", and rerun; the files are kept, "
            "so delete or rebuild them before sharing the build folder (`inferbook scan` checks it again)")


@dataclass(frozen=True)
class Secret:
    """A value that must appear nowhere; ``name`` says which one, the value is never shown."""

    name: str
    value: str = field(repr=False)

    def forms(self) -> tuple[str, ...]:
        """The value as written verbatim, in a Kubernetes Secret's ``data`` (base64), and URL-quoted."""
        return tuple(dict.fromkeys((self.value, base64.b64encode(self.value.encode()).decode(),
                                    quote(self.value, safe=""))))


@dataclass(frozen=True)
class Finding:
    """One secret in one place: the file (relative to the scanned folder), where in it, what kind, redacted."""

    path: str
    where: str
    kind: str
    shown: str

    def __str__(self) -> str:
        return f"{self.path} {self.where}: {self.kind} [{self.shown}]"


@dataclass(frozen=True)
class ScanReport:
    """What a scan read and found."""

    what: str
    files: int
    stored: int
    findings: list[Finding]

    def summary(self) -> str:
        found = f"{len(self.findings)} secret(s) found" if self.findings else "no secret found"
        return f"{found} in {self.files} file(s) ({self.stored} stored secret(s) and detect-secrets' patterns)"


def redact(value: str) -> str:
    """What a message may show of a secret: its kind's public prefix (``sk-``, ``hf_``, ``ghp_``) and its length."""
    prefix = re.match(r"[A-Za-z]{1,5}[-_]", value)
    return f"{prefix.group() if prefix else ''}…, {len(value)} chars"


def mask(text: str, stored: list[Secret]) -> str:
    """``text`` with every stored value and every ``sk-``/``hf_`` key replaced by a note naming what it was.

    For what is shown while a run goes on (a cell's prints on the console) and for error messages, which
    quote a cell's exception: the scan afterwards still reports the files, but the terminal never shows a value.
    """
    for secret in stored:
        for form in secret.forms():
            text = text.replace(form, f"[secret {secret.name} withheld]")
    text = SK_KEY.sub(lambda m: "[sk- key withheld]" if _random_enough(m.group()[3:]) else m.group(), text)
    return HF_TOKEN.sub("[Hugging Face token withheld]", text)


def stored_secrets(directory: Path | None = None) -> list[Secret]:
    """Every value of every profile's local secret store, named ``profile:secret/key`` (peeked, never made)."""
    directory = directory or default_secrets_dir()
    found: list[Secret] = []
    for path in sorted(directory.glob("*.json")):
        store = SecretStore(path.stem, directory)
        try:
            names = store.names()
        except ValueError as exc:
            raise InferbookError(f"secret store {path} is not valid JSON ({exc}); Fix: restore or delete it "
                                 "(its secrets are generated again on the next `inferbook up`)") from exc
        for name in names:
            value = store.peek(name)
            if value and len(value) >= MIN_STORED:
                found.append(Secret(f"{path.stem}:{name}", value))
    return found


class Published:
    """Values the checkout itself publishes, in its committed files or as git objects: no secret by definition.

    Read lazily, once, and only when a pattern finding needs the answer.
    """

    def __init__(self, root: Path | None, build_dir: Path | None = None) -> None:
        self.root = root
        self.build_dir = build_dir
        self._tokens: set[str] | None = None
        self._hex: set[str] | None = None

    def _git(self, *args: str) -> subprocess.CompletedProcess[str] | None:
        if self.root is None:
            return None
        try:
            return subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None

    def files(self) -> list[Path]:
        """The committed files; without git (an unpacked archive), the checkout's files outside the build."""
        if self.root is None:
            return []
        listed = self._git("ls-files", "-z")
        if listed is not None and listed.returncode == 0:
            return [self.root / name for name in listed.stdout.split("\0") if name]
        skip = {".git", ".venv", "node_modules", "_build", "__pycache__", ".pytest_cache"}
        build = self.build_dir.resolve() if self.build_dir else None
        found = []
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if d not in skip and (build is None or Path(folder, d).resolve() != build)]
            found += [Path(folder, n) for n in names]
        return found

    def tokens(self) -> set[str]:
        if self._tokens is None:
            self._tokens = set()
            for path in self.files():
                if path.is_file() and path.stat().st_size <= MAX_INDEXED:
                    self._tokens.update(TOKEN.findall(path.read_text(encoding="utf-8", errors="replace")))
        return self._tokens

    def hex_words(self) -> set[str]:
        """The hex words of at least :data:`MIN_PREFIX` characters the checkout publishes, lower-cased."""
        if self._hex is None:
            self._hex = {t.lower() for t in self.tokens() if HEX_WORD.fullmatch(t)}
        return self._hex

    def __contains__(self, value: str) -> bool:
        if value in self.tokens() or value.lower() in self.tokens():
            return True
        # A digest the checkout publishes (a pinned sdist's sha256 in a decision page), cut short on the site: by
        # pandas' column width, or by the search index's stemmer, which drops a final "e" as from a word. A prefix
        # of a public value is public; any other hex string is not excused here.
        if HEX_WORD.fullmatch(value) and any(word.startswith(value.lower()) for word in self.hex_words()):
            return True
        if HEX_OBJECT.fullmatch(value):  # a commit, tree or blob of this checkout
            found = self._git("cat-file", "-e", f"{value}^{{object}}")
            return found is not None and found.returncode == 0
        return False


class Recorded:
    """Digests a run's own files show after a digest label: what the run verified, published on purpose.

    The serving chapter prints each converted file's sha256 in its provenance table (``sha256 config.json
    3a5f…``); the site then holds the same digest where no label stands beside it (a search index term, a
    table cell), possibly cut short. A hex value that is a prefix of a digest recorded so is not a secret; any
    other hex string still is. Only values a label names are recorded, and only in the files of ``sources``
    (the run's folder), by the rule the scan of those files excuses them by: nothing is excused elsewhere that
    the run did not show, in its own files, as a digest.
    Read lazily, once, and only when a hex finding needs the answer.
    """

    def __init__(self, sources: Iterable[Path] = ()) -> None:
        self.sources = list(sources)
        self._digests: set[str] | None = None

    def digests(self) -> set[str]:
        """Every labelled hex word of at least :data:`MIN_PREFIX` characters in the sources, lower-cased."""
        if self._digests is None:
            self._digests = set()
            for path in _files(self.sources):
                if path.stat().st_size <= MAX_INDEXED:
                    self._digests.update(_labelled_digests(path))
        return self._digests

    def __contains__(self, value: str) -> bool:
        value = value.lower()
        return (len(value) >= MIN_PREFIX and HEX_WORD.fullmatch(value) is not None
                and any(digest.startswith(value) for digest in self.digests()))


def _labelled_digests(path: Path) -> set[str]:
    """The hex words of a text file that a digest label names, read as the scan reads it (notebook cells, lines)."""
    text = _as_text(path.read_bytes())
    if text is None:
        return set()
    found = set()
    for _, unit in _text_units(path, text):
        for line in unit.splitlines():
            line = DATA_URI.sub("data:…", ANSI.sub("", line))
            found.update(m.group().lower() for m in HEX_WORD.finditer(line) if _labelled(line, m.start()))
    return found


class Detector:
    """Finds secrets in one line of text: stored values first, then ``sk-`` keys, then detect-secrets."""

    def __init__(self, stored: list[Secret], published: Published, recorded: Recorded | None = None) -> None:
        self.stored = stored
        self.published = published
        self.recorded = recorded or Recorded()
        self._plugins, self._heuristic = _detect_secrets()
        self._entropy = {type(p).__name__: p for p in self._plugins if hasattr(p, "entropy_limit")}
        self._eager = re.compile("[%s]+" % re.escape(self._entropy["Base64HighEntropyString"].charset))

    def line(self, line: str) -> list[tuple[str, str]]:
        """(kind, value) of each secret in ``line``; a value is reported once, under its most specific kind."""
        found: list[tuple[str, str]] = []

        def add(kind: str, value: str) -> None:
            if not any(value in seen or seen in value for _, seen in found):
                found.append((kind, value))

        for secret in self.stored:
            for form in secret.forms():
                if form in line:
                    add(f"stored secret {secret.name}", form)
        line = DATA_URI.sub("data:…", ANSI.sub("", line))
        for value in SK_KEY.findall(line):
            if _random_enough(value[3:]):
                add("sk- key", value)
        for value in HF_TOKEN.findall(line):
            add("Hugging Face token", value)
        for plugin in self._plugins:
            for kind, value in self._candidates(plugin, line):
                if not self._innocent(plugin, value, line):
                    add(kind, value)
        return found

    def _candidates(self, plugin: Any, line: str) -> Iterable[tuple[str, str]]:
        name = type(plugin).__name__
        if name == "Base64HighEntropyString":  # unquoted too: a printed token has no quotes
            values: Iterable[str] = (v for m in self._eager.finditer(line) if not _in_a_name(line, m)
                                     for v in [_unlabelled(m.group())] if 20 <= len(v) <= MAX_TOKEN)
        elif name == "HexHighEntropyString":  # in quotes (detect-secrets' own rule), 128 bits or more
            values = (v for v in plugin.analyze_string(line) if len(v) >= MIN_HEX)
        else:
            values = plugin.analyze_string(line)
        for value in values:
            if name in self._entropy and plugin.calculate_shannon_entropy(value) <= plugin.entropy_limit:
                continue
            yield plugin.secret_type, value

    def _innocent(self, plugin: Any, value: str, line: str) -> bool:
        """detect-secrets' heuristics for what is not a secret, then what the checkout publishes."""
        h = self._heuristic
        if (h.is_sequential_string(value) or h.is_potential_uuid(value) or h.is_templated_secret(value)
                or h.is_prefixed_with_dollar_sign(value) or h.is_not_alphanumeric_string(value)
                or h.is_likely_id_string(value, line, plugin)):
            return True
        name = type(plugin).__name__
        if name == "HexHighEntropyString" and (_labelled(line, max(line.find(value), 0)) or value in self.recorded):
            return True
        if name == "Base64HighEntropyString" and (_a_name(value) or _labelled_ulid(line, value)):
            return True
        return name in self._entropy and value in self.published  # a specific key shape stays a finding


def _labelled(line: str, start: int) -> bool:
    """Whether a digest label (``sha256``, ``commit``, ...) stands before ``start`` in the same clause of ``line``.

    ``sha256 config.json   3a5f…``, ``"gguf_sha256": "3a5f…"`` and ``file sha256: '3a5f…'`` label their value;
    a label anywhere earlier on the line does not, since one line of a minified file (Sphinx's search index,
    a JSON dump) holds a whole site's words, digest labels among them, next to whatever else it holds.
    """
    labels = list(DIGEST_LABEL.finditer(line, 0, start))
    return bool(labels) and CLAUSE_BREAK.search(line, labels[-1].end(), start) is None


def _in_a_name(line: str, match: re.Match[str]) -> bool:
    """A token that is part of a path, file or host name (``/root/.cache/x/y``, ``~/x``, ``host.name``, ``a/b.py``).

    Base64 has no dot, and a printed key stands between spaces, quotes or ``=``; a path's segments, joined by
    ``/`` into one "token", reach a high entropy while saying nothing secret.
    """
    before = line[match.start() - 1] if match.start() else ""
    after = line[match.end():match.end() + 2]
    return before in {".", "~"} or (after[:1] == "." and after[1:].isalnum())


def _unlabelled(token: str) -> str:
    """The value of a ``name=value`` token (logfmt, ``KEY=value``), else the token.

    ``=`` is base64's padding, so the eager match runs a field's name into its value (``ulid=01M93…``); the
    name is judged apart, and the value alone is what is measured. Trailing padding (``…Zg==``) stays.
    """
    label = LOGFMT_LABEL.match(token)
    return token[label.end():] if label and token[label.end():].strip("=") else token


def _labelled_ulid(line: str, value: str) -> bool:
    """A ULID that its field names as one (``ulid=01M930DRKNFP8JVBDGHTTPESQM``): Prometheus names each TSDB
    block it writes so. Its 80 random bits read as a key to an entropy test; the label and the shape say id."""
    if not ULID.fullmatch(value):
        return False
    return any(ULID_LABEL.search(line[:at]) for at in _positions(line, value))


def _positions(line: str, value: str) -> Iterable[int]:
    at = line.find(value)
    while at >= 0:
        yield at
        at = line.find(value, at + 1)


def _a_name(token: str) -> bool:
    """Words joined by ``/``, ``-`` or ``_`` (``HuggingFaceTB/SmolLM2-135M-Instruct``, a path): a name, not a key.

    A generated key has long runs between such separators (base64 has ``/`` once in 64 characters); a long
    piece of a name is a digest (``snapshots/<sha1>/``).
    """
    pieces = [p for p in re.split(r"[/_-]+", token) if p]
    return len(pieces) >= 3 and all(len(p) <= 14 or re.fullmatch(r"[0-9a-f]+", p) for p in pieces)


def _random_enough(tail: str) -> bool:
    """An ``sk-`` tail that looks generated: mixed case or digits, and not a repeated placeholder.

    The entropy floor is low on purpose: a LiteLLM virtual key's 22 random characters reach only about 4.2
    bits per character, below detect-secrets' own limit (4.5), which is why ``sk-`` keys get a rule of their own.
    """
    mixed = any(c.isupper() for c in tail) and any(c.islower() for c in tail)
    counts = [tail.count(c) for c in set(tail)]
    entropy = -sum(n / len(tail) * math.log2(n / len(tail)) for n in counts)
    return (mixed or any(c.isdigit() for c in tail)) and entropy >= 3.0


def _detect_secrets() -> tuple[list[Any], Any]:
    """detect-secrets' detectors (all but :data:`SKIPPED_DETECTORS`) and its heuristic filters."""
    try:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.filters import heuristic
    except ImportError as exc:
        raise InferbookError(
            f"detect-secrets is not installed in this environment ({exc}); Fix: `make` or "
            "`.venv/bin/pip install -e '.[test]' -c constraints.txt` installs the pinned version"
        ) from exc
    classes = get_mapping_from_secret_type_to_class().values()
    plugins = [cls() for cls in sorted(classes, key=lambda c: c.__name__) if cls.__name__ not in SKIPPED_DETECTORS]
    return plugins, heuristic


# --------------------------------------------------------------------------- files


def _text_units(path: Path, text: str) -> list[tuple[str, str]]:
    """(where, text) pieces of a file: a notebook's cell sources, text outputs and metadata; else the file."""
    if path.suffix == ".ipynb":
        try:
            notebook = json.loads(text)
        except ValueError:
            notebook = None
        if isinstance(notebook, dict):
            units = [("metadata", json.dumps(notebook.get("metadata", {}), indent=1))]
            number = 0
            for cell in notebook.get("cells", []):
                tags = set((cell.get("metadata") or {}).get("tags") or [])
                if tags & UNCOUNTED_TAGS:
                    units.append((f"{'run record' if RUN_RECORD_TAG in tags else 'error banner'} cell",
                                  _joined(cell.get("source", ""))))
                    continue
                number += 1
                units.append((f"cell {number} source", _joined(cell.get("source", ""))))
                for j, output in enumerate(cell.get("outputs", []), start=1):
                    units.append((f"cell {number} output {j}", _output_text(output)))
            return units
    return [("", text)]


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _output_text(output: dict[str, Any]) -> str:
    """The text of an output; images and other binary payloads are left out (stored secrets still reach them)."""
    kind = output.get("output_type")
    if kind == "stream":
        return _joined(output.get("text", ""))
    if kind == "error":
        return "\n".join([str(output.get("ename", "")), str(output.get("evalue", "")),
                          *map(str, output.get("traceback", []))])
    parts = []
    for mime, value in (output.get("data") or {}).items():
        if mime.startswith("image/") or not (mime.startswith("text/") or mime.endswith("json")):
            continue
        parts.append(value if isinstance(value, str) else _joined(value) if isinstance(value, list)
                     else json.dumps(value, indent=1))
    return "\n".join(parts)


def _as_text(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def scan_file(path: Path, shown_as: str, detector: Detector) -> list[Finding]:
    """The secrets in one file: every byte for stored values; the text, unless vendored, for patterns too."""
    data = path.read_bytes()
    text = _as_text(data)
    parts = Path(shown_as).parts
    findings: list[Finding] = []
    if text is not None and not (VENDORED & set(parts) or path.name in METADATA_FILES):
        for where, unit in _text_units(path, text):
            for number, line in enumerate(unit.splitlines(), start=1):
                if len(line.strip()) < 8:  # shorter than any secret shape a detector knows
                    continue
                for kind, value in detector.line(line):
                    findings.append(Finding(shown_as, f"{where} line {number}".strip(), kind, redact(value)))
    reported = {f.kind for f in findings}
    for secret in detector.stored:  # anywhere else: binary files, vendored ones, image payloads, raw bytes
        kind = f"stored secret {secret.name}"
        if kind in reported:
            continue
        for form in secret.forms():
            at = data.find(form.encode())
            if at >= 0:
                line = data.count(b"\n", 0, at) + 1
                findings.append(Finding(shown_as, f"line {line}", kind, redact(form)))
                break
    return findings


def _files(targets: Iterable[Path]) -> list[Path]:
    """Every file under ``targets`` (folders or files; missing ones are skipped), sorted."""
    return sorted({p for t in targets if t.exists() for p in ([t] if t.is_file() else t.rglob("*")) if p.is_file()})


def scan(root: Path, targets: Iterable[Path], what: str, stored: list[Secret], checkout: Path | None = None,
         records: Iterable[Path] = (), published: Published | None = None) -> ScanReport:
    """Scan every file under ``targets`` (folders or files; missing ones are skipped), shown relative to ``root``.

    ``records``: where the run recorded the digests it verified (:class:`Recorded`, the run's folder);
    ``published``: the checkout's values, when the caller keeps them across scans (one run, many chapters).
    """
    detector = Detector(stored, published or Published(checkout, root), Recorded(records))
    files = _files(targets)
    findings: list[Finding] = []
    for path in files:
        try:
            shown_as = str(path.relative_to(root))
        except ValueError:
            shown_as = str(path)
        findings += scan_file(path, shown_as, detector)
    return ScanReport(what, len(files), len(stored), findings)


def run_targets(layout: Layout, profile: str) -> list[Path]:
    """What a run writes: executed notebooks, artefacts, logs, overlays and summary.json of the profile."""
    return [layout.run_dir(profile)]


def record_sources(layout: Layout, profile: str) -> list[Path]:
    """Where a run records the digests it verified (the executed notebooks' labelled tables): its own folder.

    The site of a profile is built from this run, so its scan reads the same record.
    """
    return [layout.run_dir(profile)]


def site_targets(layout: Layout, profile: str) -> list[Path]:
    """What a site build writes: the staged sources, the pages, myst-nb's executed copies, Sphinx's doctrees."""
    html = layout.html_dir(profile)
    return [layout.site_source_dir(profile), html, html.parent / "jupyter_execute",
            layout.build_dir / ".doctrees" / profile]


def built_profiles(layout: Layout) -> list[str]:
    """The profiles with a run or a site in the build folder."""
    found = {p.name for base in (layout.build_dir / "runs", layout.build_dir / "html") if base.is_dir()
             for p in base.iterdir() if p.is_dir() and p.name != "jupyter_execute"}
    return sorted(found)


def check(layout: Layout, targets: list[Path], what: str, secrets_dir: Path | None = None, also: str = "",
          records: Iterable[Path] = (), published: Published | None = None) -> ScanReport:
    """Scan ``targets`` and raise :class:`SecretLeaked` on any finding; ``also`` adds an earlier failure.

    ``records`` and ``published`` as for :func:`scan`.
    """
    stored = stored_secrets(secrets_dir)
    report = scan(layout.build_dir, targets, what, stored, checkout=layout.root, records=records,
                  published=published)
    if report.findings:
        raise SecretLeaked(f"{what} (under {layout.build_dir})", report.findings, mask(also, stored))
    return report
