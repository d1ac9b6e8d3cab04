"""inferbook's ledger guard for the LiteLLM proxy: fail-open covers budgets and spend, never authentication.

LiteLLM's ``allow_requests_on_db_unavailable`` (on for the cost and dev tiers, off on prod: ADR-0029 SR3)
keeps the proxy serving while its Postgres ledger is unreachable. LiteLLM 1.108.7 does it in
``UserAPIKeyAuthExceptionHandler.handle_authentication_error``: when the lookup of an ``sk-`` key fails
with a connection error, the caller gets a synthetic identity (user ``__db_unavailable_fallback__``, no
model list, no budget, no limits), whatever the key was. A made-up key is served, and a real key loses
its model list once LiteLLM's 60-second key cache has let it go. This guard keeps the fail-open for
budgets and spend, and takes it away from authentication:

* it remembers the keys LiteLLM validated (sha256, model list, expiry) for ``REMEMBER_SECONDS`` after
  their last validation, and forgets a key as soon as LiteLLM refuses it as unknown, expired or blocked;
* as ``custom_auth`` (every authenticated route, before LiteLLM's own checks, which still run: it returns
  None): while the ledger is unreachable, a key it does not remember gets 401; on a fail-closed gateway
  every virtual key gets 503 saying why, also one LiteLLM still holds in its cache;
* as a callback's pre-call hook (every model call): a request carrying LiteLLM's fallback identity is
  served only for a remembered key, and only for that key's models (this closes the race between the
  guard's ledger probe and LiteLLM's own lookup).

The memory is per proxy process and never written anywhere: a proxy started while the ledger is down
knows no key and serves none (but the master key). A key revoked while the ledger was up, and not used
since, is still remembered until its window ends.

The file is self-contained (it imports nothing of inferbook): the proxy loads it from its config's
folder, where the ``litellm-config`` ConfigMap (key ``ledger_guard.py``) or the local target puts it.
inferbook's tests load it outside LiteLLM's environment, hence the stand-ins below.
"""

# No ``from __future__ import annotations``: LiteLLM executes this file as a module it does not register in
# sys.modules, and dataclasses resolve string annotations through sys.modules.
import asyncio
import hashlib
import importlib.util
import secrets
import sys
import time
import types
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

try:  # inside the proxy
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.proxy._types import ProxyException

    IN_PROXY = True
except ModuleNotFoundError:  # inferbook's tests, outside LiteLLM's environment
    IN_PROXY = False

    class CustomLogger:  # type: ignore[no-redef]
        """Stand-in: the guard's hooks are plain coroutines."""

    class ProxyException(Exception):  # type: ignore[no-redef]
        """Stand-in with the fields LiteLLM answers with."""

        def __init__(self, message: str, type: str, param: str | None, code: int | str | None = None) -> None:
            super().__init__(message)
            self.message, self.type, self.param, self.code = message, type, param, str(code)


#: The identity LiteLLM 1.108.7 issues on a ledger outage (auth_exception_handler.py).
FALLBACK_USER_ID = "__db_unavailable_fallback__"
FALLBACK_TOKEN = "failed-to-connect-to-db"
#: What LiteLLM puts in place of the master key in an identity (litellm.constants).
MASTER_KEY_ALIAS = "litellm_proxy_master_key"
#: Where LiteLLM reads a key, first match wins (user_api_key_auth.get_api_key).
KEY_HEADERS = ("x-litellm-api-key", "authorization", "api-key", "x-api-key", "x-goog-api-key",
               "ocp-apim-subscription-key")
#: Model-list entries that grant more than their own name; the guard then allows every model.
ALL_MODELS = frozenset({"*", "all-proxy-models", "all-team-models"})
#: LiteLLM's refusals of a key itself: the guard forgets it.
KEY_REFUSALS = frozenset({"token_not_found_in_db", "expired_key"})
#: How long a validated key stays usable through an outage: a working day and its night.
REMEMBER_SECONDS = 24 * 3600
#: The ledger probe: how long it may take, and how long a failed probe stands.
PROBE_TIMEOUT_SECONDS = 2.0
PROBE_VALID_SECONDS = 2.0

UNKNOWN_KEY = ("Authentication Error: the gateway's key ledger is unreachable, so this key cannot be checked, "
               "and the gateway has not validated it recently. Keys in recent use keep working; this one works "
               "again when the ledger is back.")
EXPIRED_KEY = "Authentication Error: this key has expired (checked while the gateway's key ledger is unreachable)."
FAIL_CLOSED = ("Service Unavailable: the gateway's spend ledger is unreachable and this gateway fails closed "
               "(budgets and spend cannot be checked), so no virtual-key request is served until the ledger is "
               "back. Retry later.")


def digest(key: str) -> str:
    """LiteLLM's key hash (``litellm.proxy.utils.hash_token``): what an identity carries as ``token``."""
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(data: dict[str, Any]) -> str | None:
    """The key a model call presented, from the raw headers LiteLLM keeps out of logs (``secret_fields``)."""
    raw = (data.get("secret_fields") or {}).get("raw_headers") or {}
    headers = {str(name).lower(): str(value) for name, value in raw.items()}
    for name in KEY_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            return value[7:].strip() if value[:7].lower() == "bearer " else value
    return None


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) and value else None
    except ValueError:  # an unreadable expiry is no expiry: LiteLLM itself checks it while the ledger is up
        return None


@dataclass(frozen=True)
class Validated:
    """What the guard keeps of a key LiteLLM validated: never the key, only what an outage needs."""

    models: frozenset[str]
    expires: float | None
    at: float

    def allows(self, model: Any) -> bool:
        """LiteLLM's rule for a plain model list: empty means every model."""
        return not isinstance(model, str) or not self.models or model in self.models or bool(self.models & ALL_MODELS)


def is_fallback(identity: Any) -> bool:
    return (getattr(identity, "user_id", None) == FALLBACK_USER_ID
            or getattr(identity, "token", None) == FALLBACK_TOKEN)


def _proxy() -> Any:
    from litellm.proxy import proxy_server  # the running proxy's settings, ledger client and master key

    return proxy_server


class LedgerGuard(CustomLogger):
    """The guard; the proxy uses the one :func:`shared` instance. The arguments are for tests."""

    def __init__(self, fails_open: Callable[[], bool] | None = None,
                 probe: Callable[[], Awaitable[Any]] | None = None,
                 master_key: Callable[[], str | None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 remember_seconds: float = REMEMBER_SECONDS) -> None:
        super().__init__()
        self._fails_open = fails_open or self._proxy_fails_open
        self._probe = probe or self._proxy_probe
        self._master_key = master_key or (lambda: _proxy().master_key)
        self._clock, self._wall, self._remember = clock, wall, remember_seconds
        self._keys: dict[str, Validated] = {}
        self._failed_at: float | None = None

    # ------------------------------------------------------------------ the proxy's state

    @staticmethod
    def _proxy_fails_open() -> bool:
        value = _proxy().general_settings.get("allow_requests_on_db_unavailable", False)
        return value is True or (isinstance(value, str) and value.strip().lower() == "true")

    @staticmethod
    async def _proxy_probe() -> None:
        client = _proxy().prisma_client
        if client is not None:  # no ledger configured: nothing to guard
            await client.health_check()

    async def ledger_reachable(self) -> bool:
        """A ``SELECT 1`` through LiteLLM's own client; a slow answer counts as none.

        Only a failure is remembered (for PROBE_VALID_SECONDS), so an outage costs one probe per window
        rather than one timeout per request, while a reachable ledger is asked afresh each time: the
        first request after the ledger goes away already sees it gone.
        """
        if self._failed_at is not None and self._clock() - self._failed_at < PROBE_VALID_SECONDS:
            return False
        try:
            await asyncio.wait_for(self._probe(), PROBE_TIMEOUT_SECONDS)
        except Exception:  # any failure of the probe: the ledger cannot be relied on
            self._failed_at = self._clock()
            return False
        self._failed_at = None
        return True

    # ------------------------------------------------------------------ the memory

    def remember(self, identity: Any) -> None:
        """Keep a key LiteLLM has just validated (not the master key, not the fallback identity)."""
        token = getattr(identity, "token", None)
        if not token or is_fallback(identity) or MASTER_KEY_ALIAS in (token, getattr(identity, "api_key", None)):
            return
        models = getattr(identity, "models", None) or getattr(identity, "team_models", None) or []
        self._keys[token] = Validated(frozenset(models), _epoch(getattr(identity, "expires", None)), self._clock())

    def forget(self, token: str | None) -> None:
        self._keys.pop(token or "", None)

    def known(self, token: str) -> Validated | None:
        record = self._keys.get(token)
        if record is not None and self._clock() - record.at > self._remember:
            self.forget(token)
            return None
        return record

    def _is_master(self, key: str) -> bool:
        master = self._master_key()
        return isinstance(master, str) and secrets.compare_digest(key.encode(), master.encode())

    # ------------------------------------------------------------------ LiteLLM's extension points

    async def authenticate(self, request: Any, api_key: str) -> None:
        """``general_settings.custom_auth``: refuse what an outage must not let through, else let LiteLLM decide.

        Returning None hands the request to LiteLLM's own authentication (litellm-enterprise's custom-auth
        path, part of ``litellm[proxy]``).
        """
        if not isinstance(api_key, str) or not api_key.startswith("sk-") or self._is_master(api_key):
            return None  # LiteLLM refuses a missing or malformed key itself, before any ledger lookup
        if self._fails_open():
            if self.known(digest(api_key)) is not None or await self.ledger_reachable():
                return None
            raise ProxyException(message=UNKNOWN_KEY, type="auth_error", param="key", code=401)
        if await self.ledger_reachable():
            return None
        raise ProxyException(message=FAIL_CLOSED, type="ledger_unavailable", param=None, code=503)

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict[str, Any],
                                  call_type: Any) -> None:
        """Remember every key LiteLLM validated; serve the fallback identity only for a remembered key."""
        if not is_fallback(user_api_key_dict):
            self.remember(user_api_key_dict)
            return None
        key = presented_key(data)
        token = digest(key) if key else ""
        record = self.known(token)
        if record is None:
            raise ProxyException(message=UNKNOWN_KEY, type="auth_error", param="key", code=401)
        if record.expires is not None and record.expires <= self._wall():
            self.forget(token)
            raise ProxyException(message=EXPIRED_KEY, type="expired_key", param="key", code=401)
        model = data.get("model")
        if not record.allows(model):
            raise ProxyException(message=f"The requested model '{model}' is not available for this API key.",
                                 type="key_model_access_denied", param="model", code=403)
        return None

    async def async_post_call_failure_hook(self, request_data: dict[str, Any], original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        """Forget a key LiteLLM refused as unknown, expired or blocked (a revoked key is refused as unknown)."""
        refused = (getattr(original_exception, "type", None) in KEY_REFUSALS
                   or "blocked" in str(original_exception).lower())
        if refused and not is_fallback(user_api_key_dict):
            self.forget(getattr(user_api_key_dict, "token", None))
            self.forget(getattr(user_api_key_dict, "api_key", None))
        return None


def require_deferring_custom_auth(find_spec: Callable[[str], Any] = importlib.util.find_spec) -> None:
    """Fail the proxy's start, naming the fix, where a custom auth cannot hand a request back to LiteLLM.

    Only litellm-enterprise's custom-auth path (``enterprise_custom_auth``) lets a custom auth return
    None and continue with LiteLLM's own checks; without it LiteLLM would take None for an identity and
    refuse every request.
    """
    if find_spec("litellm_enterprise") is None:
        raise ImportError("inferbook's ledger guard needs litellm-enterprise, which litellm[proxy] installs; this "
                          "LiteLLM has none. Fix: use an image or environment built with litellm[proxy]")


def shared() -> LedgerGuard:
    """The proxy's one guard.

    LiteLLM executes this file anew for each setting that names it (``custom_auth``, ``callbacks``), as
    a module it does not register; the guard's memory must be one, so the first guard is kept in a
    registered module of its own and every later load returns it.
    """
    if IN_PROXY:
        require_deferring_custom_auth()
    holder = sys.modules.setdefault("inferbook_ledger_guard", types.ModuleType("inferbook_ledger_guard"))
    if getattr(holder, "guard", None) is None:
        holder.guard = LedgerGuard()  # type: ignore[attr-defined]
    return holder.guard  # type: ignore[attr-defined]


guard = shared()
authenticate = guard.authenticate
