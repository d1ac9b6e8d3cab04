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
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from . import __version__
from .errors import InferbookError
from .paths import Layout
from .profile import list_profiles, load_profile

if TYPE_CHECKING:
    from .gateway_admin import Admin


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

    keys = sub.add_parser("keys", help="tenant virtual keys on the profile's LiteLLM gateway")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = ksub.add_parser("create", help="create a virtual key and print it (only it)")
    create.add_argument("--profile", required=True, metavar="NAME")
    create.add_argument("--alias", required=True, metavar="NAME", help="a name for the key (unique)")
    create.add_argument("--models", required=True, metavar="A,B", help="gateway aliases, e.g. coder-chat,coder-fim")
    create.add_argument("--max-budget", type=float, metavar="USD")
    create.add_argument("--budget-duration", metavar="D", help="budget reset period, e.g. 30d or 1h")
    create.add_argument("--rpm", type=int, metavar="N", help="requests per minute")
    create.add_argument("--tpm", type=int, metavar="N", help="tokens per minute")
    create.add_argument("--team", metavar="T", help="team alias (created if absent)")
    create.add_argument("--json", action="store_true", help="print JSON with the key and its settings")
    klist = ksub.add_parser("list", help="aliases, models, budgets, spend and limits (never the keys)")
    klist.add_argument("--profile", required=True, metavar="NAME")
    klist.add_argument("--json", action="store_true")
    revoke = ksub.add_parser("revoke", help="delete a virtual key by alias")
    revoke.add_argument("--profile", required=True, metavar="NAME")
    revoke.add_argument("--alias", required=True, metavar="NAME")

    ide = sub.add_parser("ide-config", help="write an IDE assistant's configuration for the profile's gateway (no key)")
    ide.add_argument("--profile", required=True, metavar="NAME")
    ide.add_argument("--client", default="continue", metavar="NAME", help="IDE client (default and only: continue)")
    ide.add_argument("--output", metavar="PATH", help="file to write (default: ~/.continue/config.yaml; - for stdout)")
    ide.add_argument("--url", metavar="URL",
                     help="the gateway's /v1 URL as the IDE reaches it (default: the profile's)")
    ide.add_argument("--key-env", default="INFERBOOK_API_KEY", metavar="NAME",
                     help="the variable that holds the tenant's key (default: INFERBOOK_API_KEY)")
    ide.add_argument("--force", action="store_true", help="replace an existing, different file")
    ide.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE")
    for p in (create, klist, revoke):
        with_build_dir(p)

    profile = sub.add_parser("profile", help="inspect deployment profiles")
    psub = profile.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = psub.add_parser("show", help="print the resolved profile and its feature table")
    show.add_argument("name", metavar="NAME", help="profile name or path")
    show.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    psub.add_parser("list", help="list the shipped profiles")

    crds = sub.add_parser("crds", help="the committed CRD schemas validation reads (manifests/crds/)")
    csub = crds.add_subparsers(dest="action", required=True, metavar="ACTION")
    cupdate = csub.add_parser("update", help="regenerate them from the pinned upstream CRDs (sha256 verified first)")
    cupdate.add_argument("--from", dest="from_dir", metavar="DIR",
                         help="a folder of upstream CRD files laid out as the lock's local_path (default: download "
                              "each file by its pinned tag)")
    csub.add_parser("verify", help="check every committed schema against its sha256 in manifests/crds.lock.yaml")
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
        model = f" ({state['model']})" if state.get("model") else ""
        print(f"{name}: {state['url']}{model} healthy={state['healthy']}")
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
            model = f"  model {state['model']}" if state.get("model") else ""
            print(f"{name:12} {health:12} {state['url']}{model}")
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from .gateway import connect

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, layout=layout)
    # The local gateway, or a cluster's through a port-forward; progress goes to stderr so stdout stays the answer.
    endpoint = connect(profile, layout, say=lambda message: print(message, file=sys.stderr))
    try:
        return _keys_action(args, endpoint.admin())
    finally:
        endpoint.close()


def _keys_action(args: argparse.Namespace, admin: "Admin") -> int:
    if args.action == "create":
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        team_id = admin.team(args.team) if args.team else None
        key = admin.create_key(args.alias, models, args.max_budget, args.budget_duration, args.rpm, args.tpm, team_id)
        if args.json:
            print(json.dumps({"key": key, "alias": args.alias, "models": models, "max_budget_usd": args.max_budget,
                              "budget_duration": args.budget_duration, "rpm": args.rpm, "tpm": args.tpm,
                              "team": args.team}, indent=2))
        else:
            print(key)
        return 0
    if args.action == "list":
        if args.json:
            print(json.dumps(admin.keys(), indent=2))
        else:
            print(_table(admin.table()))
        return 0
    admin.revoke(args.alias)
    print(f"revoked key '{args.alias}'")
    return 0


def _cmd_ide_config(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import ide_config

    profile = load_profile(args.profile, overrides=args.params, layout=Layout.discover())
    text = ide_config.render(profile, args.client, args.url, args.key_env)
    if args.output == "-":
        print(text, end="")
        return 0
    path = ide_config.write(text, Path(args.output or "~/.continue/config.yaml").expanduser(), args.force)
    print(f"wrote the {args.client} configuration for profile {profile.name} to {path}")
    print(f"it reads the key from {args.key_env}: put `{args.key_env}=<key>` in ~/.continue/.env (chmod 600); "
          f"a key: inferbook keys create --profile {profile.name} --alias NAME --models coder-chat,coder-fim")
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
    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "book": _cmd_book, "profile": _cmd_profile, "up": _cmd_up, "down": _cmd_down,
                "status": _cmd_status, "keys": _cmd_keys, "ide-config": _cmd_ide_config, "crds": _cmd_crds}
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
