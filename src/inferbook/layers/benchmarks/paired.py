"""The gateway's throughput against direct, paired: both paths in alternating time slices at one concurrency.

The sweep runs each target's level once, with a few requests, and on a shared machine the load of other
processes drifts between the two: a proxy whose cost is tens of milliseconds against requests of seconds
is lost in that noise (one run gave the gateway 0.67 of direct's throughput at one level and 1.65 at the
next). The paired comparison measures the one figure the gateway's goal is written on at one level, in
``slices`` turns: in each turn each path runs one closed-loop slice of ``seconds / slices`` seconds (the
sweep's :func:`~.sweep.run_level`, drained at the slice's deadline), one path after the other, the order
swapped from turn to turn (direct first, then the gateway first, ...) so that neither always has the first
slot; same shape, prompts made by the same tokenizer (each path its own prompt numbers). A busy spell of
the machine then falls on both alike.

Per path the slices are added up: requests, successes, errors by kind (counted, never dropped), the output
tokens that arrived within the slices' windows over the windows' seconds (output tokens/s), and TTFT and
E2E p50 over every successful request of every slice. The ratio is the gateway's output tokens/s over
direct's. Its spread is the per-turn ratios (the gateway's slice against direct's slice of the same turn)
by their minimum, median and maximum; a turn whose direct slice produced no token has no ratio and is left
out of the spread (the count of turns says so).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import stats
from .result import now, write_checked
from .sweep import ENDPOINT, Level, window_tokens
from .workload import Shape, WorkloadError

PATHS = ("direct", "gateway")
#: The gateway's goal: at the knee, at least this share of direct's output throughput.
GOAL = 0.95
SCHEMA_ID = "inferbook-benchmark-paired/1"
LOAD = "closed-loop slices, each drained at its deadline; direct and gateway in turn, the order swapped each turn"
SPREAD = "per-turn ratios (gateway slice / direct slice of the same turn): min, median, max"
#: Runs one slice: (path, turn) -> the slice's level.
SliceRunner = Callable[[str, int], Level]


def order(turn: int) -> tuple[str, str]:
    """Which path goes first in a turn: direct in even turns, the gateway in odd ones."""
    return PATHS if turn % 2 == 0 else (PATHS[1], PATHS[0])


def slice_shape(shape: Shape, concurrency: int, seconds_per_path: float, slices: int) -> Shape:
    """One slice's shape: the sweep's tokens in and out, one level, ``seconds_per_path / slices`` seconds."""
    if slices < 1 or int(slices) != slices:
        raise WorkloadError(f"{slices} slices: a paired comparison needs 1 or more whole slices, e.g. 6")
    if seconds_per_path <= 0:
        raise WorkloadError("a paired comparison needs seconds above 0 per path. Fix: e.g. --paired-seconds 60")
    return Shape((concurrency,), shape.input_tokens, shape.output_tokens, seconds_per_path / slices)


def parse_level(text: str) -> int | None:
    """``--paired-at``: ``knee`` (None: the knee of the direct sweep) or a concurrency of 1 or more."""
    if text.strip().lower() == "knee":
        return None
    try:
        level = int(text)
    except ValueError:
        level = 0
    if level < 1:
        raise WorkloadError(f"--paired-at {text!r}: give knee or a concurrency of 1 or more, e.g. --paired-at 2")
    return level


@dataclass
class Turn:
    """One turn: each path's slice, and the order they ran in."""

    index: int
    order: tuple[str, ...]
    levels: dict[str, Level]

    def rate(self, path: str) -> float:
        level = self.levels[path]
        return window_tokens(level) / level.window_s

    @property
    def ratio(self) -> float | None:
        direct = self.rate("direct")
        return self.rate("gateway") / direct if direct else None


def run_turns(run: SliceRunner, slices: int) -> list[Turn]:
    """``slices`` turns of one slice per path, the order swapped each turn."""
    turns = []
    for index in range(slices):
        levels = {path: run(path, index) for path in order(index)}
        turns.append(Turn(index, order(index), levels))
    return turns


@dataclass
class Paired:
    """A paired comparison's turns, with each path's totals, the ratio, its spread and the verdict."""

    concurrency: int
    shape: Shape  # one slice's: the level, the tokens, the slice's seconds
    turns: list[Turn]
    profile: str
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> url, model, seed
    why: str = ""  # why this level (the knee of the direct sweep, or given)
    goal: float = GOAL
    started: str = field(default_factory=now)

    @property
    def slices(self) -> int:
        return len(self.turns)

    @property
    def seconds_per_path(self) -> float:
        return self.shape.duration_s * self.slices

    def totals(self, path: str) -> dict[str, Any]:
        """One path's slices added up: requests, errors by kind, window tokens and seconds, tok/s, p50s (ms)."""
        levels = [turn.levels[path] for turn in self.turns]
        good = [o for level in levels for o in level.outcomes if o.ok]
        kinds: Counter[str] = Counter()
        for level in levels:
            kinds.update(level.error_kinds)
        tokens = sum(window_tokens(level) for level in levels)
        window = sum(level.window_s for level in levels)

        def p50_ms(values: list[float]) -> float | None:
            value = stats.percentile(values, 50)
            return None if value is None else round(value * 1000, 3)

        return {"requests": sum(lv.requests for lv in levels), "succeeded": sum(lv.succeeded for lv in levels),
                "errors": sum(lv.errors for lv in levels), "error_kinds": dict(sorted(kinds.items())),
                "inexact": sum(lv.inexact for lv in levels), "output_tokens": round(tokens, 3),
                "window_s": round(window, 3), "output_tokens_per_s": round(tokens / window, 3) if window else 0.0,
                "ttft_p50_ms": p50_ms([o.ttft_s for o in good if o.ttft_s is not None]),
                "e2e_p50_ms": p50_ms([o.e2e_s for o in good if o.e2e_s is not None])}

    @property
    def ratio(self) -> float | None:
        """The gateway's output tokens/s over direct's, over all slices (None: direct produced no token)."""
        direct, gateway = self._rate("direct"), self._rate("gateway")
        return round(gateway / direct, 3) if direct else None

    def _rate(self, path: str) -> float:
        levels = [turn.levels[path] for turn in self.turns]
        window = sum(level.window_s for level in levels)
        return sum(window_tokens(level) for level in levels) / window if window else 0.0

    @property
    def spread(self) -> dict[str, Any]:
        """The per-turn ratios' min, median and max, and how many turns had one."""
        ratios = [r for r in (turn.ratio for turn in self.turns) if r is not None]
        figures = {"min": min(ratios, default=None), "median": stats.percentile(ratios, 50),
                   "max": max(ratios, default=None)}
        return {**{k: None if v is None else round(v, 3) for k, v in figures.items()}, "turns": len(ratios)}

    @property
    def met(self) -> bool | None:
        """Whether the ratio reaches the goal (None: no ratio)."""
        return None if self.ratio is None else self.ratio >= self.goal

    def verdict(self) -> str:
        """The ratio, its spread and the verdict against the goal, in one sentence."""
        if self.ratio is None:
            return f"no ratio at concurrency {self.concurrency}: direct produced no output token in its slices"
        s = self.spread
        said = (f"gateway / direct output tok/s at concurrency {self.concurrency}: {self.ratio:.3f} (per-turn ratios "
                f"min {s['min']:.3f}, median {s['median']:.3f}, max {s['max']:.3f} over {s['turns']} turns): "
                f"the {self.goal:.0%} goal is {'met' if self.met else 'not met'}")
        if s["min"] < self.goal <= s["max"]:
            said += f" (single turns fall either side of {self.goal:.0%})"
        return said

    def table(self) -> pd.DataFrame:
        """Per path: requests, completed, errors, window output tokens, output tok/s, TTFT and E2E p50."""
        rows = []
        for path in PATHS:
            t = self.totals(path)
            rows.append({"path": path, "requests": t["requests"], "completed": t["succeeded"],
                         "errors": t["errors"] if not t["errors"] else
                         f"{t['errors']} ({', '.join(f'{k}: {n}' for k, n in t['error_kinds'].items())})",
                         "output tokens (in the windows)": round(t["output_tokens"], 1),
                         "seconds (windows)": t["window_s"], "output tok/s": t["output_tokens_per_s"],
                         "TTFT p50 (ms)": t["ttft_p50_ms"], "E2E p50 (ms)": t["e2e_p50_ms"]})
        return pd.DataFrame(rows).set_index("path")

    def turns_table(self) -> pd.DataFrame:
        """Per turn: which path went first, each path's output tok/s and requests, and the turn's ratio."""
        rows = []
        for turn in self.turns:
            ratio = turn.ratio
            rows.append({"turn": turn.index + 1, "order": " then ".join(turn.order),
                         **{f"{path} tok/s": round(turn.rate(path), 2) for path in PATHS},
                         **{f"{path} requests": turn.levels[path].requests for path in PATHS},
                         "ratio (gateway / direct)": None if ratio is None else round(ratio, 3)})
        return pd.DataFrame(rows).set_index("turn")

    def summary(self) -> pd.DataFrame:
        """The comparison's setting, the ratio, its spread and the verdict against the goal."""
        s = self.spread

        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        rows = [("level (concurrency)", f"{self.concurrency}" + (f" ({self.why})" if self.why else "")),
                ("slices", f"{self.slices} turns of {self.shape.duration_s:g} s per path, the order swapped each "
                           f"turn ({self.seconds_per_path:g} s per path)"),
                ("output tok/s, gateway / direct", fmt(self.ratio)),
                ("spread: per-turn ratios min / median / max",
                 f"{fmt(s['min'])} / {fmt(s['median'])} / {fmt(s['max'])} ({s['turns']} turns)"),
                (f"goal: at least {self.goal:.0%} of direct", "not measured" if self.met is None else
                 "met" if self.met else "not met")]
        return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")

    def record(self) -> dict[str, Any]:
        """The JSON artefact (schema ``inferbook-benchmark-paired/1`` in ``benchmark.schema.json``)."""
        return {
            "schema": SCHEMA_ID,
            "harness": "inferbook",
            "profile": self.profile,
            "started": self.started,
            "concurrency": self.concurrency,
            "why_this_level": self.why,
            "workload": {"input_tokens": self.shape.input_tokens, "output_tokens": self.shape.output_tokens,
                         "slices": self.slices, "slice_s": self.shape.duration_s,
                         "seconds_per_path": self.seconds_per_path, "endpoint": ENDPOINT, "streamed": True,
                         "ignore_eos": True, "load": LOAD},
            "percentile_method": stats.METHOD,
            "targets": {path: self.targets.get(path, {}) for path in PATHS},
            "paths": {path: self.totals(path) for path in PATHS},
            "ratio": {"output_tokens_per_s": self.ratio, **self.spread, "spread": SPREAD},
            "goal": {"ratio": self.goal, "met": self.met},
            "turns": [{"turn": turn.index + 1, "order": list(turn.order),
                       "ratio": None if turn.ratio is None else round(turn.ratio, 3),
                       **{path: {"level": turn.levels[path].record(),
                                 "requests": [o.record() for o in turn.levels[path].outcomes]} for path in PATHS}}
                      for turn in self.turns],
        }

    def write_json(self, path: Path) -> Path:
        """Write the JSON artefact after checking it against the schema."""
        return write_checked(self.record(), path)
