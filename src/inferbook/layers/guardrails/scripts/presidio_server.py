"""The guardrails layer's local PII server: Presidio's analyzer and anonymizer behind the HTTP API of their images.

LiteLLM's ``presidio`` guardrail calls ``POST /analyze`` and ``POST /anonymize`` on the analyzer and anonymizer
images (mcr.microsoft.com/presidio-analyzer and -anonymizer 2.2.361 on a cluster). On the local target this one
process answers both, with the same library at the same version, so the gateway's config differs only in its URLs.

What it runs: Presidio's pattern recognizers (e-mail, phone, credit card, IBAN, US SSN) plus whatever ad-hoc
recognizers a request carries (the gateway sends the book's secret recognizers with each call, as it does to the
images). No NER model: spaCy runs a blank English pipeline (tokens only), so nothing is fetched from a model hub,
and PERSON is not detected here (the images' en_core_web_lg finds names; see ADR-0034).

Standard library and Presidio only: it runs on the presidio environment's interpreter (inferbook/envs/presidio.txt).
Run: ``python presidio_server.py --host 127.0.0.1 --port 8310``.
"""

from __future__ import annotations

import argparse
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.analyzer_request import AnalyzerRequest
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.services.app_entities_convertor import AppEntitiesConvertor

VERSION = "2.2.361"
#: The e-mail recognizer checks a match's domain with tldextract, whose default fetches the public suffix list
#: from the internet on first use; the copy bundled in the package is used instead (tldextract's offline mode).
tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())


class BlankEnglish(SpacyNlpEngine):
    """spaCy's blank English pipeline: tokens for the recognizers' context words, no NER model to download."""

    def load(self) -> None:
        self.nlp = {"en": spacy.blank("en")}


def analyzer() -> AnalyzerEngine:
    """The pattern recognizers only (no SpacyRecognizer: a blank pipeline finds no entities)."""
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (EmailRecognizer(), PhoneRecognizer(), CreditCardRecognizer(), IbanRecognizer(),
                       UsSsnRecognizer()):
        registry.add_recognizer(recognizer)
    engine = BlankEnglish()
    engine.load()
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


class Handler(BaseHTTPRequestHandler):
    """The images' routes: /health, /analyze, /anonymize, /supportedentities."""

    server_version = f"inferbook-presidio/{VERSION}"
    analyzer: AnalyzerEngine
    anonymizer: AnonymizerEngine

    def log_message(self, format: str, *args: Any) -> None:  # one line per call, never the text
        logging.info("%s %s", self.command, format % args)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path == "/health":
            self._send(200, {"status": "ok", "version": VERSION,
                             "entities": sorted(self.analyzer.get_supported_entities("en"))})
        elif self.path.startswith("/supportedentities"):
            self._send(200, sorted(self.analyzer.get_supported_entities("en")))
        else:
            self._send(404, {"error": f"no route {self.path}: /health, /analyze, /anonymize, /supportedentities"})

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not isinstance(body, dict) or not isinstance(body.get("text"), str):
                raise ValueError("the body must be a JSON object with a string 'text'")
            if self.path == "/analyze":
                self._send(200, self._analyze(body))
            elif self.path == "/anonymize":
                self._send(200, self._anonymize(body))
            else:
                self._send(404, {"error": f"no route {self.path}: POST /analyze or /anonymize"})
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": str(exc)})

    def _analyze(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        request = AnalyzerRequest(body)
        results = self.analyzer.analyze(
            text=request.text, language=request.language or "en", entities=request.entities,
            score_threshold=request.score_threshold, ad_hoc_recognizers=request.ad_hoc_recognizers,
            context=request.context, allow_list=request.allow_list, allow_list_match=request.allow_list_match,
            regex_flags=request.regex_flags)
        return [r.to_dict() for r in results]

    def _anonymize(self, body: dict[str, Any]) -> Any:
        results = AppEntitiesConvertor.analyzer_results_from_json(body.get("analyzer_results") or [])
        operators = AppEntitiesConvertor.operators_config_from_json(body.get("anonymizers") or {})
        return json.loads(self.anonymizer.anonymize(text=body["text"], analyzer_results=results,
                                                    operators=operators).to_json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    Handler.analyzer, Handler.anonymizer = analyzer(), AnonymizerEngine()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    logging.info("presidio (analyzer + anonymizer %s) on http://%s:%d", VERSION, args.host, args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
