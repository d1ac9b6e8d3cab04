"""``inferbook ide-config``: an IDE assistant's configuration for the profile's gateway (the key left out)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...console import add_overrides
from ...layer import Handler
from ...paths import Layout
from ...profile import load_profile
from . import ide_config


def commands(sub: Any) -> dict[str, Handler]:
    """Add ``ide-config`` to the command line."""
    ide = sub.add_parser("ide-config", help="write an IDE assistant's configuration for the profile's gateway (no key)")
    ide.add_argument("--profile", required=True, metavar="NAME")
    ide.add_argument("--client", default="continue", metavar="NAME", help="IDE client (default and only: continue)")
    ide.add_argument("--output", metavar="PATH", help="file to write (default: ~/.continue/config.yaml; - for stdout)")
    ide.add_argument("--url", metavar="URL",
                     help="the gateway's /v1 URL as the IDE reaches it (default: the profile's)")
    ide.add_argument("--key-env", default="INFERBOOK_API_KEY", metavar="NAME",
                     help="the variable that holds the tenant's key (default: INFERBOOK_API_KEY)")
    ide.add_argument("--force", action="store_true", help="replace an existing, different file")
    add_overrides(ide)
    return {"ide-config": _cmd_ide_config}


def _cmd_ide_config(args: argparse.Namespace) -> int:
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
