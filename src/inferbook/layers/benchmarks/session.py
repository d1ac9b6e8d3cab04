"""One benchmark session: the profile's sweep shape and its SLOs (``slo:``), its targets, our sweeps and GuideLLM's.

The chapter and ``inferbook bench`` both go through :class:`Bench`: it connects a target when first asked
(nothing is started), makes the prompts with the served model's tokenizer, runs each level with a
progress display, and keeps the artefacts (JSON checked against its schema, CSV).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ...paths import Layout, default_cache_dir
from ...profile import Profile
from ...say import Say
from ...targets import kind_of
from . import book, guidellm, targets
from .paired import PATHS, Paired, run_turns, slice_shape
from .result import Sweep
from .sweep import Clock, Level, Outcome, Prompts, new_seed, request_once, run_level
from .workload import Shape, Tokenizer

#: ADR-0003's baseline shape, which the cluster profiles run and ``local`` shortens.
FULL_SHAPE = {"input_tokens": 256, "output_tokens": 128}


class Progress:
    """A bar on a terminal (tqdm), one line per level elsewhere (an executed notebook's output stays short)."""

    def __init__(self, label: str, shape: Shape, say: Say, bar: bool | None = None) -> None:
        self.label, self.shape, self.say = label, shape, say
        self.bar = sys.stderr.isatty() if bar is None else bar
        self._tqdm: Any = None
        self._requests = self._errors = 0
        self._seen = 0.0

    def start(self, concurrency: int) -> None:
        self._requests, self._errors, self._seen = 0, 0, 0.0
        if self.bar:
            from tqdm import tqdm

            self._tqdm = tqdm(total=round(self.shape.duration_s, 1), unit="s", file=sys.stderr, leave=True,
                              desc=f"{self.label} c={concurrency}",
                              bar_format="{desc}: {bar} {n:.0f}/{total:.0f} s{postfix}")

    def request(self, concurrency: int, outcome: Outcome, elapsed: float) -> None:
        self._requests += 1
        self._errors += 0 if outcome.ok else 1
        if self._tqdm is not None:
            step = min(elapsed, self.shape.duration_s) - self._seen
            if step > 0:
                self._tqdm.update(step)
                self._seen += step
            self._tqdm.set_postfix_str(f"{self._requests} requests, {self._errors} errors")

    def done(self, level: Level) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        errors = f", {level.errors} failed ({level.error_kinds})" if level.errors else ", none failed"
        ttft = level.ttft_ms["p50"]
        self.say(f"{self.label} c={level.concurrency}: {level.requests} requests in {level.drained_s:.1f} s{errors}; "
                 f"{level.output_tokens_per_s:,.1f} output tok/s; TTFT p50 "
                 f"{'-' if ttft is None else f'{ttft:,.0f}'} ms")


@dataclass
class Bench:
    """The profile's benchmark: its shape (``benchmarks:`` in the profile) and the targets it reaches."""

    profile: Profile
    layout: Layout
    say: Say = print
    cache_dir: Path = field(default_factory=default_cache_dir)
    clock: Clock = time.perf_counter
    connected: dict[str, targets.Target] = field(default_factory=dict)
    _tokenizer: Tokenizer | None = None
    _announced: set[str] = field(default_factory=set)  # skipped steps whose sentence was printed

    @property
    def settings(self) -> dict[str, Any]:
        return self.profile.data["benchmarks"]

    @property
    def slo(self) -> dict[str, Any]:
        """The profile's ``slo:`` (schema defaults filled): the one set of objectives, so the knee is judged by the
        same numbers as the alerts and the observability chapter; they hold for this profile's shape."""
        return self.profile.data["slo"]

    @property
    def hardware(self) -> str:
        """What served the sweep, as the reference table labels it."""
        if kind_of(self.profile).local_processes:
            return f"{os.cpu_count()} CPU cores (this machine)"
        gpu = self.profile.data["gpu"]
        return f"{gpu.get('count', 1)} x {gpu['type']}" if gpu["type"] != "none" else "CPU nodes"

    @property
    def profile_ref(self) -> str:
        """What ``--profile`` / ``PROFILE=`` takes to find this profile again (a shipped name, or a file's path)."""
        return self.profile.ref or self.profile.name

    @property
    def not_measured(self) -> dict[str, str]:
        """The optional steps this profile's book set leaves out, each with the label the tables show for it."""
        return book.not_measured(self.settings, self.profile_ref)

    def runs(self, step: str) -> bool:
        """Whether this profile's book runs the chapter's optional ``step`` (``guidellm``, ``paired``,
        ``proxy_alone``; :mod:`.book`).

        When it does not, says so instead of measuring: the first time in one sentence (what, why, the command
        that runs it), later cells of the same step with a pointer to it, so a skipped step reads as skipped,
        never as an error or an empty cell.
        """
        if book.runs(self.settings, step):
            return True
        first = step not in self._announced
        self._announced.add(step)
        self.say(book.skip_sentence(self.settings, step, self.profile_ref) if first
                 else book.pointer(self.settings, step))
        return False

    def shape(self, **overrides: Any) -> Shape:
        return Shape.from_profile(self.profile.data, **overrides)

    def plan(self) -> pd.DataFrame:
        """The sweep this profile runs, what it shortened from ADR-0003's shape, and the objectives."""
        shape, s = self.shape(), self.settings
        full = shape.input_tokens == FULL_SHAPE["input_tokens"] and shape.output_tokens == FULL_SHAPE["output_tokens"]
        rows = [("concurrency levels", ", ".join(map(str, shape.concurrency))),
                ("tokens in / out per request", f"{shape.input_tokens} / {shape.output_tokens}"
                 + ("" if full else f" (ADR-0003: {FULL_SHAPE['input_tokens']} / {FULL_SHAPE['output_tokens']})")),
                ("seconds per level (new requests start)", shape.duration_s),
                ("harnesses", "inferbook (direct and gateway), GuideLLM " + guidellm.VERSION + " (direct)"
                 + (f", {self.not_measured['guidellm']}" if "guidellm" in self.not_measured else "")),
                ("book set (benchmarks.book)", self._set_text()),
                ("objectives (p95)", f"TTFT < {self.slo['ttft_p95_ms']:,} ms, ITL < {self.slo['itl_p95_ms']:,} ms, "
                                     f"E2E < {self.slo['e2e_p95_ms']:,} ms"),
                ("why this shape", s.get("note") or "ADR-0003's baseline shape")]
        return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting")

    def _set_text(self) -> str:
        """The plan's row for the book set: what it runs, and what it leaves to ``make bench``."""
        chosen = book.book_set(self.settings)
        ran = ["the two sweeps"] + [book.OPTIONAL[step] for step in book.SETS[chosen]]
        text = f"{chosen}: {', '.join(ran)}"
        left = [book.OPTIONAL[step] for step in self.not_measured]
        return text + (f"; left to `{book.command(self.profile_ref)}`: {', '.join(left)}" if left else "")

    def target(self, name: str) -> targets.Target:
        """The target ``name``, connected on first use (the gateway's key is minted then)."""
        if name not in self.connected:
            self.connected[name] = targets.connect(self.profile, self.layout, name, say=self.say)
        return self.connected[name]

    def targets_table(self) -> pd.DataFrame:
        return targets.targets_table([self.target(name) for name in targets.TARGETS])

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            direct = None if kind_of(self.profile).local_processes else self.target("direct")
            self._tokenizer = targets.tokenizer(self.profile, self.cache_dir, direct, self.say)
        return self._tokenizer

    def sweep(self, name: str, shape: Shape | None = None, bar: bool | None = None) -> Sweep:
        """Our closed-loop sweep of target ``name``, level by level, with progress; a warm-up request first."""
        return self.sweeps(name, shape=shape, bar=bar)[0]

    def sweeps(self, *names: str, shape: Shape | None = None, bar: bool | None = None) -> list[Sweep]:
        """Our sweeps of several targets, their levels taken in turn (direct at 1, gateway at 1, direct at 2, ...).

        On a shared machine the load of other processes drifts from minute to minute; taking each level of
        the targets back to back lets a slow minute hit both, so their difference is the layer's, not the
        clock's. Each target gets its own prompts (its own seed) and one warm-up request first.
        """
        shape = shape or self.shape()
        runs = [(*self._ready(name, shape), Progress(name, shape, self.say, bar), []) for name in names]
        for concurrency in shape.concurrency:
            for target, client, prompts, progress, levels in runs:
                progress.start(concurrency)
                level = run_level(client, target.model, prompts, concurrency, shape, self.clock, progress.request)
                progress.done(level)
                levels.append(level)
        return [Sweep("inferbook", target.name, target.url, target.model, self.profile.name, shape, levels,
                      "closed-loop, drained at the deadline", seed=prompts.first_seed)
                for target, _, prompts, _, levels in runs]

    def _ready(self, name: str, shape: Shape) -> tuple[targets.Target, Any, Prompts]:
        """Target ``name`` connected, its client, fresh prompts of the shape, after one warm-up request."""
        target = self.target(name)
        client = target.client()
        prompts = Prompts(self.tokenizer(), shape.input_tokens, new_seed())
        warm = request_once(client, target.model, prompts.take(), shape.output_tokens, self.clock, self.clock(), 1)
        if not warm.ok:
            self.say(f"{name}: the warm-up request failed ({warm.error}); the run goes on and counts errors")
        return target, client, prompts

    def paired(self, concurrency: int, seconds: float | None = None, slices: int | None = None,
               shape: Shape | None = None, bar: bool | None = None, why: str = "") -> Paired:
        """Direct and the gateway at one concurrency, in alternating slices (:mod:`.paired`).

        ``seconds`` per path (each path runs that long in all), in ``slices`` turns; by default the profile's
        ``benchmarks.paired``. The tokens in and out are the sweep's (``shape``, default the profile's).
        """
        settings = self.settings.get("paired") or {}
        seconds = float(seconds if seconds is not None else settings.get("seconds_per_path", 60))
        slices = int(slices if slices is not None else settings.get("slices", 6))
        one = slice_shape(shape or self.shape(), concurrency, seconds, slices)
        ready = {name: self._ready(name, one) for name in PATHS}

        def run(name: str, turn: int) -> Level:
            target, client, prompts = ready[name]
            progress = Progress(f"{name} turn {turn + 1}/{slices}", one, self.say, bar)
            progress.start(concurrency)
            level = run_level(client, target.model, prompts, concurrency, one, self.clock, progress.request)
            progress.done(level)
            return level

        turns = run_turns(run, slices)
        return Paired(concurrency, one, turns, self.profile.name, why=why,
                      targets={name: {"url": target.url, "model": target.model, "seed": prompts.first_seed}
                               for name, (target, _, prompts) in ready.items()})

    def guidellm(self, name: str, out: Path, shape: Shape | None = None) -> tuple[Sweep, Sweep]:
        """GuideLLM's sweep of target ``name`` with the same shape: (as it reports it, recomputed our way)."""
        shape = shape or self.shape()
        target = self.target(name)
        folder = targets.model_dir(self.profile, self.cache_dir, self.say)
        seed = new_seed() // 1000
        settings = self.settings.get("guidellm") or {}
        timeout = (shape.duration_s + 120) * len(shape.concurrency) + 300
        report = guidellm.run(target.base, target.model, target.key(), shape,
                              folder if folder is not None else self.profile.data["models"]["chat"]["id"], out,
                              seed=seed, cache_dir=self.cache_dir, say=self.say,
                              max_worker_processes=settings.get("max_worker_processes"), timeout=timeout)
        common = {"target": name, "url": target.url, "profile": self.profile.name, "seed": seed}
        return (guidellm.parse(report, shape, **common), guidellm.parse(report, shape, recompute=True, **common))

    def save(self, folder: Path, *sweeps: Sweep | None) -> pd.DataFrame:
        """Each sweep as ``bench-<harness>-<target>.json`` (schema-checked) and ``.csv``; the files written.

        A sweep that was not measured (None: a step the book set skips) writes nothing: no empty file stands in
        for a measurement.
        """
        rows = []
        for sweep in (s for s in sweeps if s is not None):
            stem = f"bench-{sweep.harness.split(' ')[0]}{'-recomputed' if 'recomputed' in sweep.harness else ''}" \
                   f"-{sweep.target}"
            for path in (sweep.write_json(folder / f"{stem}.json"), sweep.write_csv(folder / f"{stem}.csv")):
                rows.append({"file": path.name, "harness": sweep.harness, "target": sweep.target,
                             "bytes": path.stat().st_size})
        return pd.DataFrame(rows, columns=["file", "harness", "target", "bytes"]).set_index("file")

    def close(self) -> None:
        for target in self.connected.values():
            target.close()
        self.connected.clear()


def open_bench(profile: Profile, layout: Layout, say: Say = print) -> Bench:
    """The benchmark session of ``profile`` (the chapter's ``benchmarks.open``)."""
    return Bench(profile, layout, say)


#: The verification's status of a check that was done: it passed, or it failed (a skipped one says so instead).
PASSED, FAILED = "passed", "failed"


class Checks:
    """The verification's rows: check, expected, observed, pass, and a status that tells a skipped check from a
    passed one (``chapter.verify`` fails on ``pass`` alone, so a skipped row passes there and says why here)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.rows: list[dict[str, Any]] = []

    def add(self, check: str, expected: str, observed: str, ok: bool, status: str | None = None) -> None:
        self.rows.append({"check": check, "expected": expected, "observed": observed, "pass": bool(ok),
                          "status": status or (PASSED if ok else FAILED)})

    def not_measured(self, step: str, check: str, expected: str) -> None:
        """A step without a result: skipped when the profile's book set leaves it out, else a failed check
        (a step the set runs must have given a result)."""
        label = self.bench.not_measured.get(book.check_step(step))
        if label is not None:
            self.add(check, expected, label, True, status=book.status(self.bench.settings))
        else:
            self.add(check, expected, f"not measured, though the {book.book_set(self.bench.settings)} set runs "
                                      f"{book.OPTIONAL[step]}", False)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["check", "expected", "observed", "pass", "status"]).set_index("check")


def verify(bench: Bench, direct: Sweep, gateway: Sweep, guide: Sweep | None, saved: pd.DataFrame,
           paired: Paired | None = None, alone: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The chapter's checks as rows (expected, observed, pass, status); the paired ratio is a figure, never failed.

    ``guide``, ``paired`` and ``alone`` (the proxy-alone latency row, ``benchmarks.overhead``) are None when not
    measured: a step the profile's book set skips is one row "skipped (quick set)", not a passed check and not
    a missing one; a step the set runs that gave no result fails.
    """
    checks = Checks(bench)
    for sweep in (direct, gateway):
        _sweep_checks(checks, sweep)
    _guidellm_check(checks, direct.shape, guide)
    checks.add("artefacts written", "JSON (schema-checked) and CSV per sweep", f"{len(saved)} files",
               len(saved) >= 2 * (2 + (guide is not None)))
    _paired_checks(checks, paired)
    _alone_checks(checks, alone)
    return checks.table()


def _sweep_checks(checks: Checks, sweep: Sweep) -> None:
    """Every request of one sweep answered, with the exact token counts, and a throughput at every level."""
    shape = sweep.shape
    errors = {k: v for lv in sweep.levels for k, v in lv.error_kinds.items()}
    total = sum(lv.requests for lv in sweep.levels)
    checks.add(f"{sweep.target}: every request answered", "0 errors, each counted by kind",
               f"{sum(lv.errors for lv in sweep.levels)} of {total} failed {errors or ''}".rstrip(),
               all(lv.errors == 0 for lv in sweep.levels) and total > 0)
    checks.add(f"{sweep.target}: exact token counts",
               f"{shape.input_tokens} in, {shape.output_tokens} out, as reported",
               f"{sum(lv.inexact for lv in sweep.levels)} answer(s) differ",
               all(lv.inexact == 0 for lv in sweep.levels))
    checks.add(f"{sweep.target}: throughput at every level", "output tokens/s > 0 at each level",
               ", ".join(f"c={lv.concurrency}: {lv.output_tokens_per_s:,.1f}" for lv in sweep.levels),
               all(lv.output_tokens_per_s > 0 for lv in sweep.levels))


def _guidellm_check(checks: Checks, shape: Shape, guide: Sweep | None) -> None:
    """GuideLLM ran our levels and shape without error (or was not measured)."""
    check = "GuideLLM ran the same sweep"
    expected = f"levels {list(shape.concurrency)}, {shape.input_tokens}/{shape.output_tokens} tokens, no error"
    if guide is None:
        checks.not_measured("guidellm", check, expected)
        return
    same = [lv.concurrency for lv in guide.levels] == list(shape.concurrency)
    checks.add(check, expected,
               f"levels {[lv.concurrency for lv in guide.levels]}, {sum(lv.inexact for lv in guide.levels)} inexact, "
               f"{sum(lv.errors for lv in guide.levels)} error(s)",
               same and all(lv.errors == 0 and lv.inexact == 0 for lv in guide.levels))


def _paired_checks(checks: Checks, paired: Paired | None) -> None:
    """Every request of the paired comparison answered; its ratio shown against the goal as information."""
    if paired is None:
        checks.not_measured("paired", "paired at the knee: every request answered; the ratio against the goal",
                            "0 errors on either path, exact token counts; the ratio as information")
        return
    totals = {path: paired.totals(path) for path in PATHS}
    checks.add(f"paired at concurrency {paired.concurrency}: every request answered",
               "0 errors on either path, each counted by kind; exact token counts",
               "; ".join(f"{path}: {t['errors']} of {t['requests']} failed {t['error_kinds'] or ''}".rstrip()
                         + f", {t['inexact']} inexact" for path, t in totals.items()),
               all(t["errors"] == 0 and t["inexact"] == 0 and t["requests"] > 0 for t in totals.values()))
    checks.add("gateway throughput at the knee, paired (information)",
               f"a figure against the goal (gateway >= {paired.goal:.0%} of direct); a timing never fails the run",
               paired.verdict(), True)


def _alone_checks(checks: Checks, alone: Mapping[str, Any] | None) -> None:
    """Every call of the proxy alone answered with LiteLLM's header; its medians against the goal as information."""
    if alone is None:
        checks.not_measured("proxy_alone", "the proxy alone: every call answered, LiteLLM's overhead header on each",
                            "0 failed calls (stub and gateway); a header median; the medians against 5 ms as "
                            "information")
        return
    header = alone.get("header_p50")
    checks.add("the proxy alone: every call answered, LiteLLM's overhead header on each",
               "0 failed calls (stub and gateway); a header median", f"{alone.get('errors')} failed of "
               f"{alone.get('requests')} per path; header p50 {'-' if header is None else f'{header:.1f} ms'}",
               alone.get("errors") == 0 and bool(alone.get("requests")) and header is not None)
    added = alone.get("wall_added_p50")
    checks.add("the proxy alone against the 5 ms goal (information)", "medians <= 5 ms; a timing never fails the run",
               f"header p50 {'-' if header is None else f'{header:.1f}'} ms, wall-clock added p50 "
               f"{'-' if added is None else f'{added:.1f}'} ms", True)
