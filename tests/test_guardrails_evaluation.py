"""The PII guardrail's labelled set and its scoring: the set is well-formed, the counting rules hold.

No Presidio here: the scoring is checked against hand-written ``analyze`` doubles whose answers are
known, so a wrong count is the scorer's fault and not a recognizer's.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from inferbook.layers.guardrails.evaluation import LABELLED, Sample, Score, evaluate, scores_table, untouched

ENTITIES = {
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "CLOUD_KEY",
    "PRIVATE_KEY",
    "BEARER_TOKEN",
}


def _oracle(samples: tuple[Sample, ...] | list[Sample]):
    """An ``analyze`` that returns exactly the labels of the sample whose text it is given."""
    by_text = {sample.text: sample for sample in samples}

    def analyze(text: str) -> list[dict]:
        results = []
        for entity, fragment in by_text[text].spans:
            start = text.find(fragment)
            while start >= 0:
                results.append(
                    {"entity_type": entity, "start": start, "end": start + len(fragment), "score": 0.85}
                )
                start = text.find(fragment, start + len(fragment))
        return results

    return analyze


def test_every_labelled_span_is_a_substring_of_its_text() -> None:
    for sample in LABELLED:
        for entity, fragment in sample.spans:
            assert fragment and fragment in sample.text, (entity, fragment)


def test_labels_use_only_the_guardrails_entity_types() -> None:
    assert {entity for sample in LABELLED for entity, _ in sample.spans} == ENTITIES


def test_every_entity_type_has_three_positives_and_there_are_fifteen_clean_prompts() -> None:
    positives = Counter(entity for sample in LABELLED for entity, _ in set(sample.spans))
    assert all(positives[entity] >= 3 for entity in ENTITIES), positives
    assert len(untouched()) >= 15


def test_untouched_returns_exactly_the_samples_without_labels() -> None:
    clean = untouched()
    assert all(not sample.spans for sample in clean)
    assert len(clean) == sum(1 for sample in LABELLED if not sample.spans)


def test_samples_are_distinct_so_a_detection_belongs_to_one_sample() -> None:
    assert len({sample.text for sample in LABELLED}) == len(LABELLED)


def test_an_analyzer_finding_exactly_the_labels_scores_one_everywhere() -> None:
    scores, mistakes = evaluate(_oracle(LABELLED))
    assert [score.entity for score in scores] == sorted(ENTITIES)
    assert mistakes == []
    for score in scores:
        assert (score.precision, score.recall, score.fp, score.fn) == (1.0, 1.0, 0, 0), score


def test_a_detection_on_a_clean_prompt_is_one_false_positive_listed_in_the_mistakes() -> None:
    clean = untouched()[0]
    index = LABELLED.index(clean)
    exact = _oracle(LABELLED)

    def analyze(text: str) -> list[dict]:
        found = exact(text)
        if text == clean.text:
            found.append({"entity_type": "PHONE_NUMBER", "start": 0, "end": 10, "score": 0.4})
        return found

    scores, mistakes = evaluate(analyze)
    by_entity = {score.entity: score for score in scores}
    assert by_entity["PHONE_NUMBER"].fp == 1
    assert sum(score.fp for score in scores) == 1
    assert sum(score.fn for score in scores) == 0
    assert by_entity["PHONE_NUMBER"].precision == pytest.approx(
        by_entity["PHONE_NUMBER"].tp / (by_entity["PHONE_NUMBER"].tp + 1)
    )
    assert mistakes == [
        {"sample": index, "kind": "false positive", "entity": "PHONE_NUMBER", "text": clean.text[:10]}
    ]


def test_a_detection_of_an_unlabelled_entity_type_gets_its_own_row() -> None:
    samples = [Sample("build 4821 on port 8080")]
    scores, mistakes = evaluate(
        lambda text: [{"entity_type": "DATE_TIME", "start": 6, "end": 10, "score": 0.6}], samples
    )
    assert scores == [Score("DATE_TIME", 0, 1, 0)]
    assert mistakes[0]["text"] == "4821"


def test_a_missed_label_is_a_false_negative() -> None:
    target = next(sample for sample in LABELLED if ("IBAN_CODE", "NL91ABNA0417164300") in sample.spans)
    exact = _oracle(LABELLED)

    def analyze(text: str) -> list[dict]:
        return [] if text == target.text else exact(text)

    scores, mistakes = evaluate(analyze)
    iban = next(score for score in scores if score.entity == "IBAN_CODE")
    assert iban.fn == 1 and iban.fp == 0
    assert iban.recall == pytest.approx(iban.tp / (iban.tp + 1))
    assert mistakes == [
        {
            "sample": LABELLED.index(target),
            "kind": "missed",
            "entity": "IBAN_CODE",
            "text": "NL91ABNA0417164300",
        }
    ]


def test_overlapping_ranges_match_without_exact_boundaries() -> None:
    sample = Sample(
        "curl -H 'Authorization: Bearer tok_abc123def456' https://api.example.com",
        (("BEARER_TOKEN", "Bearer tok_abc123def456"),),
    )
    token_only = sample.text.index("tok_abc123def456")
    scores, mistakes = evaluate(
        lambda text: [
            {"entity_type": "BEARER_TOKEN", "start": token_only, "end": token_only + 10, "score": 0.9}
        ],
        [sample],
    )
    assert scores == [Score("BEARER_TOKEN", 1, 0, 0)]
    assert mistakes == []


def test_touching_ranges_do_not_overlap_and_entity_types_must_agree() -> None:
    sample = Sample("mail jane@example.com now", (("EMAIL_ADDRESS", "jane@example.com"),))
    start = sample.text.index("jane")
    end = start + len("jane@example.com")
    detections = [
        {"entity_type": "EMAIL_ADDRESS", "start": end, "end": end + 4, "score": 1.0},
        {"entity_type": "URL", "start": start, "end": end, "score": 0.5},
    ]
    scores, mistakes = evaluate(lambda text: detections, [sample])
    assert scores == [Score("EMAIL_ADDRESS", 0, 1, 1), Score("URL", 0, 1, 0)]
    assert [row["kind"] for row in mistakes] == ["missed", "false positive", "false positive"]


def test_a_value_pasted_twice_must_be_masked_twice() -> None:
    sample = Sample("to a@example.com cc a@example.com", (("EMAIL_ADDRESS", "a@example.com"),))
    first = sample.text.index("a@example.com")
    scores, mistakes = evaluate(
        lambda text: [{"entity_type": "EMAIL_ADDRESS", "start": first, "end": first + 13, "score": 1.0}],
        [sample],
    )
    assert scores == [Score("EMAIL_ADDRESS", 1, 0, 1)]
    assert mistakes[0]["kind"] == "missed"


def test_a_label_that_is_not_in_the_text_is_an_error_not_a_miss() -> None:
    with pytest.raises(ValueError, match="not in the sample"):
        evaluate(lambda text: [], [Sample("hello", (("EMAIL_ADDRESS", "x@example.com"),))])


def test_precision_and_recall_are_nan_when_undefined() -> None:
    assert math.isnan(Score("CLOUD_KEY", 0, 0, 3).precision)
    assert Score("CLOUD_KEY", 0, 0, 3).recall == 0.0
    assert math.isnan(Score("URL", 0, 2, 0).recall)
    assert Score("URL", 0, 2, 0).precision == 0.0


def test_scores_table_ends_with_micro_averaged_all_row() -> None:
    scores = [Score("A", 3, 1, 0), Score("B", 1, 0, 3), Score("C", 0, 2, 0)]
    table = scores_table(scores)
    assert list(table.columns) == ["entity", "labelled", "tp", "fp", "fn", "precision", "recall"]
    assert list(table["entity"]) == ["A", "B", "C", "all"]
    total = table.iloc[-1]
    assert (total["labelled"], total["tp"], total["fp"], total["fn"]) == (7, 4, 3, 3)
    # micro: 4 / (4 + 3) and 4 / (4 + 3), not the mean of the per-entity figures
    assert total["precision"] == round(4 / 7, 2)
    assert total["recall"] == round(4 / 7, 2)
    assert table.iloc[1]["recall"] == 0.25
    assert math.isnan(table.iloc[2]["recall"])


def test_scores_table_of_the_oracle_run_is_all_ones() -> None:
    table = scores_table(evaluate(_oracle(LABELLED))[0])
    assert table.iloc[-1]["entity"] == "all"
    assert (table["precision"] == 1.0).all() and (table["recall"] == 1.0).all()
    assert table.iloc[-1]["labelled"] == table.iloc[:-1]["labelled"].sum()
