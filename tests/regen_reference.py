"""Re-record tests/reference/00-preflight.ipynb (`make regen-reference`).

Runs the preflight chapter with the `local` profile into a temporary build
folder and keeps the executed copy as the regression reference. Do this only
after an intended change to the preflight notebook or what it prints.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from inferbook import load_profile
from inferbook.paths import Layout
from inferbook.runner import ConsoleReporter, run_book

REFERENCE = Path(__file__).parent / "reference" / "00-preflight.ipynb"


def main() -> int:
    with tempfile.TemporaryDirectory() as build:
        layout = Layout.discover(build)
        run_book(load_profile("local", layout=layout), layout, ["preflight"], reporter=ConsoleReporter())
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(layout.run_dir("local") / "notebooks" / REFERENCE.name, REFERENCE)
    print(f"recorded {REFERENCE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
