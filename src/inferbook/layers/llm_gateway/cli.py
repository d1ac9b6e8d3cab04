"""``inferbook keys``: tenant virtual keys on the profile's gateway, local or on a cluster; ``inferbook overhead``:
the proxy's own cost, measured against a stub upstream."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ...console import add_build_dir, add_overrides, say, table_text
from ...layer import Handler
from ...paths import Layout
from ...profile import load_profile
from .admin import Admin
from .steps import connect


def commands(sub: Any) -> dict[str, Handler]:
    """Add ``keys create|list|revoke`` to the command line."""
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
    for p in (create, klist, revoke):
        add_build_dir(p)
    _overhead_parser(sub)
    return {"keys": _cmd_keys, "overhead": _cmd_overhead}


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


def _cmd_keys(args: argparse.Namespace) -> int:
    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, layout=layout)
    # The local gateway, or a cluster's through a port-forward; progress goes to stderr so stdout stays the answer.
    endpoint = connect(profile, layout, say=say)
    try:
        return _keys_action(args, endpoint.admin())
    finally:
        endpoint.close()


def _keys_action(args: argparse.Namespace, admin: Admin) -> int:
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
            print(table_text(admin.table()))
        return 0
    admin.revoke(args.alias)
    print(f"revoked key '{args.alias}'")
    return 0


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
