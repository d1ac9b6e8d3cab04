"""The resilience chapter's verdicts, on known outcomes (no stack needed)."""

from __future__ import annotations

from collections import Counter

from inferbook.layers.resilience import Drill, LoadResult, table, verify


def drill(passed: bool = True) -> Drill:
    return Drill("vLLM killed mid-stream", "back", "back after 80 s", 80.0, "none", passed)


def load(errors: Counter[str] | None = None, booked: float = 0.0011240) -> LoadResult:
    return LoadResult(8, 20.0, requests=16, errors=errors or Counter(), prompt_tokens=624, completion_tokens=250,
                      expected_usd=0.0011240, booked_usd=booked)


def test_a_clean_load_and_passed_drills_pass():
    rows = verify([drill()], load())
    assert [r["pass"] for r in rows] == [True, True, True]


def test_an_error_under_load_fails_the_chapter_and_is_named():
    rows = {r["check"]: r for r in verify([drill()], load(Counter({"HTTP 500": 1})))}
    assert rows["no error under load"]["pass"] is False
    assert "1 errors in 16 requests" in rows["no error under load"]["observed"]


def test_spend_off_by_more_than_a_micro_dollar_fails():
    rows = {r["check"]: r for r in verify([drill()], load(booked=0.0011240 + 2e-6))}
    assert rows["spend booked equals usage under load"]["pass"] is False
    assert load(booked=0.0011240 + 5e-7).spend_matches


def test_a_failed_drill_fails_its_row_and_the_table_keeps_its_recovery_time():
    rows = verify([drill(passed=False)], load())
    assert rows[0]["pass"] is False and "recovered in 80.0 s" in rows[0]["observed"]
    assert table([drill()]).loc["vLLM killed mid-stream", "recovery (s)"] == 80.0
