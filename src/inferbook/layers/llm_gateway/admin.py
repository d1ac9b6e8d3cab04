"""Tenant administration through the LiteLLM proxy's admin API: teams and virtual keys.

What a platform operator does for a tenant: a team, and keys scoped to the
gateway aliases it may call, each with a budget, a budget period and rate
limits. The master key authenticates these calls and never appears in what
this module returns; a new virtual key is returned once, to its caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...errors import InferbookError
from ...jsonapi import call_json


class AdminError(InferbookError):
    """The proxy refused an admin call."""


@dataclass(frozen=True)
class Admin:
    """The admin API of one proxy (``base`` without ``/v1``)."""

    base: str
    master_key: str

    def __repr__(self) -> str:  # the master key stays out of reprs and tracebacks
        return f"Admin({self.base!r})"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = call_json(method, f"{self.base}{path}", self.master_key, body)
        if status >= 400:
            detail = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise AdminError(f"{method} {path} was refused with HTTP {status}: {str(detail)[:400]}")
        return answer

    def team(self, alias: str, mcp_servers: list[str] | None = None) -> str:
        """The id of the team ``alias``, created if absent (idempotent).

        ``mcp_servers``: the MCP servers the team's keys may be granted. LiteLLM refuses a key a server its team
        does not allow, so the team carries the union of its keys' grants (the ceiling; each key its own).
        """
        listed = self._call("GET", "/team/list")
        team_id = next((team["team_id"] for team in (listed if isinstance(listed, list) else listed.get("teams", []))
                        if team.get("team_alias") == alias), None)
        if team_id is None:
            team_id = self._call("POST", "/team/new", {"team_alias": alias})["team_id"]
        if mcp_servers:
            self._call("POST", "/team/update", {"team_id": team_id,
                                                "object_permission": {"mcp_servers": list(mcp_servers)}})
        return str(team_id)

    def create_key(self, alias: str, models: list[str], max_budget: float | None = None,
                   budget_duration: str | None = None, rpm: int | None = None, tpm: int | None = None,
                   team_id: str | None = None, mcp_servers: list[str] | None = None) -> str:
        """A new virtual key (returned once; the proxy keeps only its hash).

        ``mcp_servers`` names the MCP servers (of the config's ``mcp_servers``) whose tools the key may list and
        call, as LiteLLM keeps it: the key's ``object_permission.mcp_servers``. Without it the key reaches none.
        """
        body: dict[str, Any] = {"key_alias": alias, "models": models}
        for field, value in (("max_budget", max_budget), ("budget_duration", budget_duration),
                             ("rpm_limit", rpm), ("tpm_limit", tpm), ("team_id", team_id)):
            if value is not None:
                body[field] = value
        if mcp_servers is not None:
            body["object_permission"] = {"mcp_servers": list(mcp_servers)}
        return self._call("POST", "/key/generate", body)["key"]

    def keys(self) -> list[dict[str, Any]]:
        """Every key's settings and spend, without the keys themselves."""
        listed = self._call("GET", "/key/list?return_full_object=true&size=100")
        rows = []
        for key in listed.get("keys", []):
            rows.append({
                "alias": key.get("key_alias"), "team": key.get("team_id"), "models": ", ".join(key.get("models") or []),
                "max_budget_usd": key.get("max_budget"), "budget_duration": key.get("budget_duration"),
                "spend_usd": key.get("spend"), "rpm": key.get("rpm_limit"), "tpm": key.get("tpm_limit"),
            })
        return rows

    def table(self) -> pd.DataFrame:
        rows = self.keys()
        columns = ["alias", "team", "models", "max_budget_usd", "budget_duration", "spend_usd", "rpm", "tpm"]
        return pd.DataFrame(rows, columns=columns).set_index("alias").astype(object).fillna("-")  # unset: "-"

    def revoke(self, alias: str) -> None:
        """Delete the key named ``alias``; later calls with it are refused (401)."""
        if alias not in {k["alias"] for k in self.keys()}:
            raise AdminError(f"no key with alias '{alias}'; `inferbook keys list` shows the aliases")
        self._call("POST", "/key/delete", {"key_aliases": [alias]})
