"""The ``inferbook`` command line.

Every command prints what it did in words; errors are one clear message on
stderr and exit status 1 (2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

import pandas as pd

from . import __version__
from .errors import InferbookError
from .paths import Layout
from .profile import list_profiles, load_profile


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferbook", description="Run and publish the inferbook executable book.")
    parser.add_argument("--version", action="version", version=f"inferbook {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_build_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--build-dir", metavar="DIR", help="build folder (default: _build in the checkout)")

    run = sub.add_parser("run", help="execute the book for a profile, then build its site")
    run.add_argument("--profile", required=True, metavar="NAME", help="profile name (profiles/NAME.yaml) or path")
    run.add_argument("--chapters", metavar="A,B", help="only these chapters, comma-separated (default: all)")
    run.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE",
                     help="override a profile setting by dotted path, e.g. -p serving.max_model_len=4096 (repeatable)")
    run.add_argument("--cell-timeout", type=int, metavar="SECONDS",
                     help="fail a chapter whose cell runs longer (default: the profile's runner.cell_timeout_seconds)")
    run.add_argument("--no-site", action="store_true", help="execute only; do not build the site")
    run.add_argument("--quiet-cells", action="store_true", help="report chapters only, not each cell")
    with_build_dir(run)

    book = sub.add_parser("book", help="build the site of a profile from its executed notebooks (no execution)")
    book.add_argument("--profile", required=True, metavar="NAME")
    with_build_dir(book)

    up = sub.add_parser("up", help="start the embedded local stack's layers, without the notebooks")
    up.add_argument("--profile", required=True, metavar="NAME")
    up.add_argument("--until", metavar="LAYER", help="stop after this layer (default: every enabled layer)")
    up.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE")
    with_build_dir(up)

    down = sub.add_parser("down", help="stop the embedded local stack's layers")
    down.add_argument("--profile", required=True, metavar="NAME")
    down.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE")
    with_build_dir(down)

    status = sub.add_parser("status", help="report each local layer's endpoint and health")
    status.add_argument("--profile", required=True, metavar="NAME")
    status.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE")
    status.add_argument("--json", action="store_true", help="print JSON")
    with_build_dir(status)

    profile = sub.add_parser("profile", help="inspect deployment profiles")
    psub = profile.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = psub.add_parser("show", help="print the resolved profile and its feature table")
    show.add_argument("name", metavar="NAME", help="profile name or path")
    show.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    psub.add_parser("list", help="list the shipped profiles")
    return parser


def _table(frame: pd.DataFrame) -> str:
    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        return frame.to_string()


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import ConsoleReporter, run_book

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    chapters = [c.strip() for c in args.chapters.split(",") if c.strip()] if args.chapters else None
    print(f"inferbook {__version__}: running the book with profile {profile.name} "
          f"({profile.target_kind}, tier {profile.tier}) into {layout.run_dir(profile.name)}", file=sys.stderr)
    started = time.monotonic()
    summary = run_book(profile, layout, chapters, args.cell_timeout, ConsoleReporter(cells=not args.quiet_cells))
    counts = {s: sum(c.status == s for c in summary.chapters) for s in ("ok", "skipped")}
    print(f"book executed in {time.monotonic() - started:.1f} s: {counts['ok']} chapter(s) ok, "
          f"{counts['skipped']} skipped; summary at {layout.run_dir(profile.name) / 'summary.json'}", file=sys.stderr)
    if not args.no_site:
        _build(profile.name, layout)
    return 0


def _build(profile_name: str, layout: Layout) -> None:
    from .site import build_site

    print(f"building the site of profile {profile_name} (no re-execution) ...", file=sys.stderr)
    started = time.monotonic()
    index = build_site(profile_name, layout)
    print(f"site built in {time.monotonic() - started:.1f} s: {index}", file=sys.stderr)


def _cmd_book(args: argparse.Namespace) -> int:
    layout = Layout.discover(args.build_dir)
    _build(args.profile, layout)
    return 0


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cmd_up(args: argparse.Namespace) -> int:
    from . import local

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    started = time.monotonic()
    result = local.up(profile, layout, args.until, say=_say)
    for name, state in result.items():
        print(f"{name}: {state['url']} ({state['model']}) healthy={state['healthy']}")
    _say(f"up in {time.monotonic() - started:.1f} s")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from . import local

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    stopped = local.down(profile, layout, say=_say)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from . import local

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    report = local.status(profile, layout)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, state in report.items():
            health = "healthy" if state["healthy"] else "not running"
            print(f"{name:12} {health:12} {state['url']}  model {state['model']}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    layout = Layout.discover()
    if args.action == "list":
        for name in list_profiles(layout):
            prof = load_profile(name, layout=layout)
            print(f"{name:12} {prof.data['description']}")
        return 0
    profile = load_profile(args.name, overrides=args.params, layout=layout)
    if args.json:
        print(json.dumps(profile.as_dict(), indent=2))
        return 0
    print(f"Profile {profile.name} ({profile.source}) is valid.\n")
    print(_table(profile.summary_table()))
    enabled = profile.features.enabled
    print(f"\nFeatures: {len(enabled)} of {len(profile.features.states)} enabled\n")
    print(_table(profile.features.table()[["enabled", "why", "requires"]]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inferbook`` console script."""
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "book": _cmd_book, "profile": _cmd_profile, "up": _cmd_up, "down": _cmd_down,
                "status": _cmd_status}
    try:
        return handlers[args.command](args)
    except InferbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
