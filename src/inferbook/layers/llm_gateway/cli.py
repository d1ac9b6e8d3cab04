"""``inferbook keys``: tenant virtual keys on the profile's gateway, local or on a cluster."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ...console import add_build_dir, say, table_text
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
    return {"keys": _cmd_keys}


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
