"""The voice of a step: how code reports progress lines, declared once for every module.

A ``say`` is a callable that takes one line of text (``print``, the console's stderr line, a chapter's
cell output, a test's list). This module imports nothing of inferbook, so every module, below the layers
or in one, can import it without a cycle.
"""

from __future__ import annotations

from typing import Callable

#: Says one progress line.
Say = Callable[[str], None]



def silent(line: str) -> None:
    """A ``say`` that says nothing: for short internal waits whose progress no one needs to see."""
