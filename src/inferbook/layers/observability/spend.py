"""The spend dashboard, run: every SQL panel against LiteLLM's ledger, as the read-only role Grafana reads it as.

ADR-0015: Grafana reads LiteLLM's Postgres tables directly, so the spend dashboard shows the ledger budgets are
enforced against. Its panels are SQL on the datasource ``litellm-ledger`` (the dashboard JSON in the manifests);
here each runs as Grafana would run it, its time macros given a concrete window (:func:`grafana_sql`), through
``psql`` as the ledger's read-only role ``ledger_reader`` (the Cluster's managed role; locally the gateway layer
keeps the same role in its Postgres). A panel that returns no rows fails, as an empty PromQL panel does.

LiteLLM writes spend to Postgres in batches (``proxy_batch_write_at``, 10 s by default, plus up to 5 s of
jitter): :func:`wait_for_ledger` polls the ledger until a load's requests are booked. :func:`checks` then holds
the spend panel against LiteLLM's own figure for each of the load's keys (its admin API), to the micro-dollar.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from ... import targets, waiting
from ...errors import InferbookError
from ...paths import Layout
from ...profile import Profile
from ...say import Say
from ..llm_gateway import manifests as gateway_manifests
from .declaration import DECLARATION
from .ledger import Ledger, LedgerError
from .manifests import LEDGER_DATASOURCE_UID

if TYPE_CHECKING:  # the chapter's load and the gateway's admin API: only their shapes are read here
    from ..llm_gateway.admin import Admin
    from .load import Load

#: The spend dashboard, and the panels the ADR's check reads.
DASHBOARD = "inferbook / LiteLLM spend"
PER_KEY_PANEL = "Spend per key"
OVER_TIME_PANEL = "Spend over time per key"
#: "To the micro-dollar": two spends agree when they differ by less than half a micro-dollar.
MICRO_USD = 5e-7
#: LiteLLM's default interval between its batched writes to the ledger, and the jitter it adds (proxy_server.py).
BATCH_WRITE_S, BATCH_JITTER_S = 10, 5


class MacroError(InferbookError):
    """A panel's SQL uses a Grafana macro or variable that this runner does not give a value."""


# --------------------------------------------------------------------------- Grafana's macros


_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def interval_seconds(text: str) -> float:
    """A Grafana interval (``10s``, ``'5m'``, ``1h``) in seconds."""
    found = _INTERVAL.match(text.strip().strip("'\""))
    if not found:
        raise MacroError(f"'{text}' is not a Grafana interval (a number and ms, s, m, h, d or w)")
    return float(found[1]) * _UNIT_S[found[2]]


def _rfc3339(moment: float) -> str:
    """A unix time as Grafana writes it into SQL: RFC 3339 in UTC, fractional seconds without trailing zeros."""
    text = datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _arguments(sql: str, open_at: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose ``(`` is at ``open_at``, and the index after its ``)``."""
    depth, quote, args, start = 0, "", [], open_at + 1
    for i in range(open_at, len(sql)):
        ch = sql[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i].strip())
                return [a for a in args if a], i + 1
        elif ch == "," and depth == 1:
            args.append(sql[start:i].strip())
            start = i + 1
    raise MacroError(f"unbalanced parentheses after position {open_at} in: {sql[:200]}")


def grafana_sql(sql: str, start: float, end: float, interval: str) -> str:
    """``sql`` as Grafana's PostgreSQL datasource sends it for the time range ``start``..``end`` (unix seconds)
    and the panel interval ``interval``: ``$__interval``, ``$__interval_ms``, ``$__timeFilter(col)``,
    ``$__timeFrom()``, ``$__timeTo()``, ``$__timeGroup(col, interval)`` and ``$__timeGroupAlias(...)`` expanded as
    Grafana expands them. Any other ``$`` name is refused: the spend dashboard has no variables, and a macro this
    runner does not know would otherwise reach Postgres as text."""
    seconds = interval_seconds(interval)
    text = sql.replace("$__interval_ms", str(int(seconds * 1000))).replace("$__interval", interval)
    call = re.compile(r"\$__(\w+)\s*\(")
    out, at = [], 0
    for found in call.finditer(text):
        if found.start() < at:
            continue
        args, after = _arguments(text, found.end() - 1)
        name = found[1]
        if name == "timeFilter" and len(args) == 1:
            expanded = f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
        elif name in ("timeFrom", "timeTo") and not args:
            expanded = f"'{_rfc3339(start if name == 'timeFrom' else end)}'"
        elif name in ("timeGroup", "timeGroupAlias") and len(args) >= 2:
            step = interval_seconds(args[1])
            step_text = f"{step:g}"
            expanded = f"floor(extract(epoch from {args[0]})/{step_text})*{step_text}"
            if name == "timeGroupAlias":
                expanded += ' AS "time"'
        else:
            raise MacroError(f"Grafana macro $__{name} with {len(args)} argument(s) is not one this runner expands "
                             "(timeFilter, timeFrom, timeTo, timeGroup, timeGroupAlias)")
        out.append(text[at:found.start()] + expanded)
        at = after
    text = "".join(out) + text[at:]
    left = re.findall(r"\$\{?\w+", text)
    if left:
        raise MacroError(f"the SQL uses {', '.join(sorted(set(left)))}, which this runner gives no value (the spend "
                         "dashboard has no variables)")
    return text


# --------------------------------------------------------------------------- the names SQL reads, and the schema's


_MODEL = re.compile(r"^model\s+(\w+)\s*\{(.*?)^\}", re.M | re.S)
_MAP = re.compile(r'@@?map\(\s*(?:name:\s*)?"([^"]+)"')
#: A table after FROM or JOIN (quoted: LiteLLM's mixed-case names must be), and its alias.
_TABLE_REF = re.compile(r'\b(?:FROM|JOIN)\s+"(\w+)"(?:\s+(?:AS\s+)?(?!ON\b|WHERE\b|LEFT\b|JOIN\b|GROUP\b)(\w+))?', re.I)
#: A column qualified by a table's alias: ``k.spend``, ``s."startTime"``.
_COLUMN_REF = re.compile(r'\b([A-Za-z_]\w*)\.(?:"(\w+)"|(\w+))')


def schema_columns(prisma: str) -> dict[str, set[str]]:
    """The tables of a Prisma schema and their columns, as Postgres names them: ``@@map`` and ``@map`` honoured,
    relation fields (whose type is another model) left out, since they are no column."""
    models = {m[1]: m[2] for m in _MODEL.finditer(prisma)}
    tables: dict[str, set[str]] = {}
    for name, body in models.items():
        columns = set()
        table = name
        for line in body.splitlines():
            line = line.split("//", 1)[0].strip()
            if line.startswith("@@"):
                mapped = _MAP.search(line)
                table = mapped[1] if mapped and line.startswith("@@map") else table
                continue
            parts = line.split()
            if len(parts) < 2 or parts[1].rstrip("?").removesuffix("[]") in models:
                continue
            mapped = _MAP.search(line)
            columns.add(mapped[1] if mapped else parts[0])
        tables[table] = columns
    return tables


def sql_names(sql: str) -> dict[str, set[str]]:
    """The tables a panel's SQL reads (after FROM or JOIN) and, per table, the columns it names through the
    table's alias. The spend dashboard's SQL qualifies every column, so this is every name it reads."""
    aliases: dict[str, str] = {}
    for found in _TABLE_REF.finditer(sql):
        aliases[found[2] or found[1]] = found[1]
    names: dict[str, set[str]] = {table: set() for table in aliases.values()}
    for found in _COLUMN_REF.finditer(sql):
        if found[1] in aliases:
            names[aliases[found[1]]].add(found[2] or found[3])
    return names


# --------------------------------------------------------------------------- the ledger, as the read-only role


def connect(profile: Profile, layout: Layout, say: Say = print) -> Ledger:
    """The ledger as the read-only role the rendered Cluster declares, on the profile's target.

    Locally: the gateway layer's Postgres on ``local.ports.postgres``, the role kept in line with the Cluster's
    ``spec.managed.roles`` first (as the operator would), its password from the local secret store. On a cluster:
    a port-forward to the Service the datasource reads (:func:`.manifests.ledger_service`), the password from the
    Secret the role's ExternalSecret writes.
    """
    objects = gateway_manifests.MANIFESTS.render(profile, layout)
    role = gateway_manifests.ledger_reader(objects)
    secret = role["passwordSecret"]["name"]
    cluster = gateway_manifests.find(objects, "Cluster", gateway_manifests.GATEWAY_DB_CLUSTER)
    database = cluster["spec"]["bootstrap"]["initdb"]["database"]
    part = targets.of(profile, layout, say).part(DECLARATION)
    return part.ledger(database, role, secret)


# --------------------------------------------------------------------------- the SQL panels, run


@dataclass(frozen=True)
class SqlQuery:
    """One SQL target of one panel: where it is, its SQL as written, the shape Grafana reads, the panel's unit."""

    dashboard: str
    panel: str
    ref: str
    sql: str
    format: str  # "table" or "time_series"
    unit: str


def queries(dashboards: dict[str, dict[str, Any]]) -> list[SqlQuery]:
    """Every SQL target on the ledger's datasource, in dashboard and panel order."""
    found = []
    for name, board in dashboards.items():
        for panel in board.get("panels") or []:
            unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit", "")
            for target in panel.get("targets") or []:
                source = target.get("datasource") or panel.get("datasource") or {}
                if target.get("rawSql") and source.get("uid") == LEDGER_DATASOURCE_UID:
                    found.append(SqlQuery(board.get("title", name), panel.get("title", "?"), target.get("refId", "?"),
                                          target["rawSql"], target.get("format", "table"), unit))
    return found


@dataclass
class SqlResult:
    """A query's outcome: the rows it returned (time series pivoted to one column per metric), or its error."""

    query: SqlQuery
    sql: str
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and not self.rows.empty

    @property
    def verdict(self) -> str:
        if self.error:
            return f"error: {self.error}"
        return f"{len(self.rows)} rows" if not self.rows.empty else "no rows"

    def frame(self) -> pd.DataFrame:
        """As Grafana draws it: a table as returned; a time series with time (UTC) down and a column per metric."""
        if self.query.format != "time_series" or self.rows.empty:
            return self.rows
        rows = self.rows.assign(time=pd.to_datetime(self.rows["time"].astype(float), unit="s", utc=True))
        if "metric" in rows.columns:
            return rows.pivot_table(index="time", columns="metric", values="value", aggfunc="sum").sort_index()
        return rows.set_index("time").sort_index()


def run(ledger: Ledger, all_queries: list[SqlQuery], start: float, end: float, interval: str) -> list[SqlResult]:
    """Each query over ``start``..``end`` (unix seconds); a refused query is a failed result, not an exception."""
    results = []
    for query in all_queries:
        try:
            text = grafana_sql(query.sql, start, end, interval)
        except MacroError as exc:
            results.append(SqlResult(query, query.sql, error=str(exc)))
            continue
        result = SqlResult(query, text)
        try:
            result.rows = ledger.query(text)
        except LedgerError as exc:
            result.error = str(exc)
        results.append(result)
    return results


def run_dashboard(ledger: Ledger, objects: list[dict[str, Any]], load: Load, until: float | None = None,
                  interval: str = "10s") -> list[SqlResult]:
    """Every SQL panel over the load's window (from a little before it) to ``until`` (now by default)."""
    from .manifests import dashboards as dashboards_of

    return run(ledger, queries(dashboards_of(objects)), load.started - 30, until or time.time(), interval)


def table(results: list[SqlResult]) -> pd.DataFrame:
    """One row per query: dashboard, panel, the SQL run, what came back, pass (as the PromQL panels' table)."""
    rows = [{"dashboard": r.query.dashboard, "panel": r.query.panel, "query": r.sql, "returned": r.verdict,
             "pass": r.ok} for r in results]
    return pd.DataFrame(rows, columns=["dashboard", "panel", "query", "returned", "pass"])


def panel(results: list[SqlResult], title: str) -> pd.DataFrame:
    """One panel's rows as Grafana's table shows them."""
    found = [r for r in results if r.query.panel == title]
    if not found:
        raise InferbookError(f"no SQL panel titled '{title}' (panels: {', '.join(r.query.panel for r in results)})")
    return found[0].frame()


def plot(results: list[SqlResult], dashboard: str = DASHBOARD, columns: int = 2) -> Any:
    """The dashboard's panels as one figure: a time series as lines per metric, a table as bars of its spend."""
    import matplotlib.pyplot as plt  # imported when drawing

    from .dashboards import UNITS

    shown = [r for r in results if r.query.dashboard == dashboard]
    rows = max(1, math.ceil(len(shown) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3 * rows), squeeze=False)
    for ax, result in zip(axes.flat, shown, strict=False):
        frame = result.frame()
        unit = UNITS.get(result.query.unit, "")
        ax.set_title(result.query.panel + (f" ({unit})" if unit and result.query.format == "time_series" else ""),
                     fontsize=10)
        ax.tick_params(labelsize=8)
        if frame.empty:
            ax.text(0.5, 0.5, "no rows" if not result.error else "error", ha="center", va="center",
                    transform=ax.transAxes)
        elif result.query.format == "time_series":
            for column in frame.columns:
                ax.plot(frame.index, frame[column], marker=".", label=str(column))
            ax.legend(fontsize=7, loc="best")
        else:
            spend = next((c for c in frame.columns if str(c).lower() == "spend"), None)
            if spend is None:
                ax.text(0.5, 0.5, "no spend column", ha="center", va="center", transform=ax.transAxes)
            else:
                labels = frame.iloc[:, 0].fillna("-").astype(str)
                ax.barh(labels, frame[spend].astype(float))
                ax.invert_yaxis()
                ax.set_xlabel("spend (USD)", fontsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    figure.suptitle(dashboard, fontsize=12)
    figure.tight_layout()
    plt.close(figure)
    return figure


# --------------------------------------------------------------------------- the ADR's check


def answered(load: Load) -> dict[str, int]:
    """Requests the gateway answered (and so booked) per key alias of the load."""
    tenants = load.tenants
    return {tenants.alias("load"): sum(c.ok for c in load.calls),
            tenants.alias("limited"): sum(code == 200 for code in load.limited)}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: Per key alias, what the ledger holds: the key's spend, its spend-log rows that are not failures, and their sum.
BOOKED_SQL = (
    'SELECT k.key_alias AS "key", k.spend AS "spend", '
    "COUNT(s.request_id) FILTER (WHERE s.status IS DISTINCT FROM 'failure') AS \"logged requests\", "
    'COALESCE(SUM(s.spend), 0) AS "logged spend" '
    'FROM "LiteLLM_VerificationToken" k LEFT JOIN "LiteLLM_SpendLogs" s ON s.api_key = k.token '
    "WHERE k.key_alias IN ({aliases}) GROUP BY k.key_alias, k.spend ORDER BY k.key_alias")


def booked(ledger: Ledger, aliases: list[str]) -> pd.DataFrame:
    """Per key alias, what the ledger holds (:data:`BOOKED_SQL`), indexed by alias."""
    frame = ledger.query(BOOKED_SQL.format(aliases=", ".join(_literal(a) for a in aliases)))
    return frame.set_index("key") if not frame.empty else frame


def batch_write_s(profile: Profile, layout: Layout) -> float:
    """LiteLLM's interval between batched ledger writes, from the profile's proxy config (its default otherwise)."""
    config = gateway_manifests.gateway_config(gateway_manifests.MANIFESTS.render(profile, layout))
    return float((config.get("general_settings") or {}).get("proxy_batch_write_at", BATCH_WRITE_S))


def wait_for_ledger(ledger: Ledger, load: Load, batch_s: float = BATCH_WRITE_S, say: Say = print,
                    timeout: float | None = None, poll: float = 1.0) -> pd.DataFrame:
    """Poll the ledger until every request the load's keys had answered is booked: as many spend-log rows as
    answered requests, and the key's spend equal to their sum. A readiness check on LiteLLM's batched write,
    not a sleep: it returns as soon as the rows are there, and fails naming what is missing at ``timeout``
    (three write intervals and their jitter, by default)."""
    want = answered(load)
    timeout = timeout or 3 * (batch_s + BATCH_JITTER_S) + 15

    def missing(frame: pd.DataFrame) -> list[str]:
        out = []
        for alias, n in want.items():
            if frame.empty or alias not in frame.index:
                out.append(f"{alias}: no key in the ledger")
                continue
            row = frame.loc[alias]
            if int(row["logged requests"]) < n or (n and not float(row["spend"]) > 0) or \
                    abs(float(row["spend"]) - float(row["logged spend"])) >= MICRO_USD:
                out.append(f"{alias}: {int(row['logged requests'])} of {n} requests logged, spend "
                           f"{float(row['spend']):.8f} vs logged {float(row['logged spend']):.8f} USD")
        return out

    last: list[pd.DataFrame] = []

    def booked_all() -> str:
        last[:] = [booked(ledger, list(want))]
        return "; ".join(missing(last[0]))

    elapsed = waiting.wait_for(
        booked_all, timeout=timeout, what="LiteLLM's batched write to the ledger",
        say=lambda line: say(f"spend: {line}"), interval=poll, error=LedgerError,
        message=lambda gaps: f"LiteLLM did not book the load's spend in its ledger within {timeout:.0f} s ({gaps}). "
                             "Fix: check the proxy's log for failed spend writes")
    say(f"spend: the ledger booked the load after {elapsed:.0f} s")
    return last[0]


def checks(ledger: Ledger, results: list[SqlResult], admin: Admin, load: Load) -> pd.DataFrame:
    """The spend dashboard's checks as rows (expected, observed, pass): the role is read-only, every SQL panel
    returns rows, and for each of the load's keys the spend panel equals LiteLLM's reported spend (ADR-0015)
    and the spend-over-time panel adds up to it."""
    rows: list[dict[str, Any]] = []

    def row(check: str, expected: str, observed: str, ok: bool) -> None:
        rows.append({"check": check, "expected": expected, "observed": observed, "pass": bool(ok)})

    member = ledger.query(f"SELECT pg_has_role(current_user, '{gateway_manifests.LEDGER_READER_GRANT}', 'member') "
                          'AS "member", current_user AS "role"')
    refused = ledger.refusal('UPDATE "LiteLLM_VerificationToken" SET spend = spend WHERE false')
    is_member = not member.empty and str(member.iloc[0]["member"]).lower() in ("t", "true")
    row("the dashboards read the ledger as a read-only role",
        f"{ledger.user} in {gateway_manifests.LEDGER_READER_GRANT}; a write refused",
        f"{member.iloc[0]['role'] if not member.empty else '?'} member: {is_member}; UPDATE: "
        f"{refused or 'accepted'}", is_member and "permission denied" in refused)
    failed = [r for r in results if not r.ok]
    row("every spend panel's SQL returns rows", f"{len(results)} panels with rows",
        f"{len(results) - len(failed)} with rows"
        + (f"; {'; '.join(f'{r.query.panel}: {r.verdict}' for r in failed)}" if failed else ""),
        bool(results) and not failed)

    reported = {k["alias"]: k["spend_usd"] for k in admin.keys()}
    per_key = _panel_frame(results, PER_KEY_PANEL)
    over_time = _panel_frame(results, OVER_TIME_PANEL)
    for alias, served in answered(load).items():
        litellm = reported.get(alias)
        shown = per_key.loc[per_key["key"] == alias, "spend"] if "key" in per_key.columns else pd.Series([], float)
        value = float(shown.iloc[0]) if len(shown) == 1 else math.nan
        row(f"spend panel = LiteLLM's spend ({alias})",
            f"{litellm:.8f} USD (LiteLLM admin API)" if litellm is not None else "a key LiteLLM reports",
            f"{value:.8f} USD ({PER_KEY_PANEL})" if not math.isnan(value) else f"{len(shown)} rows for the key",
            litellm is not None and (litellm > 0 or not served) and abs(value - float(litellm)) < MICRO_USD)
        summed = float(over_time[alias].sum()) if alias in over_time.columns else math.nan
        row(f"spend over time adds up to the key's spend ({alias})", f"{value:.8f} USD ({PER_KEY_PANEL})",
            f"{summed:.8f} USD (sum of {OVER_TIME_PANEL})" if not math.isnan(summed) else "no series for the key",
            abs(summed - value) < MICRO_USD)
    return pd.DataFrame(rows).set_index("check")


def _panel_frame(results: list[SqlResult], title: str) -> pd.DataFrame:
    found = [r for r in results if r.query.panel == title and r.ok]
    return found[0].frame() if found else pd.DataFrame()

