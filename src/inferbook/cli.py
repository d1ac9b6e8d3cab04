"""The ``inferbook`` command line.

Every command prints what it did in words; errors are one clear message on
stderr and exit status 1 (2 for a malformed command line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

import pandas as pd

from . import __version__
from .console import add_build_dir, add_overrides
from .console import say as _say
from .console import table_text as _table
from .errors import InferbookError
from .layer import Handler
from .paths import Layout
from .profile import list_profiles, load_profile
from .targets import kind_of


def _parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(prog="inferbook", description="Run and publish the inferbook executable book.")
    parser.add_argument("--version", action="version", version=f"inferbook {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="execute the book for a profile, then build its site")
    run.add_argument("--profile", required=True, metavar="NAME", help="profile name (profiles/NAME.yaml) or path")
    run.add_argument("--chapters", metavar="A,B", help="only these chapters, comma-separated (default: all)")
    add_overrides(run)
    run.add_argument("--cell-timeout", type=int, metavar="SECONDS",
                     help="fail a chapter whose cell runs longer (default: the profile's runner.cell_timeout_seconds)")
    run.add_argument("--no-site", action="store_true", help="execute only; do not build the site")
    run.add_argument("--quiet-cells", action="store_true", help="report chapters only, not each cell")
    add_build_dir(run)

    book = sub.add_parser("book", help="build the site of a profile from its executed notebooks (no execution)")
    book.add_argument("--profile", required=True, metavar="NAME")
    add_build_dir(book)

    scan = sub.add_parser("scan", help="check what runs and site builds wrote for secrets (run and book do this too)")
    scan.add_argument("--profile", metavar="NAME",
                      help="only this profile's run and site (default: every profile in the build folder)")
    add_build_dir(scan)

    up = sub.add_parser("up", help="start the embedded local stack's layers, without the notebooks")
    up.add_argument("--profile", required=True, metavar="NAME")
    up.add_argument("--until", metavar="LAYER", help="stop after this layer (default: every enabled layer)")
    add_overrides(up)
    add_build_dir(up)

    down = sub.add_parser("down", help="stop the embedded local stack's layers")
    down.add_argument("--profile", required=True, metavar="NAME")
    add_overrides(down)
    add_build_dir(down)

    status = sub.add_parser("status", help="report each local layer's endpoint and health")
    status.add_argument("--profile", required=True, metavar="NAME")
    add_overrides(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    add_build_dir(status)

    render = sub.add_parser("render", help="print a profile's rendered manifests as multi-document YAML "
                                           "(for policy checks and kubectl diff -f -)")
    render.add_argument("--profile", required=True, metavar="NAME", help="profile name (profiles/NAME.yaml) or path")
    render.add_argument("--layer", metavar="LAYER",
                        help="only this layer (default: every layer with manifests the profile enables)")
    add_overrides(render)
    add_build_dir(render)

    check = sub.add_parser("validate", help="render and validate profiles' manifests offline: built-in kinds against "
                                            "the Kubernetes schema, custom resources against the pinned CRDs, and "
                                            "the book's policy rules")
    which = check.add_mutually_exclusive_group(required=True)
    which.add_argument("--profile", action="append", metavar="NAME", help="this profile (repeatable)")
    which.add_argument("--all", action="store_true", help="every shipped profile (profiles/*.yaml)")
    check.add_argument("--layer", metavar="LAYER", help="only this layer (default: every layer the profile enables)")
    check.add_argument("--details", action="store_true", help="print every finding, not only failures and warnings")
    add_overrides(check)
    add_build_dir(check)

    export = sub.add_parser("export", help="write each enabled layer's rendered objects to "
                                           "<gitops.path_prefix>/<profile>/<layer>/ with a kustomization.yaml, "
                                           "the folders a fork commits for Argo CD (ADR-0028)")
    export.add_argument("--profile", required=True, metavar="NAME", help="profile name (profiles/NAME.yaml) or path")
    export.add_argument("--root", metavar="DIR",
                        help="the repository root the folders go under (default: this checkout)")
    add_overrides(export)
    add_build_dir(export)

    profile = sub.add_parser("profile", help="inspect deployment profiles")
    psub = profile.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = psub.add_parser("show", help="print the resolved profile and its feature table")
    show.add_argument("name", metavar="NAME", help="profile name or path")
    add_overrides(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    psub.add_parser("list", help="list the shipped profiles")

    crds = sub.add_parser("crds", help="the committed CRD schemas validation reads (manifests/crds/)")
    csub = crds.add_subparsers(dest="action", required=True, metavar="ACTION")
    cupdate = csub.add_parser("update", help="regenerate them from the pinned upstream CRDs (sha256 verified first)")
    cupdate.add_argument("--from", dest="from_dir", metavar="DIR",
                         help="a folder of upstream CRD files laid out as the lock's local_path (default: download "
                              "each file by its pinned tag)")
    csub.add_parser("verify", help="check every committed schema against its sha256 in manifests/crds.lock.yaml")
    handlers: dict[str, Handler] = {"run": _cmd_run, "book": _cmd_book, "profile": _cmd_profile, "up": _cmd_up,
                                    "down": _cmd_down, "status": _cmd_status, "crds": _cmd_crds, "scan": _cmd_scan,
                                    "render": _cmd_render, "validate": _cmd_validate, "export": _cmd_export}
    handlers.update(_layer_commands(sub))
    return parser, handlers


def _layer_commands(sub: Any) -> dict[str, Handler]:
    """The commands the layers bring (``keys``, ``ide-config``, ...), from the registry."""
    from .layers import LAYERS

    handlers: dict[str, Handler] = {}
    for layer in LAYERS:
        if layer.commands is not None:
            handlers.update(layer.commands(sub))
    return handlers


def _cmd_run(args: argparse.Namespace) -> int:
    from . import stack
    from .runner import ConsoleReporter, run_book

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    chapters = [c.strip() for c in args.chapters.split(",") if c.strip()] if args.chapters else None
    print(f"inferbook {__version__}: running the book with profile {profile.name} "
          f"({profile.target_kind}, tier {profile.tier}) into {layout.run_dir(profile.name)}", file=sys.stderr)
    started = time.monotonic()
    here = kind_of(profile).local_processes  # the layers run as processes on this machine
    live_before = stack.live(profile, layout) if here else set()
    try:
        summary = run_book(profile, layout, chapters, args.cell_timeout, ConsoleReporter(cells=not args.quiet_cells))
    except KeyboardInterrupt:
        if here:  # what this run started goes; what it found running stays as it was
            print("interrupted: stopping the local servers this run started ...", file=sys.stderr)
            stopped = stack.down(profile, layout, say=lambda line: print(line, file=sys.stderr), keep=live_before)
            print(f"stopped: {', '.join(stopped) or 'nothing'}; left running as found: "
                  f"{', '.join(sorted(live_before)) or 'nothing'}", file=sys.stderr)
        raise
    counts = {s: sum(c.status == s for c in summary.chapters) for s in ("ok", "skipped")}
    print(f"book executed in {time.monotonic() - started:.1f} s: {counts['ok']} chapter(s) ok, "
          f"{counts['skipped']} skipped; summary at {layout.run_dir(profile.name) / 'summary.json'}", file=sys.stderr)
    print(f"secret scan of the run: {summary.secret_scan}", file=sys.stderr)
    if not args.no_site:
        _build(profile.name, layout)
    return 0


def _build(profile_name: str, layout: Layout) -> None:
    from .site import build_site

    print(f"building the site of profile {profile_name} (no re-execution) ...", file=sys.stderr)
    started = time.monotonic()
    index = build_site(profile_name, layout)
    print(f"site built in {time.monotonic() - started:.1f} s: {index} (secret scan: no secret found)", file=sys.stderr)


def _cmd_book(args: argparse.Namespace) -> int:
    layout = Layout.discover(args.build_dir)
    _build(args.profile, layout)
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    from . import leaks

    layout = Layout.discover(args.build_dir)
    profiles = [args.profile] if args.profile else leaks.built_profiles(layout)
    if not profiles:
        raise InferbookError(f"nothing to scan: {layout.build_dir} holds no run or site; "
                             "run `inferbook run --profile NAME` first")
    stored = leaks.stored_secrets()
    findings: list[leaks.Finding] = []
    for name in profiles:
        for what, targets in (("run", leaks.run_targets(layout, name)), ("site", leaks.site_targets(layout, name))):
            report = leaks.scan(layout.build_dir, targets, what, stored, checkout=layout.root,
                                records=leaks.record_sources(layout, name))
            print(f"{name} {what}: {report.summary()}")
            findings += report.findings
    if findings:
        raise leaks.SecretLeaked(f"the build folder {layout.build_dir}", findings)
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from . import stack

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    started = time.monotonic()
    result = stack.up(profile, layout, args.until, say=_say)
    for name, state in result.items():
        model = f" ({state['model']})" if state.get("model") else ""
        print(f"{name}: {state['url']}{model} healthy={state['healthy']}")
    _say(f"up in {time.monotonic() - started:.1f} s")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from . import stack

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    stopped = stack.down(profile, layout, say=_say)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from . import stack

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    report = stack.status(profile, layout)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, state in report.items():
            health = state.get("state") or ("healthy" if state["healthy"] else "down")
            model = f"  model {state['model']}" if state.get("model") else ""
            print(f"{name:14} {health:12} {state['url']}{model}")
            for part in state.get("parts", []):
                print(f"  {part['part']:10} {part['state']}")
            if state.get("problem"):
                print(f"  problem: {state['problem']}")
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    """The objects a cluster would get, on stdout, so any tool can read them (checkov, kubeconform, kubectl diff).

    The same render the chapters apply (the registry's, through the generated overlay), not a second path.
    """
    from . import layers
    from .manifests import dump_all

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    if args.layer:
        names = [layers.with_manifests(args.layer).name]
    else:
        names = [layer.name for layer in layers.enabled(profile)]
    objects = [obj for name in names for obj in layers.render(name, profile, layout)]
    sys.stdout.write(dump_all(objects))
    which = ", ".join(names) or "no layer with manifests"
    _say(f"rendered {len(objects)} object(s) of profile {profile.name}: {which}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """The same render as ``render``, one folder per layer: what Argo CD's Applications point at."""
    from pathlib import Path

    from . import layers
    from .export import export

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    rendered = layers.rendered(profile, layout)
    root = Path(args.root) if args.root else layout.root
    for folder in export(rendered, profile, root):
        print(f"{folder.relative_to(root).as_posix()}/  {len(rendered[folder.name])} object(s)")
    _say(f"exported {sum(len(v) for v in rendered.values())} object(s) of profile {profile.name} in "
         f"{len(rendered)} layer(s) under {root}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    """Every enabled layer of every named profile, rendered and checked with no cluster: one row per (profile,
    layer) with its object count, then each failure and warning by object. Exit 1 if any check failed."""
    from .survey import survey

    layout = Layout.discover(args.build_dir)
    names = None if args.all else args.profile
    result = survey(names, layout, layer=args.layer, overrides=args.params)
    for line in result.skipped:
        _say(line)
    for profile, layer, f in result.findings:
        if args.details or f.status != "ok":
            print(f"{profile}/{layer}: {f.status:4} {f.kind}/{f.name} [{f.rule}] {f.message}")
    print(_table(result.table()))
    _say(result.summary())
    return 1 if result.failed else 0


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


def _cmd_crds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import crds

    layout = Layout.discover()
    if args.action == "verify":
        sources = crds.verify(layout)
        print(f"{len(sources)} CRD schema(s) match {crds.LOCK_FILE}: " + ", ".join(s.kind for s in sources))
        return 0
    print("fetching and verifying the upstream CRDs" + (f" from {args.from_dir}" if args.from_dir else ""))
    results = crds.update(layout, from_dir=Path(args.from_dir) if args.from_dir else None)
    frame = pd.DataFrame([r.__dict__ for r in results])
    print(_table(frame[["kind", "pin", "upstream_bytes", "schema", "schema_bytes", "changed"]]))
    print(f"wrote {sum(r.changed for r in results)} changed schema(s) and {crds.LOCK_FILE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inferbook`` console script."""
    parser, handlers = _parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except InferbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`inferbook keys list | head`): not an error of ours
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
