"""How much the book's benchmarks chapter measures: the profile's ``benchmarks.book`` set.

The two sweeps always run: every other table of the chapter (the verdict, the knee, the gateway's cost, the L4
reference) is read from them. The other steps cost minutes each on a small machine (on ``local``: GuideLLM about
1.5, three more the first time while its environment is built; the paired comparison about 2.5; the proxy alone,
with a gateway and a ledger of its own, about 1.5), so the ``quick`` set leaves them to ``make bench`` and the
chapter stays within about 4 minutes there; the ``full`` set (the default, the cluster profiles') runs them all.

A step the set leaves out is *not measured*, never passed: its result is None, the cell says in one sentence
what was skipped, why and the command that runs it, and the verification lists it as skipped.
"""

from __future__ import annotations

from typing import Any, Mapping

#: The chapter's optional steps, in the order they run, with how a sentence names them.
OPTIONAL: dict[str, str] = {
    "guidellm": "GuideLLM's sweep beside ours",
    "paired": "the paired comparison of direct and the gateway at the knee",
    "proxy_alone": "the proxy alone against a stub upstream",
}
#: Each ``benchmarks.book`` value and the optional steps it runs.
SETS: dict[str, tuple[str, ...]] = {"quick": (), "full": tuple(OPTIONAL)}
#: The command that runs every step whatever the profile's set (the Makefile's ``bench`` target).
COMMAND = "make bench PROFILE={profile}"


def check_step(step: str) -> str:
    """``step`` if it is one of :data:`OPTIONAL`; a typo in a chapter must fail, not silently skip a step."""
    if step not in OPTIONAL:
        raise ValueError(f"{step!r} is not an optional step of the benchmarks chapter. Fix: use one of "
                         f"{', '.join(OPTIONAL)}")
    return step


def book_set(settings: Mapping[str, Any]) -> str:
    """The profile's set (``benchmarks.book``; the schema fills in ``full`` when a profile does not say)."""
    return str(settings.get("book", "full"))


def runs(settings: Mapping[str, Any], step: str) -> bool:
    """Whether the profile's set runs the optional ``step``."""
    return check_step(step) in SETS[book_set(settings)]


def command(profile_ref: str) -> str:
    """The command that runs the full set for this profile."""
    return COMMAND.format(profile=profile_ref)


def status(settings: Mapping[str, Any]) -> str:
    """The verification's status of a check the set left out: not passed, not failed, skipped."""
    return f"skipped ({book_set(settings)} set)"


def label(settings: Mapping[str, Any], profile_ref: str) -> str:
    """How a table shows a step the set left out: skipped, by which set, and what measures it."""
    return f"{status(settings)}: `{command(profile_ref)}` measures it"


def skip_sentence(settings: Mapping[str, Any], step: str, profile_ref: str) -> str:
    """The one sentence a skipped step's cell prints: what was skipped, why, and the command that runs it."""
    name, chosen = OPTIONAL[check_step(step)], book_set(settings)
    also = [OPTIONAL[other] for other in SETS[chosen]]
    measured = "the two sweeps" + (f" and {', '.join(also)}" if also else " only")
    return (f"{name[0].upper()}{name[1:]} was skipped: this profile's book runs the {chosen} set "
            f"(benchmarks.book: {chosen}), {measured}, to keep the chapter short (about 4 minutes on "
            f"`local`); `{command(profile_ref)}` runs it, as does the book with -p benchmarks.book=full.")


def pointer(settings: Mapping[str, Any], step: str) -> str:
    """What a later cell of a skipped step prints: a reference to the sentence above, not the sentence again."""
    return f"({OPTIONAL[check_step(step)]}: skipped, {book_set(settings)} set; see above)"


def not_measured(settings: Mapping[str, Any], profile_ref: str) -> dict[str, str]:
    """Each optional step the set leaves out, with the label the tables show for it."""
    return {step: label(settings, profile_ref) for step in OPTIONAL if not runs(settings, step)}
