"""The proxy hook that turns "the model server cannot be reached" into a 503 naming it (run outside LiteLLM)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

HOOK = Path(__file__).parents[1] / "src/inferbook/layers/llm_gateway/proxy_hooks/backend_errors.py"


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("backend_errors", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InternalServerError(Exception):
    """Shaped like LiteLLM's: a status code, a provider and a message."""

    def __init__(self, message: str, status_code: int = 500, llm_provider: str = "hosted_vllm") -> None:
        super().__init__(message)
        self.status_code, self.llm_provider = status_code, llm_provider


def test_a_refused_connection_to_vllm_becomes_a_503_that_names_it(hooks):
    exc = InternalServerError("Hosted_vllmException - Cannot connect to host 127.0.0.1:8000 [Connect call failed]")
    answer = asyncio.run(hooks.hook.async_post_call_failure_hook({"model": "coder-chat"}, exc, None))
    assert answer.status_code == 503
    assert "'coder-chat' (vLLM) is not reachable" in answer.detail["error"]


def test_an_error_the_model_server_answered_is_left_alone(hooks):
    exc = InternalServerError("BadRequestError: max_tokens must be at most 8192", status_code=400)
    assert asyncio.run(hooks.hook.async_post_call_failure_hook({"model": "coder-chat"}, exc, None)) is None
    assert not hooks.backend_unreachable(InternalServerError("context length exceeded"))
