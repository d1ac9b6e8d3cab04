"""IDE client configuration for a tenant: the gateway's aliases in the roles an IDE assistant uses.

The file names the gateway URL and the aliases, and refers to the key by an
environment variable: it never holds a key, so it can be shared, committed to a
dotfiles repository or shown on the site. Continue's ``config.yaml`` (schema
v1) is the supported client; its published schema ships on npm as
``@continuedev/config-yaml``, which the tests use to validate what we write.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ...errors import InferbookError
from ...fim import format_for
from ...profile import Profile
from ...targets import kind_of
from ..llm_gateway.manifests import CHAT_ALIAS, FIM_ALIAS

CLIENTS = ("continue",)
DEFAULT_KEY_ENV = "INFERBOOK_API_KEY"
#: Where the tenant reaches the gateway of a cluster profile by default: `kubectl port-forward svc/litellm 4000`.
CLUSTER_DEFAULT_URL = "http://127.0.0.1:4000/v1"


class IdeConfigError(InferbookError):
    """The IDE configuration cannot be written as asked."""


def gateway_url(profile: Profile) -> str:
    """The gateway's ``/v1`` URL a tenant on this machine uses for the profile."""
    if kind_of(profile).local_processes:  # the gateway listens on this machine
        return f"http://127.0.0.1:{profile.data['local']['ports']['llm-gateway']}/v1"
    return CLUSTER_DEFAULT_URL


def continue_config(profile: Profile, url: str, key_env: str = DEFAULT_KEY_ENV) -> dict[str, Any]:
    """Continue's config: chat, edit and apply plus agent mode (tool use) on ``coder-chat``;
    autocomplete on ``coder-fim``.

    ``coder-fim`` hides which model serves it, so Continue cannot pick a FIM
    template by model name: the template is written out from the profile's FIM
    format, and autocomplete uses the plain ``/v1/completions`` endpoint.
    """
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key_env):
        raise IdeConfigError(f"--key-env {key_env!r} is not an environment variable name; use e.g. {DEFAULT_KEY_ENV}")
    key = "${{ secrets.%s }}" % key_env
    fim = format_for(profile)
    common = {"provider": "openai", "apiBase": url, "apiKey": key}
    return {
        "name": f"inferbook ({profile.name})",
        "version": "1.0.0",
        "schema": "v1",
        "models": [
            {"name": f"inferbook {CHAT_ALIAS}", "model": CHAT_ALIAS, **common,
             "roles": ["chat", "edit", "apply"], "capabilities": ["tool_use"]},
            {"name": f"inferbook {FIM_ALIAS}", "model": FIM_ALIAS, **common, "roles": ["autocomplete"],
             "useLegacyCompletionsEndpoint": True,
             "promptTemplates": {"autocomplete": fim.prompt("{{{prefix}}}", "{{{suffix}}}")}},
        ],
    }


HEADER = """\
# Continue configuration for the inferbook gateway of profile {profile}, written by `inferbook ide-config`.
# The key is not in this file: Continue fills ${{{{ secrets.{key_env} }}}} from the variable {key_env}
# in ~/.continue/.env or the workspace's .continue/.env (keep that file out of git, mode 0600).
# Autocomplete FIM format: {fim}.
"""


def render(profile: Profile, client: str = "continue", url: str | None = None, key_env: str = DEFAULT_KEY_ENV) -> str:
    """The configuration file's text for ``client``."""
    if client not in CLIENTS:
        raise IdeConfigError(f"unknown client {client!r}; supported: {', '.join(CLIENTS)}")
    config = continue_config(profile, url or gateway_url(profile), key_env)
    fim = format_for(profile)
    header = HEADER.format(profile=profile.name, key_env=key_env,
                           fim=(f"{fim.name} tokens" if fim.native
                                else "none (the model has no FIM tokens; prefix only)"))
    return header + yaml.safe_dump(config, sort_keys=False, width=120)


def write(text: str, path: Path, force: bool = False) -> Path:
    """Write the file; an existing, different file is kept unless ``force`` (a user's own config is not lost)."""
    if path.exists() and path.read_text() != text and not force:
        raise IdeConfigError(f"{path} exists and differs from the configuration to write; keep it, write elsewhere "
                             "with --output PATH, or replace it with --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
