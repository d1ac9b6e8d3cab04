"""The book runner: execute the chapter notebooks of one profile headlessly with papermill.

A thin layer over papermill in papermill's own manner: an engine registered
under the name ``inferbook`` (an entry point) reports each cell as it starts,
the runner reports each chapter, and a failure stops the run with an error
that names the chapter, the cell and the exception, while the executed
notebook is kept for reading. What a chapter wrote is scanned for secrets
(:mod:`inferbook.leaks`) as soon as it ends, so a leak stops the run there;
whatever happened, the run's whole folder is scanned at the end; a secret
found fails the run.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, TextIO

import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines
from papermill.exceptions import PapermillExecutionError

from . import leaks
from .errors import ChapterFailed, InferbookError
from .paths import Layout
from .profile import Profile
from .toc import Chapter, chapters, select

CellCallback = Callable[[int, int, Any], None]
#: Each file of a run folder by its (modification time in ns, size): what was there before a chapter ran.
Snapshot = dict[Path, tuple[int, int]]
SUMMARY_FILE = "summary.json"
BANNER_TAG = leaks.RUN_RECORD_TAG


# --------------------------------------------------------------------------- papermill engine


class _ReportingManager(NotebookExecutionManager):
    """papermill's execution manager, plus a callback when a cell starts."""

    def __init__(self, *args: Any, on_cell: CellCallback | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_cell = on_cell

    def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        if self._on_cell is not None and cell_index is not None:
            self._on_cell(cell_index, len(self.nb.cells), cell)
        super().cell_start(cell, cell_index, **kwargs)


class ProgressEngine(NBClientEngine):
    """nbclient engine that reports cell starts (papermill engine ``inferbook``)."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: str | None = None,
                         progress_bar: bool = False, log_output: bool = False,
                         autosave_cell_every: int = 30, on_cell: CellCallback | None = None,
                         **kwargs: Any) -> Any:
        nb_man = _ReportingManager(nb, output_path=output_path, progress_bar=progress_bar,
                                   log_output=log_output, autosave_cell_every=autosave_cell_every,
                                   on_cell=on_cell)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


# Registered by name, as papermill's own engines are; an entry point would import this module while
# papermill itself is still importing.
papermill_engines.register("inferbook", ProgressEngine)


def logged_kernel_manager(log_path: Path) -> type[AsyncKernelManager]:
    """A kernel manager whose kernel writes its own stdout/stderr to ``log_path``.

    The kernel's chatter (transport warnings, shutdown tracebacks after a
    timeout) would otherwise interleave with the runner's progress lines;
    cell output is unaffected, it travels over the kernel protocol.
    """

    class LoggedKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
                kw["stdout"] = kw["stderr"] = log
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return LoggedKernelManager


# --------------------------------------------------------------------------- progress


class Reporter(Protocol):
    """Receives the progress of a run (the console, or a test's recorder)."""

    def chapter_start(self, position: int, total: int, chapter: Chapter) -> None: ...
    def cell_start(self, index: int, total: int, kind: str, first_line: str) -> None: ...
    def cell_output(self, text: str) -> None: ...
    def chapter_end(self, result: "ChapterResult") -> None: ...


class ConsoleReporter:
    """Progress as plain lines on stderr: one per chapter, one per code cell."""

    def __init__(self, stream: TextIO | None = None, cells: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.cells = cells

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def chapter_start(self, position: int, total: int, chapter: Chapter) -> None:
        self._say(f"[{position}/{total}] {chapter.name} ({chapter.notebook})")

    def cell_start(self, index: int, total: int, kind: str, first_line: str) -> None:
        if self.cells and kind == "code":
            self._say(f"    cell {index}/{total}: {first_line[:70]}")

    def cell_output(self, text: str) -> None:
        """What a cell prints (its progress lines on long steps), indented under the cell."""
        if self.cells:
            for line in text.splitlines():
                if line.strip():
                    self._say(f"      | {line}")

    def chapter_end(self, result: "ChapterResult") -> None:
        detail = f" - {result.reason}" if result.reason else ""
        self._say(f"    -> {result.status} in {result.seconds:.1f} s{detail}")


class _StreamToReporter:
    """A file-like sink for papermill's ``stdout_file``/``stderr_file``: cell prints reach the console live.

    A secret a cell prints is withheld from the console (the scan after the run names where it was written);
    the stores are read on each write, since a chapter that starts a layer creates its secrets mid-run.
    """

    def __init__(self, reporter: Reporter, secrets_dir: Path | None = None) -> None:
        self.reporter = reporter
        self.secrets_dir = secrets_dir

    def write(self, text: str) -> int:
        self.reporter.cell_output(leaks.mask(text, leaks.stored_secrets(self.secrets_dir)))
        return len(text)

    def flush(self) -> None:
        pass


# --------------------------------------------------------------------------- results


@dataclass
class ChapterResult:
    """What happened to one chapter in a run."""

    name: str
    notebook: str
    status: str  # ok | failed | skipped | not run
    seconds: float = 0.0
    output: str | None = None
    reason: str = ""
    cell: int | None = None
    cell_line: str = ""
    finished_at: str | None = None


@dataclass
class RunSummary:
    """``_build/runs/PROFILE/summary.json``: the record of the latest run of a profile."""

    profile: str
    profile_source: str
    commit: str
    started_at: str
    finished_at: str | None = None
    status: str = "running"
    overrides: dict[str, Any] = field(default_factory=dict)
    chapters: list[ChapterResult] = field(default_factory=list)
    secret_scan: str = ""

    def write(self, run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / SUMMARY_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, run_dir: Path) -> "RunSummary":
        path = run_dir / SUMMARY_FILE
        if not path.is_file():
            raise InferbookError(
                f"no run recorded at {path}; run `inferbook run --profile {run_dir.name}` first"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        data["chapters"] = [ChapterResult(**c) for c in data.get("chapters", [])]
        return cls(**data)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit(root: Path) -> str:
    """Short commit of the checkout, with ``-dirty`` when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


# --------------------------------------------------------------------------- the run


def run_book(profile: Profile, layout: Layout, chapter_names: list[str] | None = None,
             cell_timeout: int | None = None, reporter: Reporter | None = None,
             secrets_dir: Path | None = None) -> RunSummary:
    """Execute the book's chapters for ``profile`` and record the run.

    Chapters whose feature the profile leaves off are skipped. The first
    failing chapter stops the run: its executed notebook is kept, the summary
    says which cell failed, and :class:`ChapterFailed` is raised. What each
    chapter that ran wrote is scanned as soon as it ends, against the secret
    stores in ``secrets_dir`` (default: the user's) and for secret patterns;
    a secret found stops the run there, the later chapters "not run", and
    raises :class:`inferbook.leaks.SecretLeaked`, naming where. At the end,
    failed or not, the run's whole folder is scanned the same way.
    """
    reporter = reporter or ConsoleReporter()
    timeout = cell_timeout or profile.data["runner"]["cell_timeout_seconds"]
    run_dir = layout.run_dir(profile.name)
    todo = select(chapters(layout), chapter_names)
    summary = RunSummary(profile=profile.name, profile_source=profile.source, commit=git_commit(layout.root),
                         started_at=_now(), overrides=profile.overrides)
    previous = _previous_results(run_dir)
    published = leaks.Published(layout.root, layout.build_dir)  # the checkout's values: read once per run, if needed
    for position, chapter in enumerate(todo, start=1):
        reporter.chapter_start(position, len(todo), chapter)
        before: Snapshot = {}
        if chapter.feature and chapter.feature not in profile.features:
            result = ChapterResult(chapter.name, str(chapter.notebook), "skipped",
                                   reason=f"feature '{chapter.feature}' is off in profile {profile.name}",
                                   finished_at=_now())
        else:
            before = _snapshot(run_dir)
            result = _run_chapter(chapter, profile, layout, run_dir, timeout, summary, reporter, secrets_dir)
        reporter.chapter_end(result)
        summary.chapters.append(result)
        summary.write(run_dir)
        if result.status == "failed":
            for rest in todo[position:]:
                summary.chapters.append(ChapterResult(rest.name, str(rest.notebook), "not run",
                                                      reason=f"stopped after {chapter.name} failed"))
            summary.status = "failed"
            summary.finished_at = _now()
            _keep_unrun(summary, previous)
            summary.write(run_dir)
            failure = ChapterFailed(chapter.name, result.cell, result.cell_line, result.reason, result.output or "")
            _scan(summary, layout, run_dir, secrets_dir, published, also=str(failure).splitlines()[0])
            raise failure
        if result.status == "ok":
            _scan_chapter(summary, layout, chapter, _written_since(run_dir, before), todo[position:], previous,
                          secrets_dir, published)
    summary.status = "ok"
    summary.finished_at = _now()
    _keep_unrun(summary, previous)
    summary.write(run_dir)
    _scan(summary, layout, run_dir, secrets_dir, published)
    return summary


def _scan(summary: RunSummary, layout: Layout, run_dir: Path, secrets_dir: Path | None,
          published: leaks.Published | None = None, also: str = "") -> None:
    """Scan what the run wrote; the outcome goes into the summary (never a value), a finding is raised."""
    try:
        report = leaks.check(layout, leaks.run_targets(layout, summary.profile), f"the run of profile "
                             f"{summary.profile}", secrets_dir, also=also,
                             records=leaks.record_sources(layout, summary.profile), published=published)
    except leaks.SecretLeaked as exc:
        summary.secret_scan = f"failed: {len(exc.findings)} secret(s) found"
        summary.write(run_dir)
        raise
    summary.secret_scan = report.summary()
    summary.write(run_dir)


def _scan_chapter(summary: RunSummary, layout: Layout, chapter: Chapter, written: list[Path], rest: list[Chapter],
                  previous: list[ChapterResult], secrets_dir: Path | None, published: leaks.Published) -> None:
    """Scan the files ``chapter`` wrote as soon as it ends, so that a leak stops the run before the next chapter.

    Only what it created or changed is read (its executed notebook, its artefacts, the logs that grew), so the
    cost follows the chapter, not the run. A finding leaves the summary saying so, the ``rest`` "not run", and
    is raised; the later chapters would only add to what must be cleaned up.
    """
    stored = leaks.stored_secrets(secrets_dir)
    report = leaks.scan(layout.build_dir, written, f"chapter {chapter.name}", stored, checkout=layout.root,
                        records=leaks.record_sources(layout, summary.profile), published=published)
    if not report.findings:
        return
    run_dir = layout.run_dir(summary.profile)
    found = f"{len(report.findings)} secret(s) found in what chapter {chapter.name} wrote"
    for later in rest:
        summary.chapters.append(ChapterResult(later.name, str(later.notebook), "not run",
                                              reason=f"stopped after {chapter.name}: {found}"))
    summary.status = "failed"
    summary.finished_at = _now()
    summary.secret_scan = f"failed after chapter {chapter.name}: {found}"
    _keep_unrun(summary, previous)
    summary.write(run_dir)
    resume = ",".join(c.name for c in [chapter, *rest])
    stopped = (f"{', '.join(c.name for c in rest)} not run; after the fix, `inferbook run --profile {summary.profile} "
               f"--chapters {resume}` resumes from it") if rest else "no chapter left"
    raise leaks.SecretLeaked(f"what chapter '{chapter.name}' wrote in the run of profile {summary.profile} "
                             f"(under {layout.build_dir})", report.findings, stopped=stopped)


def _snapshot(folder: Path) -> Snapshot:
    """Every file under ``folder`` by (modification time, size); a file that vanishes meanwhile is left out."""
    found: Snapshot = {}
    for path in folder.rglob("*") if folder.is_dir() else ():
        try:
            status = path.stat()
        except OSError:
            continue
        if stat.S_ISREG(status.st_mode):
            found[path] = (status.st_mtime_ns, status.st_size)
    return found


def _written_since(folder: Path, before: Snapshot) -> list[Path]:
    """The files under ``folder`` created or changed since ``before``: what a chapter (or a server it runs) wrote.

    Compared by modification time and size rather than against a clock, so a coarse file-system timestamp
    cannot hide a file written in the chapter's first instant.
    """
    return sorted(path for path, stamp in _snapshot(folder).items() if before.get(path) != stamp)


def _previous_results(run_dir: Path) -> list[ChapterResult]:
    try:
        return RunSummary.read(run_dir).chapters
    except (InferbookError, TypeError, ValueError):
        return []


def _keep_unrun(summary: RunSummary, previous: list[ChapterResult]) -> None:
    """Carry earlier results of chapters this run did not select (``--chapters``), so the site stays whole."""
    ran = {c.name for c in summary.chapters}
    summary.chapters.extend(c for c in previous if c.name not in ran and c.status != "not run")


def _run_chapter(chapter: Chapter, profile: Profile, layout: Layout, run_dir: Path, timeout: int,
                 summary: RunSummary, reporter: Reporter, secrets_dir: Path | None = None) -> ChapterResult:
    output = run_dir / "notebooks" / chapter.notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    current: dict[str, int] = {}

    def on_cell(index: int, total: int, cell: Any) -> None:
        first = next((line for line in cell.source.splitlines() if line.strip()), "")
        current.update(cell=index + 1, line=first)
        reporter.cell_start(index + 1, total, cell.cell_type, first)

    parameters = {
        "profile_name": profile.ref,
        "overrides": profile.overrides,
        "run_dir": _display_path(run_dir, layout.root),
    }
    started = time.monotonic()
    status, reason = "ok", ""
    try:
        papermill.execute_notebook(
            str(layout.root / chapter.notebook), str(output), parameters=parameters,
            engine_name="inferbook", kernel_name="python3", progress_bar=False,
            request_save_on_cell_execute=True, execution_timeout=timeout, cwd=str(layout.root),
            on_cell=on_cell, stdout_file=_StreamToReporter(reporter, secrets_dir),
            stderr_file=_StreamToReporter(reporter, secrets_dir),
            kernel_manager_class=logged_kernel_manager(run_dir / "logs" / f"{chapter.name}.kernel.log"),
        )
    except PapermillExecutionError as exc:
        status, reason = "failed", f"{exc.ename}: {exc.evalue}"
        current["cell"] = exc.cell_index + 1
        current["line"] = next((line for line in exc.source.splitlines() if line.strip()), "")
    except TimeoutError as exc:  # nbclient's CellTimeoutError; papermill leaves no error banner for it
        status, reason = "failed", f"cell timed out after {timeout} s ({type(exc).__name__})"
    except Exception as exc:  # a dead kernel, a missing kernel spec: still a chapter failure
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
    seconds = time.monotonic() - started
    reason = leaks.mask(reason, leaks.stored_secrets(secrets_dir))  # an exception may quote a key; shown everywhere
    result = ChapterResult(chapter.name, str(chapter.notebook), status, round(seconds, 2),
                           output=str(output), reason=reason,
                           cell=current.get("cell") if status == "failed" else None,
                           cell_line=current.get("line", "") if status == "failed" else "", finished_at=_now())
    if output.is_file():
        _stamp(output, profile, summary, result)
    return result


def _display_path(path: Path, root: Path) -> str:
    """Relative to the checkout when inside it (notebooks run there), so no host path reaches the site."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def _stamp(output: Path, profile: Profile, summary: RunSummary, result: ChapterResult) -> None:
    """Put the run record (when, which profile, which commit, outcome) at the top of the executed copy."""
    nb = nbformat.read(output, as_version=4)
    nb.cells = [c for c in nb.cells if BANNER_TAG not in c.get("metadata", {}).get("tags", [])]
    outcome = "ran to the end" if result.status == "ok" else f"**failed** at cell {result.cell}: {result.reason}"
    text = (
        f":::{{admonition}} Run record\n:class: note\n"
        f"Executed {result.finished_at} with profile `{profile.name}` (target {profile.target_kind}, "
        f"tier {profile.tier}) at commit `{summary.commit}`; {outcome} in {result.seconds:.1f} s.\n:::"
    )
    banner = nbformat.v4.new_markdown_cell(text, metadata={"tags": [BANNER_TAG]})
    position = (1 if nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# ")
                else 0)
    nb.cells.insert(position, banner)
    nb.metadata["inferbook"] = {"profile": profile.name, "commit": summary.commit, "status": result.status,
                                "finished_at": result.finished_at, "seconds": result.seconds}
    nbformat.write(nb, output)
