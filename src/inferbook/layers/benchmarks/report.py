"""What the sweeps mean: the SLO verdict and the knee, the gateway's cost, GuideLLM beside ours, the L4 reference.

Every table here is computed from :class:`~.result.Sweep` objects, whichever harness measured them, so
the chapter and ``inferbook bench`` say the same thing about the same figures.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Mapping

import pandas as pd
import yaml

from .paired import Paired
from .result import Sweep
from .sweep import Level

#: The latencies the SLOs of ADR-0003 are written on, with the profile's key for each target.
SLO_FIGURES = (("TTFT p95", "ttft_ms", "ttft_p95_ms"), ("ITL p95", "itl_ms", "itl_p95_ms"),
               ("E2E p95", "e2e_ms", "e2e_p95_ms"))
#: The figures compared between the harnesses: (label, level attribute, percentile or None for a rate).
COMPARED = (("TTFT p50 (ms)", "ttft_ms", "p50"), ("TTFT p95 (ms)", "ttft_ms", "p95"),
            ("ITL p50 (ms)", "itl_ms", "p50"), ("ITL p95 (ms)", "itl_ms", "p95"),
            ("E2E p50 (ms)", "e2e_ms", "p50"), ("E2E p95 (ms)", "e2e_ms", "p95"),
            ("output tok/s", "output_tokens_per_s", None), ("req/s", "requests_per_s", None))
#: A difference between the harnesses above this share is flagged and explained.
TOLERANCE = 0.10
#: What a table shows for an optional step that gave no result, when no reason was given.
NOT_MEASURED = "not measured"


def _value(level: Level, attribute: str, quantile: str | None) -> float | None:
    value = getattr(level, attribute)
    return value[quantile] if quantile else value


def meets(level: Level, slo: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether a level meets every SLO (and had no error), and what it missed."""
    missed = [label for label, attribute, key in SLO_FIGURES
              if (value := getattr(level, attribute)["p95"]) is None or value >= slo[key]]
    if level.errors:
        missed.append(f"{level.errors} error(s)")
    return not missed, missed


def slo_table(sweep: Sweep, slo: dict[str, Any]) -> pd.DataFrame:
    """Per level: each SLO latency against its objective, and the verdict."""
    rows = []
    for level in sweep.levels:
        ok, missed = meets(level, slo)
        row: dict[str, Any] = {"concurrency": level.concurrency}
        for label, attribute, key in SLO_FIGURES:
            value = getattr(level, attribute)["p95"]
            row[f"{label} (ms)"] = "-" if value is None else f"{value:,.0f} {'<' if value < slo[key] else '>='} " \
                                                               f"{slo[key]:,}"
        row["errors"] = level.errors
        row["verdict"] = "meets the SLOs" if ok else "misses: " + ", ".join(missed)
        rows.append(row)
    return pd.DataFrame(rows).set_index("concurrency")


def knee(sweep: Sweep, slo: dict[str, Any]) -> int | None:
    """The highest concurrency that meets every SLO with no error (None: no level does)."""
    meeting = [level.concurrency for level in sweep.levels if meets(level, slo)[0]]
    return max(meeting) if meeting else None


def paired_level(direct: Sweep, slo: dict[str, Any]) -> tuple[int, str]:
    """Where to pair direct and the gateway: the direct sweep's knee, else its lowest level; and why."""
    found = knee(direct, slo)
    if found is not None:
        return found, "the knee of the direct sweep"
    return direct.levels[0].concurrency, "no level of the direct sweep met the SLOs: its lowest level"


def gateway_cost(direct: Sweep, gateway: Sweep) -> pd.DataFrame:
    """Per level both sweeps ran: the TTFT the gateway adds (p50, p95) and its throughput against direct."""
    rows = []
    for level in direct.levels:
        other = gateway.level(level.concurrency)
        if other is None:
            continue

        def added(q: str, level: Level = level, other: Level = other) -> float | None:
            a, b = level.ttft_ms[q], other.ttft_ms[q]
            return None if a is None or b is None else round(b - a, 1)

        ratio = (round(other.output_tokens_per_s / level.output_tokens_per_s, 3)
                 if level.output_tokens_per_s else None)
        rows.append({"concurrency": level.concurrency,
                     "TTFT p50 direct / gateway (ms)": _pair(level.ttft_ms["p50"], other.ttft_ms["p50"]),
                     "added TTFT p50 (ms)": added("p50"),
                     "TTFT p95 direct / gateway (ms)": _pair(level.ttft_ms["p95"], other.ttft_ms["p95"]),
                     "added TTFT p95 (ms)": added("p95"),
                     "output tok/s direct / gateway": _pair(level.output_tokens_per_s, other.output_tokens_per_s),
                     "throughput ratio (gateway / direct)": ratio})
    return pd.DataFrame(rows).set_index("concurrency")


def _why(label: str, quantile: str | None, ours: Level, theirs: Level, recomputed: Level | None,
         ours_value: float, theirs_value: float) -> str:
    """The likeliest reason two harnesses disagree on one figure, read from the figures themselves."""
    attribute = next(a for lab, a, _ in COMPARED if lab == label)
    direction = "higher" if theirs_value > ours_value else "lower"
    if quantile and recomputed is not None:
        again = _value(recomputed, attribute, quantile)
        if again is not None and ours_value and abs(again - ours_value) / ours_value <= TOLERANCE:
            return (f"percentile method: GuideLLM takes the lower value, not an interpolation; on its own "
                    f"requests ours gives {again:,.1f}")
    if quantile is None:
        reasons = []
        if theirs.cancelled and theirs_value < ours_value:
            reasons.append(f"GuideLLM cancels the {theirs.cancelled} request(s) running at its deadline and drops "
                           f"their tokens; ours counts every token that arrived in the window")
        completed = round(ours.requests_per_s * ours.window_s)
        if completed < 20:
            reasons.append(f"few completions in the window ({completed} ours): one more or less moves the rate by "
                           f"{1 / max(completed, 1):.0%}")
        if reasons:
            return "; ".join(reasons)
    few = min(ours.succeeded, theirs.succeeded)
    if few < 20:
        return (f"{direction}, on few requests ({ours.succeeded} ours, {theirs.succeeded} GuideLLM's) measured at "
                f"another minute: on shared cores the load of other processes moves them more than 10%")
    return (f"{direction}: measured at another minute, by another client (GuideLLM's worker process and tokenizer "
            f"share the cores with vLLM)")


def compare(ours: Sweep, theirs: Sweep, recomputed: Sweep | None = None) -> pd.DataFrame:
    """Ours beside GuideLLM's, figure by figure and level by level: the relative difference, flagged over 10%."""
    rows = []
    for level in ours.levels:
        other = theirs.level(level.concurrency)
        if other is None:
            continue
        again = recomputed.level(level.concurrency) if recomputed else None
        for label, attribute, quantile in COMPARED:
            a, b = _value(level, attribute, quantile), _value(other, attribute, quantile)
            diff = (b - a) / a if a and b is not None else None
            flagged = diff is not None and abs(diff) > TOLERANCE
            rows.append({"concurrency": level.concurrency, "figure": label, "ours": a, "GuideLLM": b,
                         "difference": None if diff is None else f"{diff:+.0%}", "over 10%": flagged,
                         "why": _why(label, quantile, level, other, again, a, b) if flagged and a and b else ""})
    return pd.DataFrame(rows).set_index(["concurrency", "figure"])


def reference() -> dict[str, Any]:
    """The published L4 baseline (ADR-0003), copied into ``reference.yaml`` with its conditions."""
    return yaml.safe_load(resources.files(__package__).joinpath("reference.yaml").read_text(encoding="utf-8"))


def beside_reference(ours: Sweep, hardware: str) -> pd.DataFrame:
    """The L4 figures and ours, one row per level of either, each labelled with the hardware it ran on."""
    ref = reference()
    rows = []
    for level in ref["levels"]:
        rows.append({"hardware": ref["hardware"], "concurrency": level["concurrency"],
                     "shape (in / out tokens)": f"{ref['input_tokens']} / {ref['output_tokens']}",
                     "output tok/s": level["output_tokens_per_s"],
                     "TTFT p50 / p95 (ms)": f"{level['ttft_p50_ms']} / {level['ttft_p95_ms']}",
                     "ITL p50 / p95 (ms)": f"{level['itl_p50_ms']} / {level['itl_p95_ms']}",
                     "E2E p95 (ms)": level["e2e_p95_ms"]})
    for level in ours.levels:
        rows.append({"hardware": hardware, "concurrency": level.concurrency,
                     "shape (in / out tokens)": f"{ours.shape.input_tokens} / {ours.shape.output_tokens}",
                     "output tok/s": round(level.output_tokens_per_s, 1),
                     "TTFT p50 / p95 (ms)": f"{_fmt(level.ttft_ms['p50'])} / {_fmt(level.ttft_ms['p95'])}",
                     "ITL p50 / p95 (ms)": f"{_fmt(level.itl_ms['p50'], 1)} / {_fmt(level.itl_ms['p95'], 1)}",
                     "E2E p95 (ms)": _fmt(level.e2e_ms["p95"])})
    return pd.DataFrame(rows).set_index(["hardware", "concurrency"])


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pair(direct: float | None, gateway: float | None) -> str:
    return f"{_fmt(direct, 1)} / {_fmt(gateway, 1)}"


def plot(sweeps: list[Sweep | None], slo: dict[str, Any]) -> Any:
    """Throughput and the three SLO latencies (p95) against concurrency, one line per sweep, objectives dashed.

    A sweep that was not measured (None: GuideLLM's, when the book set skips it) has no line, not an empty one.
    """
    import matplotlib.pyplot as plt  # plotting is the chapter's, not every command's

    sweeps = [sweep for sweep in sweeps if sweep is not None]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), constrained_layout=True)
    panels = [("output tokens/s", None, None)] + [(f"{label} (ms)", attribute, key)
                                                   for label, attribute, key in SLO_FIGURES]
    for ax, (title, attribute, key) in zip(axes, panels, strict=True):
        for sweep in sweeps:
            xs = [lv.concurrency for lv in sweep.levels]
            ys = [lv.output_tokens_per_s if attribute is None else getattr(lv, attribute)["p95"] for lv in sweep.levels]
            ax.plot(xs, ys, marker="o", label=f"{sweep.harness.split(' (')[0]}, {sweep.target}")
        if key:
            ax.axhline(slo[key], color="grey", linestyle="--", linewidth=1, label="objective")
        levels = sorted({lv.concurrency for s in sweeps for lv in s.levels})
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent requests")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    plt.close(fig)  # shown once, as the cell's value
    return fig


def figures(direct: Sweep, gateway: Sweep | None, guide: Sweep | None, slo: dict[str, Any],
            paired: Paired | None = None, alone: Mapping[str, Any] | None = None,
            not_measured: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The numbers worth carrying into the closing notes (the paired ratio, when there is one, is the gateway's).

    ``guide``, ``paired`` and ``alone`` (the proxy-alone latency row) are None when not measured: their rows
    then say so, with the reason ``not_measured`` gives for the step (``guidellm``, ``paired``, ``proxy_alone``;
    a skipped step's label, ``Bench.not_measured``), never a figure and never a silent gap.
    """
    why = dict(not_measured or {})
    best = max(direct.levels, key=lambda lv: lv.output_tokens_per_s)
    found = knee(direct, slo)
    rows: list[tuple[str, Any]] = [
        ("knee, direct (highest concurrency meeting the SLOs)", found if found is not None else "none"),
        ("best output tok/s, direct", f"{best.output_tokens_per_s:,.1f} at concurrency {best.concurrency}"),
        ("TTFT p50 at concurrency 1, direct (ms)", _fmt(direct.levels[0].ttft_ms["p50"], 1)),
        ("ITL p50 at concurrency 1, direct (ms)", _fmt(direct.levels[0].itl_ms["p50"], 1)),
    ]
    if gateway is not None:
        rows += _gateway_figures(direct, gateway, found)
    rows.append(_paired_figure(paired, why.get("paired", NOT_MEASURED)))
    rows.append(_alone_figure(alone, why.get("proxy_alone", NOT_MEASURED)))
    if guide is not None:
        table = compare(direct, guide)
        rows.append(("GuideLLM vs ours: figures over 10% apart", f"{int(table['over 10%'].sum())} of {len(table)}"))
    else:
        rows.append(("GuideLLM vs ours: figures over 10% apart", why.get("guidellm", NOT_MEASURED)))
    return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")


def _gateway_figures(direct: Sweep, gateway: Sweep, found: int | None) -> list[tuple[str, Any]]:
    """The sweep's view of the gateway: added TTFT at concurrency 1, the throughput ratio at the top and the knee."""
    cost = gateway_cost(direct, gateway)
    first = cost.iloc[0]
    rows: list[tuple[str, Any]] = [
        ("gateway: added TTFT p50 / p95 at concurrency 1 (ms)",
         f"{first['added TTFT p50 (ms)']} / {first['added TTFT p95 (ms)']}"),
        ("gateway: throughput ratio at the highest level", cost["throughput ratio (gateway / direct)"].iloc[-1])]
    if found is not None and found in cost.index:
        rows.append(("gateway: throughput ratio at the knee", cost.loc[found, "throughput ratio (gateway / direct)"]))
    return rows


def _paired_figure(paired: Paired | None, missing: str) -> tuple[str, Any]:
    """The paired ratio with its spread and the goal's verdict, or why there is none."""
    if paired is None:
        return "gateway: throughput ratio, paired at the knee (per-turn min / median / max)", missing
    spread = paired.spread
    return (f"gateway: throughput ratio, paired at concurrency {paired.concurrency} (per-turn min / median / max)",
            f"{paired.ratio} ({spread['min']} / {spread['median']} / {spread['max']}, {spread['turns']} turns): goal "
            f"{paired.goal:.0%} {'not measured' if paired.met is None else 'met' if paired.met else 'not met'}")


def _alone_figure(alone: Mapping[str, Any] | None, missing: str) -> tuple[str, Any]:
    """The proxy alone's medians: LiteLLM's own overhead header and the wall-clock it adds, or why there are none."""
    label = "the proxy alone: LiteLLM's overhead header p50 / wall-clock added p50 (ms)"
    if alone is None:
        return label, missing
    return label, f"{_fmt(alone.get('header_p50'), 1)} / {_fmt(alone.get('wall_added_p50'), 1)}"
