"""``inferbook ide-config``: an IDE assistant's configuration for the profile's gateway (the key left out)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...console import add_build_dir, add_overrides
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
    bench = sub.add_parser("bench-agent", help="seeded runs of the coding agent through the gateway: its success rate")
    bench.add_argument("--profile", required=True, metavar="NAME")
    bench.add_argument("--runs", type=int, default=5, metavar="N", help="seeded runs (default 5)")
    bench.add_argument("--first-seed", type=int, default=1, metavar="S", help="seed of the first run (default 1)")
    bench.add_argument("--steps", type=int, default=8, metavar="N", help="turns per run (default 8)")
    bench.add_argument("--json", metavar="OUT", help="also write the runs as JSON")
    add_overrides(bench)
    add_build_dir(bench)
    return {"ide-config": _cmd_ide_config, "bench-agent": _cmd_bench_agent}


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


def _cmd_bench_agent(args: argparse.Namespace) -> int:
    """Seeded runs of the coding agent through the gateway: how often the model solves the task."""
    import tempfile

    from ...console import say, table_text
    from .session import Session, connect, issue_keys

    layout = Layout.discover(args.build_dir)
    profile = load_profile(args.profile, overrides=args.params, layout=layout)
    mode = profile.alias_model("chat").get("tool_calls", "native")
    with connect(profile, layout, say=say) as gateway, tempfile.TemporaryDirectory() as tmp:
        session = Session(gateway.url, issue_keys(gateway.admin(), profile))
        table = session.agent_runs(Path(tmp), runs=args.runs, first_seed=args.first_seed, tool_calls=mode,
                                   max_steps=args.steps, say=say)
    print(table_text(table))
    print("\n" + solved_line(table, profile.alias_model("chat")["id"], mode))
    if args.json:
        Path(args.json).write_text(table.reset_index().to_json(orient="records", indent=2) + "\n", encoding="utf-8")
    return 0


def solved_line(table: Any, model: str, mode: str) -> str:
    """One sentence on seeded agent runs: how many solved the task, the median time and turns, the model and mode."""
    solved = int(table["solved"].sum())
    return (f"{solved} of {len(table)} runs solved the task ({solved / len(table):.0%}); median "
            f"{table['seconds'].median():.0f} s and {table['turns'].median():.0f} turns per run; model {model}, "
            f"tool_calls {mode}")
