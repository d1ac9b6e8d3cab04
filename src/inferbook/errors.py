"""Exceptions the CLI turns into one clear message and a non-zero exit.

Every inferbook error says what is wrong and how to fix it; the CLI prints
``str(error)`` and nothing else, so the message must stand on its own.
"""

from __future__ import annotations


class InferbookError(Exception):
    """Base class of every error inferbook reports to a user."""


class ProfileError(InferbookError):
    """A profile file (or a command-line override) is invalid.

    Carries every problem found, not only the first, so that one edit can fix
    them all.
    """

    def __init__(self, source: str, issues: list["ProfileIssue"]) -> None:
        self.source = source
        self.issues = issues
        lines = [f"invalid profile {source}: {len(issues)} problem(s)"]
        lines += [f"  - {issue}" for issue in issues]
        super().__init__("\n".join(lines))


class ProfileIssue:
    """One problem in a profile: where it is, what is wrong, how to fix it."""

    def __init__(self, where: str, field: str, problem: str, fix: str) -> None:
        self.where = where
        self.field = field
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        field = self.field or "(top level)"
        return f"{self.where}: {field}: {self.problem}. Fix: {self.fix}"

    def __repr__(self) -> str:
        return f"ProfileIssue({str(self)!r})"


class ChapterFailed(InferbookError):
    """A chapter of the book failed while the runner executed it."""

    def __init__(self, chapter: str, cell: int | None, cell_source: str, error: str, notebook: str) -> None:
        self.chapter = chapter
        self.cell = cell
        self.error = error
        self.notebook = notebook
        where = f"cell {cell}" if cell is not None else "before its first cell"
        first_line = cell_source.strip().splitlines()[0] if cell_source.strip() else ""
        snippet = f" ({first_line[:60]!r})" if first_line else ""
        super().__init__(
            f"chapter '{chapter}' failed at {where}{snippet}: {error}\n"
            f"  the executed notebook is kept at {notebook}"
        )


class BuildError(InferbookError):
    """The static site could not be built."""


class PreflightFailed(InferbookError):
    """The target is not ready for the book (a port taken, too little memory, no cluster)."""
