"""Waiting for a condition nothing signals: poll it, say how it goes, fail naming what is still missing.

A server becoming healthy, a ledger booking spend, Prometheus scraping a series: none of them sends an
event to wait on, so the only way to know is to ask again. :func:`wait_for` is that loop, once: it asks a
*probe* until the probe says done, sleeps a short ``interval`` between asks, says a progress line about
every ``progress_every`` seconds, and after ``timeout`` raises an error that names what it waited for, for
how long, and what the last ask found missing.

A probe returns a falsy value (None, "") when the condition holds, else a short text of what is still
missing ("2 of 3 requests logged"). A probe that finds the wait hopeless (the server exited) raises: the
error propagates at once. Watches of the Kubernetes API (:mod:`inferbook.kube`) are event-driven and do
not poll; they do not use this.
"""

from __future__ import annotations

import time
from typing import Callable

from .errors import InferbookError
from .say import Say

#: None (or "") when the condition holds; else what is still missing.
Probe = Callable[[], str | None]
#: Where a wait reads the time: seconds that only go forward (``time.monotonic``; tests pass a fake).
Clock = Callable[[], float]


class WaitTimedOut(InferbookError):
    """A condition did not hold within its time: the message names it, the time, and what was missing."""


def wait_for(probe: Probe, *, timeout: float, what: str, say: Say, interval: float = 1.0,
             progress_every: float = 10.0, error: Callable[[str], Exception] = WaitTimedOut, fix: str = "",
             message: Callable[[str], str] | None = None, clock: Clock = time.monotonic,
             sleep: Callable[[float], object] = time.sleep) -> float:
    """Poll ``probe`` until it says done; the seconds that took.

    Asks at once, then every ``interval`` seconds; says ``waiting for <what>: <missing> (<n> s)`` about every
    ``progress_every`` seconds. Once more than ``timeout`` seconds have passed (the probe is always asked at
    least once) raises ``error`` with ``message(missing)`` if given, else a message naming ``what``, the
    timeout and the last missing state, then ``Fix: <fix>`` when a fix is given.
    """
    started = clock()
    next_report = progress_every
    while True:
        missing = probe()
        elapsed = clock() - started
        if not missing:
            return elapsed
        if elapsed > timeout:
            text = message(missing) if message is not None else \
                f"gave up waiting for {what} after {timeout:g} s: {missing}" + (f". Fix: {fix}" if fix else "")
            raise error(text)
        if elapsed >= next_report:
            say(f"waiting for {what}: {missing} ({elapsed:.0f} s)")
            while 0 < progress_every and next_report <= elapsed:  # one line, however long the probe took
                next_report += progress_every
        sleep(interval)


def until(condition: Callable[[], bool], missing: str = "not yet") -> Probe:
    """A probe of a yes/no ``condition``: done when it holds, else ``missing``."""
    return lambda: None if condition() else missing
