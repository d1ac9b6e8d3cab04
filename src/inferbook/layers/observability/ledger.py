"""LiteLLM's ledger reached as the read-only role (:class:`Ledger`): what the spend dashboard's SQL panels run on.

Apart from :mod:`.spend` (the panels and the ADR's check) so that each target's part of the layer can open it
(:meth:`.local.LocalPrometheus.ledger`, :meth:`.cluster.ClusterObservability.ledger`) without importing the spend
module, which asks the target for that part.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from ...endpoints import Held
from ...errors import InferbookError
from ..llm_gateway.postgres import pg_tool
from .manifests import LEDGER_DATASOURCE_UID

#: The port of CloudNativePG's Services (and the local Postgres' default).
POSTGRES_PORT = 5432


class LedgerError(InferbookError):
    """The ledger refused a query, or could not be reached."""


@dataclass
class Ledger(Held):
    """LiteLLM's Postgres ledger, reached as the read-only role; ``closer`` ends the port-forward on a cluster."""

    host: str
    port: int
    database: str
    user: str
    password: Callable[[], str] = field(repr=False)
    where: str
    service: str = ""
    sslmode: str = "prefer"
    closer: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def _psql(self, sql: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """``psql`` with the statement on standard input and the password in its environment, never on a command
        line; ``--csv`` so NULL, text and numbers come back as they are (float8 at full precision)."""
        env = {**os.environ, "PGPASSWORD": self.password(), "PGSSLMODE": self.sslmode, "PGCONNECT_TIMEOUT": "10",
               "PGOPTIONS": "-c statement_timeout=30000", "PGAPPNAME": "inferbook-spend-dashboard"}
        argv = [pg_tool("psql"), "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port),
                "-U", self.user, "-d", self.database, "-f", "-"]
        try:
            return subprocess.run(argv, input=sql, capture_output=True, text=True, env=env, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise LedgerError(f"the ledger at {self.host}:{self.port} did not answer within {timeout:.0f} s") from None

    def query(self, sql: str, timeout: float = 60) -> pd.DataFrame:
        """The rows of ``sql`` (one statement), as a frame with the statement's column names."""
        proc = self._psql(sql, timeout)
        if proc.returncode != 0:
            raise LedgerError(f"the ledger ({self.user}@{self.host}:{self.port}/{self.database}) refused the query: "
                              f"{_psql_error(proc.stderr)}")
        if not proc.stdout.strip():
            return pd.DataFrame()
        return pd.read_csv(io.StringIO(proc.stdout), keep_default_na=False, na_values=[""])

    def refusal(self, sql: str) -> str:
        """Why the ledger refused ``sql`` as this role ('' when it ran): for proving the role cannot write."""
        proc = self._psql(sql, 60)
        return "" if proc.returncode == 0 else _psql_error(proc.stderr)

    def table(self) -> pd.DataFrame:
        """The connection as the chapter shows it (never the password)."""
        rows = [("target", self.where), ("database", f"{self.host}:{self.port}/{self.database}"),
                ("role", self.user), ("datasource uid", LEDGER_DATASOURCE_UID)]
        if self.service:
            rows.append(("service", self.service))
        return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def _psql_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.split("ERROR:", 1)[1].strip() for line in lines if "ERROR:" in line]
    return (errors[0] if errors else " ".join(lines[-2:]) or "no message")[:300]
