"""``inferbook bench``: a closed-loop sweep of the profile's running stack, straight to vLLM or through the gateway;
``inferbook overhead``: the proxy's own cost, measured against a stub upstream."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ...console import add_build_dir, add_overrides, say, table_text
from ...layer import Handler
from ...paths import Layout
from ...profile import load_profile


def commands(sub: Any) -> dict[str, Handler]:
    """Add ``bench`` to the command line."""
    bench = sub.add_parser("bench", help="closed-loop sweep of streamed completions: TTFT, ITL, E2E, throughput, "
                                         "errors per concurrency level")
    bench.add_argument("--profile", required=True, metavar="NAME")
    bench.add_argument("--target", choices=("direct", "gateway", "both"), default="direct",
                       help="vLLM with its key, the gateway with a tenant key minted for the sweep, or both, their "
                            "levels taken in turn, with the gateway's added TTFT and throughput ratio (default direct)")
    bench.add_argument("--concurrency", metavar="1,2,4,8",
                       help="levels (default: the profile's benchmarks.concurrency)")
    bench.add_argument("--input-tokens", type=int, metavar="N", help="prompt tokens per request, exact")
    bench.add_argument("--output-tokens", type=int, metavar="N", help="output tokens per request, exact (ignore_eos)")
    bench.add_argument("--duration", type=float, metavar="S", help="seconds per level in which requests start")
    bench.add_argument("--json", metavar="OUT", help="write the sweep as JSON (schema inferbook-benchmark/1); with "
                                                     "--target both, OUT-direct.json and OUT-gateway.json")
    bench.add_argument("--csv", metavar="OUT", help="write one row per level as CSV (with both: one file per target)")
    bench.add_argument("--paired-at", nargs="?", const="knee", metavar="knee|N",
                       help="with --target both, after the sweeps: direct and the gateway at one concurrency in "
                            "alternating slices, for a throughput ratio a busy machine hits alike (default level: "
                            "the direct sweep's knee); with --json, also OUT-paired.json")
    bench.add_argument("--paired-seconds", type=float, metavar="S",
                       help="seconds each path runs in the paired comparison (default: the profile's "
                            "benchmarks.paired.seconds_per_path)")
    bench.add_argument("--paired-slices", type=int, metavar="N",
                       help="turns the paired comparison is cut into (default: benchmarks.paired.slices)")
    bench.add_argument("--guidellm", action="store_true",
                       help="also run GuideLLM (the reference harness) with the same shape and compare")
    add_overrides(bench)
    add_build_dir(bench)
    _overhead_parser(sub)
    return {"bench": _cmd_bench, "overhead": _cmd_overhead}


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import report
    from .paired import parse_level, slice_shape
    from .session import Bench
    from .workload import WorkloadError, parse_levels

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    bench = Bench(profile, layout, say=say)
    shape = bench.shape(concurrency=parse_levels(args.concurrency) if args.concurrency else None,
                        input_tokens=args.input_tokens, output_tokens=args.output_tokens, duration_s=args.duration)
    names = ("direct", "gateway") if args.target == "both" else (args.target,)
    paired_at = parse_level(args.paired_at) if args.paired_at is not None else None
    if args.paired_at is None and (args.paired_seconds is not None or args.paired_slices is not None):
        raise WorkloadError("--paired-seconds and --paired-slices shape the paired comparison. Fix: add --paired-at "
                            "(knee, or a concurrency)")
    if args.paired_at is not None:
        if args.target != "both":
            raise WorkloadError("--paired-at compares direct and the gateway. Fix: add --target both")
        slice_shape(shape, paired_at or 1, 1 if args.paired_seconds is None else args.paired_seconds,
                    1 if args.paired_slices is None else args.paired_slices)  # a wrong value is refused now, not late
    try:
        sweeps = bench.sweeps(*names, shape=shape)
        for sweep in sweeps:
            print(f"\n{sweep.target}:")
            print(table_text(sweep.table()))
            print()
            print(table_text(report.slo_table(sweep, bench.slo)))
            found = report.knee(sweep, bench.slo)
            print(f"\nknee (highest concurrency meeting the SLOs): {found if found is not None else 'none'}")
            for option, write in ((args.json, sweep.write_json), (args.csv, sweep.write_csv)):
                if option:
                    write(_per_target(Path(option), sweep.target, len(sweeps)))
        if len(sweeps) == 2:
            print("\nwhat the gateway costs:")
            print(table_text(report.gateway_cost(*sweeps)))
        if args.paired_at is not None:
            level, why = (paired_at, "given") if paired_at else report.paired_level(sweeps[0], bench.slo)
            paired = bench.paired(level, args.paired_seconds, args.paired_slices, shape=shape, why=why)
            print(f"\npaired at concurrency {level} ({why}):")
            print(table_text(paired.table()))
            print()
            print(table_text(paired.turns_table()))
            print(f"\n{paired.verdict()}")
            if args.json:
                say(f"paired comparison: {paired.write_json(_per_target(Path(args.json), 'paired', 2))}")
        if args.guidellm:
            out = layout.run_dir(profile.name) / "artifacts" / f"guidellm-{names[0]}.json"
            if args.json:
                out = _per_target(Path(args.json), names[0], len(sweeps)).with_suffix(".guidellm-report.json")
            theirs, recomputed = bench.guidellm(names[0], out, shape)
            print(f"\nGuideLLM beside ours ({names[0]}):")
            print(table_text(report.compare(sweeps[0], theirs, recomputed)))
            say(f"GuideLLM's report: {out}")
    finally:
        bench.close()
    return 0


def _per_target(path: Path, target: str, sweeps: int) -> Path:
    """``OUT`` for one sweep; ``OUT-<target>.<suffix>`` when one command writes several."""
    return path if sweeps == 1 else path.with_name(f"{path.stem}-{target}{path.suffix}")


def _overhead_parser(sub: Any) -> None:
    over = sub.add_parser("overhead", help="what the LiteLLM proxy adds to a call, alone: its own gateway and ledger "
                                           "in front of a ~1 ms stub upstream, per setting")
    over.add_argument("--profile", required=True, metavar="NAME", help="the profile whose gateway configuration "
                      "is measured (its own stack is not touched: the measurement uses ports of its own)")
    over.add_argument("--settings", default="shipped", metavar="NAMES",
                      help="'shipped' (default), 'all', or comma-separated candidate names: each is measured beside "
                           "the shipped configuration, calls taking turns")
    over.add_argument("--list-settings", action="store_true", help="print the candidate settings and exit")
    over.add_argument("--repeats", type=int, default=3, metavar="N", help="repeats per setting (median reported)")
    over.add_argument("--requests", type=int, default=200, metavar="N", help="sequential one-token calls per path")
    over.add_argument("--concurrency", type=int, default=8, metavar="N",
                      help="closed-loop clients for the throughput run (0: none)")
    over.add_argument("--seconds", type=float, default=10, metavar="S", help="throughput run length per path")
    over.add_argument("--py-spy", type=float, metavar="S", dest="py_spy",
                      help="instead: the shipped proxy alone (--requests calls), then sampled by py-spy for S "
                           "seconds: where its CPU goes")
    over.add_argument("--json", metavar="OUT", help="write the table (or the profile) as JSON")
    over.add_argument("--csv", metavar="OUT", help="write the table as CSV")
    add_overrides(over)
    add_build_dir(over)


def _cmd_overhead(args: argparse.Namespace) -> int:
    from . import overhead

    if args.list_settings:
        for setting in (overhead.SHIPPED, *overhead.CANDIDATES):
            print(f"{setting.name}: {setting.why}")
        return 0
    for option in ("repeats", "requests"):
        if getattr(args, option) < 1:
            raise SystemExit(f"inferbook overhead: --{option} must be at least 1, not {getattr(args, option)}")
    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    if args.py_spy:
        alone = overhead.proxy_alone(profile, layout, requests=args.requests, py_spy_seconds=args.py_spy, say=say)
        print(table_text(alone.goals()))
        if alone.profile is None:
            raise SystemExit(f"inferbook overhead: {alone.refused}")
        print()
        print(table_text(alone.profile.stages))
        print()
        print(table_text(alone.profile.hottest))
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"latency": alone.row, "calls_sampled": alone.profile.calls,
                 "cpu_ms_per_call": alone.profile.cpu_ms_per_call, "header_p50_ms": alone.profile.header_p50,
                 "stages": alone.profile.stages.reset_index().to_dict("records"),
                 "hottest": alone.profile.hottest.reset_index().to_dict("records")}, indent=2))
        return 0
    try:
        settings = overhead.settings_named(args.settings)
    except ValueError as exc:
        raise SystemExit(f"inferbook overhead: {exc}") from None
    found = overhead.against_stub(profile, layout, settings, repeats=args.repeats, requests=args.requests,
                                  concurrency=args.concurrency, seconds=args.seconds, say=say)
    print(table_text(found.T if len(found.columns) > len(found.index) else found))
    if args.json:
        Path(args.json).write_text(found.reset_index().to_json(orient="records", indent=2))
    if args.csv:
        found.to_csv(args.csv)
    return 0
