"""inferbook's PII guardrail for the LiteLLM proxy: LiteLLM's own Presidio guardrail, answering for the tier when
Presidio cannot be reached (features.guardrails, ADR-0034; the tiers of ADR-0029).

Shipped like the other hooks: a key of the ``litellm-config`` ConfigMap beside config.yaml, written beside it by
the local target; the config names it as a custom guardrail (``guardrail: pii_guardrail.TieredPresidio``), and
LiteLLM passes the entry's ``litellm_params`` to it. It runs inside the proxy, on LiteLLM's own interpreter.

LiteLLM's presidio guardrail always refuses a request when Presidio does not answer. The tier decides here, with
LiteLLM's own ``unreachable_fallback`` parameter (which its presidio guardrail does not read itself):

- ``fail_closed`` (prod): the request is refused before any model call, as LiteLLM does (the backend-error hook
  turns its generic 500 into a 503 that names Presidio).
- ``fail_open`` (dev, cost): the prompt goes on unmasked, and the proxy's log says so at CRITICAL each time;
  ``inferbook status`` says the same of a Presidio that is down.

Only prompts are screened: the entry's ``presidio_filter_scope`` is ``input`` (LiteLLM would otherwise also mask
what the model answers, which on a coding platform rewrites numbers inside generated code).
"""

from __future__ import annotations

import logging
from typing import Any

try:  # inside the proxy
    from litellm._logging import verbose_proxy_logger as log
    from litellm.proxy.guardrails.guardrail_hooks.presidio import OPTIONAL_PresidioPIIMasking as _Presidio
except ModuleNotFoundError:  # inferbook's tests, outside LiteLLM's environment
    log = logging.getLogger("inferbook.pii_guardrail")

    class _Presidio:  # type: ignore[no-redef]
        """Stand-in: the hook runs the masking it is given (``mask``), or raises what it is given (``fail``)."""

        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

        async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: str) -> Any:
            failure = self.kwargs.get("fail")
            if failure is not None:
                raise failure
            return data

#: How LiteLLM's presidio guardrail words a Presidio it could not reach (the exception's type follows).
UNREACHABLE = ("Presidio PII analysis failed:", "Presidio PII anonymization failed:")


def presidio_unreachable(exc: BaseException) -> bool:
    """Whether the guardrail failed for want of Presidio (not because Presidio answered with an error)."""
    return str(exc).startswith(UNREACHABLE)


class TieredPresidio(_Presidio):
    """LiteLLM's Presidio guardrail; on an unreachable Presidio, fails open or closed as the tier says."""

    def __init__(self, unreachable_fallback: str = "fail_closed", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_open = unreachable_fallback == "fail_open"
        #: Prompts passed unmasked since the proxy started (fail-open only).
        self.passed_unmasked = 0

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: str) -> Any:
        try:
            return await super().async_pre_call_hook(user_api_key_dict, cache, data, call_type)
        except Exception as exc:
            if not (self.fail_open and presidio_unreachable(exc)):
                raise
            self.passed_unmasked += 1
            log.critical("inferbook-pii: Presidio is not reachable (%s); this tier fails open, so the prompt goes to "
                         "the model UNMASKED (%d so far). Fix: start Presidio (inferbook up)", exc,
                         self.passed_unmasked)
            return data
