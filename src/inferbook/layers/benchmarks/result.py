"""A sweep's result, in the one form both harnesses are reported in: JSON (with a schema), CSV, a table.

The JSON artefact is described by ``inferbook/schemas/benchmark.schema.json`` (``schema:
inferbook-benchmark/1``) and checked against it before it is written: the shape, the workload, the
percentile method, one record per level and one per request. The CSV has one row per level, the
latencies flattened into ``ttft_p95_ms`` and the like.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd

from . import stats
from .sweep import ENDPOINT, Level
from .workload import Shape

SCHEMA_ID = "inferbook-benchmark/1"
LATENCIES = ("ttft", "itl", "e2e")


def load_schema() -> dict[str, Any]:
    """The benchmark artefact's JSON Schema, shipped with the package."""
    return json.loads(resources.files("inferbook").joinpath("schemas/benchmark.schema.json").read_text())


def write_checked(record: dict[str, Any], path: Path) -> Path:
    """Write ``record`` as a JSON artefact only once it matches the benchmark schema."""
    jsonschema.validate(record, load_schema())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Sweep:
    """One harness's sweep of one target: where, with what shape and load model, and each level's figures."""

    harness: str
    target: str
    url: str
    model: str
    profile: str
    shape: Shape
    levels: list[Level]
    load: str
    seed: int | None = None
    started: str = field(default_factory=now)
    percentile_method: str = stats.METHOD

    def level(self, concurrency: int) -> Level | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)

    @classmethod
    def read(cls, path: Path) -> "Sweep":
        """A sweep back from its JSON artefact, checked against the schema first (the chapters that read a run's
        measured curve, economics and capacity, read it here rather than parse it themselves).

        The per-level figures come back as they were written; the per-request records stay in the file (a
        level read back has no ``outcomes``).
        """
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no benchmark artefact at {path}. Fix: run the benchmarks chapter first "
                                    f"(inferbook run --profile NAME), which writes it") from None
        try:
            jsonschema.validate(record, load_schema())
        except jsonschema.ValidationError as error:
            raise ValueError(f"{path} is not a {SCHEMA_ID} artefact: {error.message} at "
                             f"{'/'.join(map(str, error.absolute_path)) or 'the top'}") from None
        work = record["workload"]
        shape = Shape(concurrency=tuple(work["concurrency"]), input_tokens=work["input_tokens"],
                      output_tokens=work["output_tokens"], duration_s=work["duration_s"])
        known = {f.name for f in fields(Level)} - {"outcomes"}
        levels = [Level(**{k: v for k, v in level.items() if k in known}) for level in record["levels"]]
        return cls(harness=record["harness"], target=record["target"], url=record["url"], model=record["model"],
                   profile=record["profile"], shape=shape, levels=levels, load=work["load"], seed=work.get("seed"),
                   started=record["started"], percentile_method=record["percentile_method"])

    def record(self) -> dict[str, Any]:
        """The JSON artefact (schema ``inferbook-benchmark/1``)."""
        return {
            "schema": SCHEMA_ID,
            "harness": self.harness,
            "profile": self.profile,
            "target": self.target,
            "url": self.url,
            "model": self.model,
            "started": self.started,
            "workload": {**self.shape.as_dict(), "endpoint": ENDPOINT, "streamed": True, "ignore_eos": True,
                         "load": self.load, "seed": self.seed},
            "percentile_method": self.percentile_method,
            "levels": [level.record() for level in self.levels],
            "requests": [o.record() for level in self.levels for o in level.outcomes],
        }

    def write_json(self, path: Path) -> Path:
        """Write the JSON artefact, after checking it against the schema (a broken artefact is never kept)."""
        return write_checked(self.record(), path)

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per level (the CSV's and the table's)."""
        rows = []
        for level in self.levels:
            row: dict[str, Any] = {"harness": self.harness, "target": self.target, "concurrency": level.concurrency,
                                   "requests": level.requests, "succeeded": level.succeeded, "errors": level.errors,
                                   "error_kinds": "; ".join(f"{k}: {n}" for k, n in level.error_kinds.items()),
                                   "inexact": level.inexact, "cancelled": level.cancelled,
                                   "output_tokens_per_s": level.output_tokens_per_s,
                                   "requests_per_s": level.requests_per_s}
            for name in LATENCIES:
                figures = getattr(level, f"{name}_ms")
                for q in stats.QUANTILES:
                    row[f"{name}_p{q}_ms"] = figures[f"p{q}"]
            rows.append(row)
        return rows

    def write_csv(self, path: Path) -> Path:
        rows = self.rows()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["concurrency"])
            writer.writeheader()
            writer.writerows(rows)
        return path

    def table(self) -> pd.DataFrame:
        """The sweep at a glance: one row per level, latencies in ms (p50 / p95 / p99), errors by kind."""
        rows = []
        for level in self.levels:
            def trio(name: str, level: Level = level) -> str:
                f = getattr(level, f"{name}_ms")
                return " / ".join("-" if f[f"p{q}"] is None else f"{f[f'p{q}']:,.1f}" for q in stats.QUANTILES)

            rows.append({"concurrency": level.concurrency, "requests": level.requests,
                         "errors": level.errors if not level.errors else
                         f"{level.errors} ({', '.join(f'{k}: {n}' for k, n in level.error_kinds.items())})",
                         "output tok/s": level.output_tokens_per_s, "req/s": level.requests_per_s,
                         "TTFT ms p50/p95/p99": trio("ttft"), "ITL ms p50/p95/p99": trio("itl"),
                         "E2E ms p50/p95/p99": trio("e2e")})
        return pd.DataFrame(rows).set_index("concurrency")
