"""How well the PII-masking guardrail does on developer prompts, measured rather than asserted.

The guardrail runs Presidio pattern recognizers (no NER model) in front of the gateway. A pattern
recognizer has two ways to fail a coding assistant: it misses a secret the user pasted (the secret
reaches the model and its logs), or it masks something harmless (a git SHA, a port, a timestamp) and
the model answers a question about ``XXXX`` instead of the code the user asked about. The second is
the failure users notice first, so the labelled set below is deliberately heavy on ordinary coding
prompts full of number-like things that must come back untouched.

Scores are per entity type: a guardrail that is excellent on e-mail addresses and useless on
bearer tokens should not hide behind a good average. The rules, kept simple so a reader can check
them by hand:

* a labelled span is every occurrence of its substring in the sample's text (a value pasted twice
  must be masked twice);
* a label is found (true positive) when at least one detection of the same entity type overlaps its
  character range, otherwise it is missed (false negative); overlap rather than exact boundaries,
  because whether ``Bearer `` or a trailing space is part of the mask does not matter to a user;
* a detection that overlaps no label of its entity type is a false positive, attributed to the
  entity type it claimed. Several detections on one label count once, so a recognizer that splits a
  PEM block in two is neither rewarded nor punished for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import pandas as pd

__all__ = [
    "LABELLED",
    "Sample",
    "Score",
    "evaluate",
    "scores_table",
    "untouched",
]


@dataclass(frozen=True)
class Sample:
    """One prompt and the exact substrings of it that the guardrail should mask.

    ``spans`` holds ``(entity_type, substring)`` pairs rather than offsets so the set stays readable
    and editable: an offset silently goes stale when the text is touched, a substring does not. A
    sample without spans is a clean coding prompt that must pass through unchanged.
    """

    text: str
    spans: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Score:
    """Counts for one entity type; precision and recall derive from them so they can't disagree."""

    entity: str
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """Share of detections that were right; nan when nothing was detected (undefined, not 0)."""
        detected = self.tp + self.fp
        return self.tp / detected if detected else math.nan

    @property
    def recall(self) -> float:
        """Share of labelled values that were found; nan when nothing of this type was labelled."""
        labelled = self.tp + self.fn
        return self.tp / labelled if labelled else math.nan


# Values are fake but format-valid, so a checksum-validating recognizer treats them like real ones:
# card numbers are the networks' published test numbers (they pass Luhn), IBANs are the registry's
# published examples (valid mod-97 checksums), SSNs avoid the ranges Presidio rejects (000, 666,
# 9xx, 123456789, 078051120, all-same digits), phone numbers are in the fictional 555-01xx and
# Ofcom drama ranges, AWS keys are the ones AWS documents as examples.

_JWT_HS = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IlRlc3QgVXNlciIsImlhdCI6MTUxNjIzOTAyMn0"
    ".natmUdjAWtGSU8po-799NksnRH9ucAUsdMlHUvTCQCy"
)
_JWT_RS = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJzdmMtY2kiLCJleHAiOjE4OTM0NTYwMDB9"
    ".EZDz_TddJ8HyS5SUkCnD8zRA9a9SkpXz9w3QlY7Zkuv"
)
_GOOGLE_KEY = "AIzaSyA-FAKE-key-for-the-book-only_0123"
_GITHUB_TOKEN = "ghp_FAKEtokenForTheBook0123456789abcdef0"
_OPENSSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBGQUtFRkFLRUZBS0VGQUtFRkFLRUZBS0VGQUtFRkFLRUZBS0UAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
_RSA_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAvFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFA\n"
    "KEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEwIDAQAB\n"
    "-----END RSA PRIVATE KEY-----"
)
_PKCS8_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRkFLRUZBS0VGQUtFRkFL\n"
    "RUZBS0VGQUtFRkFLRUZBS0WhRANCAARGQUtFRkFLRUZBS0VGQUtFRkFLRUZBS0VGQUtF\n"
    "-----END PRIVATE KEY-----"
)

LABELLED: tuple[Sample, ...] = (
    # --- EMAIL_ADDRESS -------------------------------------------------------------------------
    Sample(
        "My test fails for user jane.doe@example.com, here is the stack trace:\n"
        '  File "tests/test_signup.py", line 42, in test_welcome_mail\n'
        '    assert outbox[0].to == ["jane.doe@example.com"]\n'
        "AssertionError: assert [] == ['jane.doe@example.com']",
        (("EMAIL_ADDRESS", "jane.doe@example.com"),),
    ),
    Sample(
        "Why does this regex reject ops-alerts+ci@example.org? "
        "pattern = re.compile(r'^[\\w.]+@[\\w.]+$') and re.match(pattern, addr) returns None.",
        (("EMAIL_ADDRESS", "ops-alerts+ci@example.org"),),
    ),
    Sample(
        "The e-mail signature in our fixture renders badly:\n"
        "SIGNATURE = 'Mario Rossi | m.rossi@example.co.uk | +44 20 7946 0958'\n"
        "textwrap.fill(SIGNATURE, 40) breaks inside the address. How do I keep it on one line?",
        (("EMAIL_ADDRESS", "m.rossi@example.co.uk"), ("PHONE_NUMBER", "+44 20 7946 0958")),
    ),
    Sample(
        "smtplib.SMTPRecipientsRefused: {'billing@acme-corp.example.com': (550, b'5.1.1 user unknown')} "
        "when the cron job on port 587 sends the monthly invoice. Is it the STARTTLS order?",
        (("EMAIL_ADDRESS", "billing@acme-corp.example.com"),),
    ),
    # A hard positive on purpose: internal mail domains are common in developer prompts, and a
    # recognizer that validates the top-level domain against the public suffix list misses them.
    Sample(
        "Alertmanager never delivers: receivers: [{name: oncall, email_configs: "
        "[{to: oncall-payments@corp.internal, smarthost: 'mail.corp.internal:25'}]}]. "
        "amtool check-config says SUCCESS.",
        (("EMAIL_ADDRESS", "oncall-payments@corp.internal"),),
    ),
    # --- PHONE_NUMBER --------------------------------------------------------------------------
    Sample(
        "The Twilio webhook test posts From=+1 415 555 0132 but our validator says invalid. "
        "Validator: phonenumbers.is_valid_number(phonenumbers.parse(value, None)). What am I missing?",
        (("PHONE_NUMBER", "+1 415 555 0132"),),
    ),
    Sample(
        "The support line (212) 555-0199 is rendered as plain text in the React footer; "
        "how do I turn it into a tel: link with libphonenumber-js?",
        (("PHONE_NUMBER", "(212) 555-0199"),),
    ),
    Sample(
        "Seed data for the CRM migration: Contact(name='Test Person', phone='415-555-0147', city='SF'). "
        "Alembic fails with 'value too long for type character varying(10)'.",
        (("PHONE_NUMBER", "415-555-0147"),),
    ),
    # --- CREDIT_CARD ---------------------------------------------------------------------------
    Sample(
        "Stripe test payments with 4111 1111 1111 1111 pass locally but fail in CI with card_declined. "
        "Fixture: card = {'number': '4111 1111 1111 1111', 'exp_month': 12, 'exp_year': 2030}",
        (("CREDIT_CARD", "4111 1111 1111 1111"),),
    ),
    Sample(
        "Our checkout form strips spaces, so 5555555555554444 is submitted, and luhn() in utils/card.py "
        "returns False:\ndef luhn(n):\n    digits = [int(d) for d in n][::-1]\n"
        "    return sum(digits[0::2] + [sum(divmod(2 * d, 10)) for d in digits[1::2]]) % 10 == 0",
        (("CREDIT_CARD", "5555555555554444"),),
    ),
    Sample(
        "The Amex card 3782 822463 10005 is rejected by our regex ^\\d{4}( \\d{4}){3}$. "
        "How do I also accept 15-digit cards?",
        (("CREDIT_CARD", "3782 822463 10005"),),
    ),
    Sample(
        "payment_service ERROR charge failed card=4012-8888-8888-1881 amount=19.99 currency=EUR "
        "attempt=3 -- why is the retry not idempotent?",
        (("CREDIT_CARD", "4012-8888-8888-1881"),),
    ),
    # --- IBAN_CODE -----------------------------------------------------------------------------
    Sample(
        "SEPA export test: the debtor IBAN GB82 WEST 1234 5698 7654 32 appears with spaces in the "
        "pain.001 XML. Should I strip them before lxml serialises the document?",
        (("IBAN_CODE", "GB82 WEST 1234 5698 7654 32"),),
    ),
    Sample(
        "Validating DE89 3704 0044 0532 0130 00 with schwifty 2024.4.0 raises InvalidChecksum in our "
        "wrapper, but the bank says the account is fine.",
        (("IBAN_CODE", "DE89 3704 0044 0532 0130 00"),),
    ),
    Sample(
        "payout = Payout(iban='NL91ABNA0417164300', amount=Decimal('250.00'))  "
        "# raises ValidationError in clean(); Django 5.0.6",
        (("IBAN_CODE", "NL91ABNA0417164300"),),
    ),
    # --- US_SSN --------------------------------------------------------------------------------
    Sample(
        "The HR import chokes on row 17: ssn=536-22-8726, dob=1985-04-12. "
        "csv.DictReader gives the column as ' ssn' with a leading space.",
        (("US_SSN", "536-22-8726"),),
    ),
    Sample(
        "Mask the SSN 412-67-3329 in the audit log before it is written; right now "
        "logger.info(f'verified {ssn}') leaks it into Loki.",
        (("US_SSN", "412-67-3329"),),
    ),
    Sample(
        "The form test types 287 65 4321 into the social security field and expects 287-65-4321 "
        "after formatting, but gets 28765-4321.",
        (("US_SSN", "287 65 4321"), ("US_SSN", "287-65-4321"), ("US_SSN", "28765-4321")),
    ),
    Sample(
        "Social security number 501-94-7730 shows up in the CSV export; "
        "how do I drop that column with pandas before df.to_csv()?",
        (("US_SSN", "501-94-7730"),),
    ),
    # --- CLOUD_KEY -----------------------------------------------------------------------------
    Sample(
        "boto3 raises InvalidClientTokenId with "
        "boto3.client('s3', aws_access_key_id='AKIAIOSFODNN7EXAMPLE', region_name='eu-west-1'). "
        "Is the region wrong?",
        (("CLOUD_KEY", "AKIAIOSFODNN7EXAMPLE"),),
    ),
    Sample(
        "~/.aws/config:\n[profile ci]\naws_access_key_id = AKIAI44QH8DHBEXAMPLE\n"
        "region = us-east-1\nWhy does the CLI still pick up the env profile?",
        (("CLOUD_KEY", "AKIAI44QH8DHBEXAMPLE"),),
    ),
    Sample(
        "Geocoding returns REQUEST_DENIED in this call: fetch(`https://maps.googleapis.com/maps/api/"
        f"geocode/json?address=Berlin&key={_GOOGLE_KEY}`). Do I need to enable billing?",
        (("CLOUD_KEY", _GOOGLE_KEY),),
    ),
    Sample(
        f"firebase.initializeApp({{ apiKey: '{_GOOGLE_KEY}', projectId: 'demo-app-12345' }}) "
        "throws auth/invalid-api-key in the Vite build only.",
        (("CLOUD_KEY", _GOOGLE_KEY),),
    ),
    Sample(
        "Terraform plan shows access_key = \"AKIAFAKEKEY0TEST1234\" in the provider block; "
        "how do I move it into a variable marked sensitive = true?",
        (("CLOUD_KEY", "AKIAFAKEKEY0TEST1234"),),
    ),
    # --- PRIVATE_KEY ---------------------------------------------------------------------------
    Sample(
        "ssh from the runner fails with 'invalid format'. This is the key I stored as a GitHub secret:\n"
        f"{_OPENSSH_KEY}\nDo I need a trailing newline?",
        (("PRIVATE_KEY", _OPENSSH_KEY),),
    ),
    Sample(
        "jwt.encode(payload, key, algorithm='RS256') raises 'Could not deserialize key data' with\n"
        f'key = """{_RSA_KEY}"""',
        (("PRIVATE_KEY", _RSA_KEY),),
    ),
    Sample(
        "kubectl create secret tls fails with 'tls: failed to find any PEM data in key input' for:\n"
        f"{_PKCS8_KEY}\n(the cert file is next to it)",
        (("PRIVATE_KEY", _PKCS8_KEY),),
    ),
    # --- BEARER_TOKEN --------------------------------------------------------------------------
    Sample(
        f"curl -H 'Authorization: Bearer {_JWT_HS}' https://api.internal.example/v1/users "
        "returns 401 although the token was issued 5 minutes ago. Clock skew?",
        (("BEARER_TOKEN", f"Bearer {_JWT_HS}"),),
    ),
    Sample(
        f"git push fails with 'remote: Invalid username or token'. I set GH_TOKEN={_GITHUB_TOKEN} "
        "in .envrc and direnv allow says it is loaded.",
        (("BEARER_TOKEN", _GITHUB_TOKEN),),
    ),
    Sample(
        "The pytest fixture hardcodes\n"
        'headers = {"Authorization": "Bearer tok_live_4fJ9kQ2xZ8rT1mW7vB3nL6pY"}\n'
        "and requests.get(url, headers=headers, timeout=5) gets a 403 from the staging API.",
        (("BEARER_TOKEN", "Bearer tok_live_4fJ9kQ2xZ8rT1mW7vB3nL6pY"),),
    ),
    Sample(
        f"jwt.decode('{_JWT_RS}', public_key, algorithms=['RS256']) raises ExpiredSignatureError "
        "but exp is in 2030. Is leeway in seconds?",
        (("BEARER_TOKEN", _JWT_RS),),
    ),
    # --- clean coding prompts: nothing here may be masked ------------------------------------
    Sample(
        "git bisect points at 3f9a1c2e7b4d8e6f0a1b2c3d4e5f60718293a4b5 (short 3f9a1c2). How do I "
        "revert only that commit without touching 9c0e4d1 on top of it?"
    ),
    Sample(
        "The wheel's sha256 is e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 but pip "
        "expects 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824. Stale cache?"
    ),
    Sample(
        "SELECT * FROM orders WHERE id = '123e4567-e89b-12d3-a456-426614174000' returns nothing although "
        "request 9b2f6c1e-8d3a-4f5b-a1c7-2e4d6f8a0b13 logged the insert."
    ),
    Sample(
        "After upgrading numpy 1.26.4 -> 2.0.1 on Python 3.11.7 with torch 2.3.1+cpu the import fails; "
        "pip says scipy 1.13.1 requires numpy<2.3,>=1.22.4 and vllm 0.6.3.post1 pins 1.26.4."
    ),
    Sample(
        "docker compose maps 8080:80, 5432:5432 and 6379:6379. The app on http://localhost:8000 can't "
        "reach postgres at localhost:5432 (ECONNREFUSED 127.0.0.1:5432)."
    ),
    Sample(
        "2024-06-11 14:32:07,123 ERROR [worker-3] job 48213 failed after 3 retries\n"
        "2024-06-11T14:32:09.456Z WARN retry scheduled at 2024-06-11T14:37:09+02:00\n"
        "Why does the second line use UTC and the first local time?"
    ),
    Sample(
        "time.time() gives 1718116327.4821 but the browser sends Date.now() = 1718116327482. "
        "How do I compare them? The cache entry expires at 1718202727."
    ),
    Sample(
        "The fixture decodes payload = 'eyJ1c2VyIjogImZpeHR1cmUiLCAicm9sZXMiOiBbImFkbWluIl19' with "
        "base64.b64decode, but json.loads fails on the second one, 'dGVzdCBkYXRhIGZvciB1bml0IHRlc3Rz'."
    ),
    Sample(
        "Flask binds 0.0.0.0:5000 but from the host only 127.0.0.1 works; the container is 172.17.0.2 "
        "behind gateway 192.168.1.1, and ::1 refuses too."
    ),
    Sample(
        "def test_fib():\n    assert fib(30) == 832040\n    assert fib(44) == 701408733\n"
        "    assert fib(50) == 12586269025\n    assert fib(70) == 190392490709135\n"
        "Only the last assertion times out."
    ),
    Sample(
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.11/asyncio/base_events.py", line 653, in run_until_complete\n'
        '  File "/app/server.py", line 1423, in handle\n'
        "TimeoutError: request timed out after 30.0 s (pid 48213, fd 17)"
    ),
    Sample(
        "kubectl describe shows image nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c5"
        "4a66cd53c9b31 with restartCount 14 in CrashLoopBackOff. What should I look at first?"
    ),
    Sample(
        "resources: requests cpu 500m, memory 2Gi; limits memory 4096Mi. The HPA targets 70% with "
        "minReplicas 2 and maxReplicas 10, nodes have 15.5 GiB allocatable and 3920m CPU."
    ),
    Sample(
        "At 32 concurrent requests p50 is 212.55 ms, p95 1234.8 ms and p99 4021 ms; throughput "
        "1450.2 tokens/s with max_model_len 131072 and gpu_memory_utilization 0.90."
    ),
    Sample(
        "order_id 202406110001 and invoice 2024-000123 collide in the unique index; the Kafka offset is "
        "4398046511104 and BIGINT max is 9223372036854775807."
    ),
    Sample(
        'package.json has "react": "^18.2.0" and "typescript": "~5.4.5"; the cron "*/15 2-5 * * 1-5" '
        "runs at 02:15 but the release tag is 2024.06.11 and the build number 20240611.3."
    ),
    Sample(
        "Is it fine to commit this webhook verification key?\n-----BEGIN PUBLIC KEY-----\n"
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhRrGT1B0XoRm3FrSN9SK0Gq0wHGJBwPk\n"
        "-----END PUBLIC KEY-----"
    ),
    Sample(
        "Our OpenAPI spec declares bearerAuth: {type: http, scheme: bearer, bearerFormat: JWT} but "
        "swagger-ui-react 5.11.0 never sends the Authorization header. Known bug?"
    ),
    Sample(
        "Segfault at address 0x7ffd5fbff8a0; rip 0x0000555555555189 in main+0x29, "
        "exit status 139, and Windows reports 0xC0000005 for the same build."
    ),
    Sample(
        "Playwright tests fail only on Chrome 125.0.6422.142 (Windows 10.0.19045.4529); "
        "Firefox 126.0.1 and WebKit 17.4 pass. Is it the new headless mode?"
    ),
    Sample(
        "zlib.crc32(data) returns 3632233996 in Python but -662733300 in Java's CRC32 after a cast "
        "to int. How do I compare them in the integration test?"
    ),
    Sample(
        "print(*range(1, 11)) outputs 1 2 3 4 5 6 7 8 9 10 on one line, but the doctest expects "
        "one number per line. Is sep='\\n' the idiomatic fix?"
    ),
    Sample(
        "OpenTelemetry shows trace_id 4bf92f3577b34da6a3ce929d0e0e4736 and span_id 00f067aa0ba902b7, "
        "but the Jaeger UI at localhost:16686 can't find the trace."
    ),
)


def _label_ranges(sample: Sample) -> list[tuple[str, int, int]]:
    """Every occurrence of every labelled substring, as ``(entity, start, end)``.

    All occurrences, because a value pasted twice leaks twice; duplicate span entries collapse.
    """
    ranges: set[tuple[str, int, int]] = set()
    for entity, fragment in sample.spans:
        start = sample.text.find(fragment)
        if start < 0 or not fragment:
            raise ValueError(f"labelled {entity} {fragment!r} is not in the sample's text")
        while start >= 0:
            ranges.add((entity, start, start + len(fragment)))
            start = sample.text.find(fragment, start + len(fragment))
    return sorted(ranges, key=lambda r: (r[1], r[0]))


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def evaluate(
    analyze: Callable[[str], list[dict]],
    samples: Sequence[Sample] = LABELLED,
) -> tuple[list[Score], list[dict]]:
    """Score ``analyze`` (text -> Presidio ``/analyze`` results) per entity type on ``samples``.

    ``analyze`` is a callable rather than a URL so the same scoring runs against the live service, an
    in-process ``AnalyzerEngine`` or a hand-written double in tests. Returns the scores sorted by
    entity (every labelled entity type, plus any type that only produced false positives) and one
    mistake row per false positive or missed label, ``{"sample", "kind", "entity", "text"}``, so the
    chapter can show what went wrong and not only how often.
    """
    tp: dict[str, int] = {}
    fp: dict[str, int] = {}
    fn: dict[str, int] = {}
    mistakes: list[dict] = []
    for sample in samples:
        for entity, _ in sample.spans:
            tp.setdefault(entity, 0)
    for index, sample in enumerate(samples):
        labels = _label_ranges(sample)
        detections = [
            (str(d["entity_type"]), int(d["start"]), int(d["end"])) for d in analyze(sample.text)
        ]
        for entity, start, end in labels:
            if any(e == entity and _overlaps(start, end, s, t) for e, s, t in detections):
                tp[entity] = tp.get(entity, 0) + 1
            else:
                fn[entity] = fn.get(entity, 0) + 1
                mistakes.append(
                    {"sample": index, "kind": "missed", "entity": entity, "text": sample.text[start:end]}
                )
        for entity, start, end in sorted(detections, key=lambda d: (d[1], d[0])):
            if not any(e == entity and _overlaps(start, end, s, t) for e, s, t in labels):
                fp[entity] = fp.get(entity, 0) + 1
                mistakes.append(
                    {
                        "sample": index,
                        "kind": "false positive",
                        "entity": entity,
                        "text": sample.text[start:end],
                    }
                )
    entities = sorted(set(tp) | set(fp) | set(fn))
    scores = [Score(e, tp.get(e, 0), fp.get(e, 0), fn.get(e, 0)) for e in entities]
    return scores, mistakes


def scores_table(scores: Iterable[Score]) -> pd.DataFrame:
    """The scores as a table, one row per entity plus a micro-averaged ``all`` row.

    Micro rather than macro averaging for ``all``: it weighs every labelled value and every wrong
    mask equally, which is what a user of the gateway experiences; the per-entity rows above it
    already show the types a macro average would protect.
    """
    scores = list(scores)
    total = Score(
        "all",
        sum(s.tp for s in scores),
        sum(s.fp for s in scores),
        sum(s.fn for s in scores),
    )
    rows = [
        {
            "entity": s.entity,
            "labelled": s.tp + s.fn,
            "tp": s.tp,
            "fp": s.fp,
            "fn": s.fn,
            "precision": round(s.precision, 2),
            "recall": round(s.recall, 2),
        }
        for s in [*scores, total]
    ]
    return pd.DataFrame(
        rows, columns=["entity", "labelled", "tp", "fp", "fn", "precision", "recall"]
    )


def untouched(samples: Sequence[Sample] = LABELLED) -> list[Sample]:
    """The clean coding prompts: the ones a guardrail must hand to the model byte for byte."""
    return [sample for sample in samples if not sample.spans]
