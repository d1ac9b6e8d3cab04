"""The one wait for a condition nothing signals: it asks a probe until done, says progress, and fails naming
what is missing. Time is a fake clock that a fake sleep moves on: no test waits or reads the wall clock."""

from __future__ import annotations

from typing import Iterable

import pytest

from inferbook.errors import InferbookError
from inferbook.say import silent
from inferbook.waiting import WaitTimedOut, until, wait_for


class FakeTime:
    """A clock that only a sleep moves, and the count of sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


class Probe:
    """Answers the given states in turn (the last one forever) and counts the asks."""

    def __init__(self, states: Iterable[str | None]) -> None:
        self.states = list(states)
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.states[min(self.calls, len(self.states)) - 1]


def test_returns_as_soon_as_the_probe_says_done() -> None:
    fake, probe = FakeTime(), Probe(["no rows", "1 of 2 rows", None, "never asked"])
    took = wait_for(probe, timeout=60, what="the ledger", say=silent, interval=1.0,
                    clock=fake.clock, sleep=fake.sleep)
    assert probe.calls == 3 and fake.sleeps == 2 and took == 2.0


def test_a_condition_that_already_holds_is_asked_once_and_never_slept_on() -> None:
    fake, probe = FakeTime(), Probe([""])
    assert wait_for(probe, timeout=0, what="x", say=silent, clock=fake.clock, sleep=fake.sleep) == 0.0
    assert probe.calls == 1 and fake.sleeps == 0


def test_says_progress_about_every_progress_every_seconds_with_what_is_missing() -> None:
    fake, said = FakeTime(), []
    probe = Probe([f"{n} of 9 rows logged" for n in range(9)] + [None])
    wait_for(probe, timeout=60, what="the ledger", say=said.append, interval=1.0, progress_every=3.0,
             clock=fake.clock, sleep=fake.sleep)
    assert said == ["waiting for the ledger: 3 of 9 rows logged (3 s)",
                    "waiting for the ledger: 6 of 9 rows logged (6 s)"]


def test_a_slow_probe_says_one_line_not_one_per_period_it_missed() -> None:
    fake, said = FakeTime(), []

    def slow() -> str | None:
        fake.now += 25  # one ask took 25 s: two and a half periods
        return "starting" if fake.now < 60 else None

    wait_for(slow, timeout=120, what="vLLM", say=said.append, interval=0, progress_every=10.0,
             clock=fake.clock, sleep=fake.sleep)
    assert said == ["waiting for vLLM: starting (25 s)", "waiting for vLLM: starting (50 s)"]


def test_times_out_naming_what_for_how_long_and_the_last_missing_state() -> None:
    fake, probe = FakeTime(), Probe(["no key", "1 of 2 requests logged"])
    with pytest.raises(WaitTimedOut) as info:
        wait_for(probe, timeout=5, what="the ledger to book the load", say=silent, interval=1.0,
                 clock=fake.clock, sleep=fake.sleep)
    assert str(info.value) == "gave up waiting for the ledger to book the load after 5 s: 1 of 2 requests logged"
    assert isinstance(info.value, InferbookError)
    assert probe.calls == 7  # at 0, 1, ..., 6 s: the ask after the timeout is the last


def test_times_out_on_the_real_clock_too() -> None:
    probe = Probe(["never"])
    with pytest.raises(WaitTimedOut, match="gave up waiting for nothing after 0.01 s: never"):
        wait_for(probe, timeout=0.01, what="nothing", say=silent, interval=0.001)
    assert probe.calls >= 1


def test_a_probe_that_raises_ends_the_wait_at_once() -> None:
    fake, calls = FakeTime(), []

    def died() -> str | None:
        calls.append(1)
        if len(calls) == 2:
            raise InferbookError("the server exited with status 1")
        return "starting"

    with pytest.raises(InferbookError, match="exited with status 1"):
        wait_for(died, timeout=60, what="the server", say=silent, clock=fake.clock, sleep=fake.sleep)
    assert len(calls) == 2 and fake.sleeps == 1


def test_a_caller_gives_its_own_error_class_and_fix() -> None:
    class LedgerError(InferbookError):
        pass

    fake = FakeTime()
    with pytest.raises(LedgerError) as info:
        wait_for(Probe(["no rows"]), timeout=1, what="the ledger", say=silent, error=LedgerError,
                 fix="read the proxy's log", clock=fake.clock, sleep=fake.sleep)
    assert str(info.value) == "gave up waiting for the ledger after 1 s: no rows. Fix: read the proxy's log"


def test_a_caller_keeps_its_own_message_built_from_the_last_missing_state() -> None:
    fake = FakeTime()
    with pytest.raises(RuntimeError, match=r"^LiteLLM did not book it within 2 s \(a: 0 of 1\)$"):
        wait_for(Probe(["a: 0 of 1"]), timeout=2, what="the ledger", say=silent, error=RuntimeError,
                 message=lambda missing: f"LiteLLM did not book it within 2 s ({missing})",
                 clock=fake.clock, sleep=fake.sleep)


def test_until_makes_a_probe_of_a_yes_no_condition() -> None:
    answers = iter([False, True])
    probe = until(lambda: next(answers), "not healthy yet")
    assert probe() == "not healthy yet" and probe() is None
