"""What every ``inferbook`` command shares, the core's and the layers' own: options, tables, progress lines."""

from __future__ import annotations

import argparse
import sys

import pandas as pd


def add_build_dir(parser: argparse.ArgumentParser) -> None:
    """The ``--build-dir`` option of commands that read or write a run folder."""
    parser.add_argument("--build-dir", metavar="DIR", help="build folder (default: _build in the checkout)")


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """The repeatable ``-p KEY=VALUE`` profile override."""
    parser.add_argument("-p", dest="params", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile setting by dotted path, e.g. -p serving.max_model_len=4096 "
                             "(repeatable)")


def table_text(frame: pd.DataFrame) -> str:
    """A table as the terminal shows it: wide enough for URLs, never wrapped."""
    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        return frame.to_string()


def say(text: str) -> None:
    """A progress line on stderr, so that stdout stays the command's answer."""
    print(text, file=sys.stderr, flush=True)
