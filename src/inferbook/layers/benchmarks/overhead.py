"""What the gateway adds to a request: the same call straight to the upstream and through LiteLLM.

:func:`against_stub` isolates the proxy (the live comparison, :func:`.harness.measure`, mixes its work with the
contention of a small machine): a LiteLLM of its own (own ports, own
ledger, the shipped configuration plus one :class:`Setting` at a time) in front of a stub upstream that
answers in about a millisecond (:mod:`.stub_upstream`), with a tenant key so the key's budget and rate
checks and the spend booking all run. Per setting it reports LiteLLM's own figure (the
``x-litellm-overhead-duration-ms`` header: the time it spent outside the upstream call), the wall-clock
it adds (gateway minus direct, both timed by the same client), and the closed-loop throughput through
it against the stub directly.

Calls alternate between the two paths so that a slow moment of a shared machine hits both; the load
average is recorded beside every figure, and a setting's repeats are reported as their median.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from ...features import resolve
from ...paths import Layout
from ...percentiles import percentile
from ...profile import Profile
from ...say import Say
from ..llm_gateway.admin import Admin
from ..llm_gateway.local import LocalGateway
from .harness import (
    Call,
    Client,
    Upstream,
    cpu_ms_per_call,
    latency_row,
    load_average,
    median_of,
    sequential,
    summary,
    throughput_row,
    throughputs,
    tree_cpu_seconds,
)
from .stub_upstream import StubProcess

#: The columns of the overhead table, in order (ms, requests/s, ratio).
COLUMNS = ["header_p50", "header_p90", "wall_added_p50", "wall_added_p90", "gateway_p50", "direct_p50",
           "gateway_cpu_ms_per_call", "ledger_cpu_ms_per_call", "direct_rps", "gateway_rps", "throughput_ratio",
           "header_p50_vs_base", "wall_added_p50_vs_base", "gateway_cpu_ms_per_call_vs_base", "gateway_rps_vs_base",
           "errors", "repeats", "load_1m"]


def combine(setting: str, repeats: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One setting's row: the median of each figure over its repeats, the load average's median beside them."""
    keys = {k for row in repeats for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    row: dict[str, Any] = {"setting": setting, **{k: median_of(repeats, k) for k in sorted(keys)}}
    row["repeats"] = len(repeats)
    row["errors"] = sum(r.get("errors", 0) + r.get("throughput_errors", 0) for r in repeats)
    return row


def table(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """The overhead table: a row per setting, figures rounded for reading."""
    frame = pd.DataFrame(rows).set_index("setting")
    frame = frame.reindex(columns=[c for c in COLUMNS if c in frame.columns])
    ratios = ("throughput_ratio", "gateway_rps_vs_base", "load_1m")
    return frame.round({c: 2 if c in ratios else 1 for c in frame.columns})


# --------------------------------------------------------------------------- settings under test

@dataclass(frozen=True)
class Setting:
    """A change to the shipped gateway configuration, tried on its own against the stub."""

    name: str
    why: str = ""
    general_settings: Mapping[str, Any] = field(default_factory=dict)
    litellm_settings: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    drop_callbacks: tuple[str, ...] = ()
    #: Top-level sections of the config left out (e.g. ``guardrails``: what the guardrails cost).
    drop_config: tuple[str, ...] = ()

    def apply_config(self, config: dict[str, Any]) -> dict[str, Any]:
        config = copy.deepcopy(config)
        for section in self.drop_config:
            config.pop(section, None)
        config.setdefault("general_settings", {}).update(self.general_settings)
        litellm = config.setdefault("litellm_settings", {})
        litellm.update(self.litellm_settings)
        if self.drop_callbacks:
            litellm["callbacks"] = [c for c in litellm.get("callbacks", []) if c not in self.drop_callbacks]
        return config

    def apply_command(self, argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        flags = {a.split("=", 1)[0] for a in self.args}
        argv = [a for a in argv if a.split("=", 1)[0] not in flags] + list(self.args)
        return argv, {**env, **self.env}


SHIPPED = Setting("shipped", "the configuration in manifests/llm-gateway/litellm, as the book runs it")

#: LiteLLM's production guidance, one item each, as far as it fits our tiers (spend per key, budgets and
#: rate limits must keep working; the prometheus callback is measured but kept: observability needs it).
CANDIDATES: tuple[Setting, ...] = (
    Setting("shipped again (control)", "the shipped configuration as a candidate: the difference a setting must "
            "beat, since the candidate is a freshly started proxy beside a baseline that has run longer"),
    Setting("proxy_batch_write_at: 60", "spend updates written to Postgres every 60 s instead of 10 s",
            general_settings={"proxy_batch_write_at": 60}),
    Setting("LITELLM_LOG=ERROR", "only errors in the proxy's log; uvicorn's access log goes with it",
            env={"LITELLM_LOG": "ERROR"}),
    Setting("json_logs", "structured log lines", litellm_settings={"json_logs": True}),
    Setting("disable_error_logs", "failed calls not written to the ledger's error table",
            general_settings={"disable_error_logs": True}),
    Setting("granian", "the proxy served by Granian (a Rust ASGI server, installed with litellm[proxy]) instead of "
            "uvicorn's pure-Python HTTP/1.1 parser", args=("--run_granian",)),
    Setting("disable_end_user_cost_tracking", "no per-end-user spend (we book per key and team)",
            litellm_settings={"disable_end_user_cost_tracking": True}),
    Setting("user_api_key_cache_ttl: 300", "a validated key stays cached 300 s instead of 60 s",
            general_settings={"user_api_key_cache_ttl": 300}),
    Setting("database_connection_pool_limit: 5", "a smaller pool per worker",
            general_settings={"database_connection_pool_limit": 5}),
    Setting("num_workers: 2", "two uvicorn workers (one per core)", args=("--num_workers=2",)),
    Setting("NO_DOCS", "no OpenAPI docs routes", env={"NO_DOCS": "True"}),
    Setting("without prometheus (cost only)", "what the metrics callback costs; kept: observability needs it",
            drop_callbacks=("prometheus",)),
    Setting("disable_spend_logs (cost only)", "what the per-request spend rows cost; kept: the dashboard needs them",
            general_settings={"disable_spend_logs": True}),
)


class TunedGateway(LocalGateway):
    """The local gateway with one :class:`Setting` applied to its rendered config and command line."""

    def __init__(self, profile: Profile, layout: Layout, setting: Setting = SHIPPED, **kwargs: Any) -> None:
        super().__init__(profile, layout, **kwargs)
        self.setting = setting

    def _config(self, objects: list[dict[str, Any]]) -> dict[str, Any]:
        return self.setting.apply_config(super()._config(objects))

    def _command(self, objects: list[dict[str, Any]], python: Path) -> tuple[list[str], dict[str, str]]:
        return self.setting.apply_command(*super()._command(objects, python))


# --------------------------------------------------------------------------- the stub-isolated measurement

@dataclass(frozen=True)
class Ports:
    """Where the measurement's own servers listen: never the profile's own stack. ``second`` is the candidate's."""

    stub: int = 8390
    gateway: int = 4300
    postgres: int = 5630
    second_gateway: int = 4301
    second_postgres: int = 5631


def stub_profile(profile: Profile, ports: Ports = Ports(), second: bool = False) -> Profile:
    """``profile`` renamed ``<name>-overhead`` (``-overhead-b`` if ``second``) with its own ports, hence its own
    ledger, secrets and supervisor.

    The serving port is the stub's: the gateway's config points every alias at the profile's local serving
    URL, which is then the stub. The stub is a double of vLLM, so a coder (``models.coder``, served by
    llama.cpp through its own provider) is left out: every alias is vLLM's, as the measurements so far were.
    The routing layer is left out too: with it, every alias would go to the routing front, not to the stub.
    """
    data = copy.deepcopy(profile.data)
    data["models"].pop("coder", None)
    data["features"]["routing"] = False
    data["local"]["ports"].update({"serving": ports.stub,
                                   "llm-gateway": ports.second_gateway if second else ports.gateway,
                                   "postgres": ports.second_postgres if second else ports.postgres})
    base = profile.name.split("-overhead")[0]
    return replace(profile, name=f"{base}-overhead{'-b' if second else ''}", data=data,
                   features=resolve(data["features"]))


def tenant_path(gateway: LocalGateway, name: str, alias: str = "coder-chat") -> Upstream:
    """A path through ``gateway`` with a fresh tenant key on ``alias``: the key's checks and spend booking run."""
    key = Admin(gateway.base, gateway.master_key()).create_key(f"overhead-{name}-{time.time_ns()}", [alias],
                                                               max_budget=100)
    return Upstream(gateway.url, key, alias)


def measure_gateways(gateways: Mapping[str, LocalGateway], stub_url: str, alias: str = "coder-chat",
                     requests: int = 200, warmup: int = 20, concurrency: int = 8, seconds: float = 10,
                     say: Say = print) -> dict[str, dict[str, Any]]:
    """One repeat: the stub directly and each running gateway in front of it, a row per gateway.

    Sequential calls take turns across all paths, so the gateways are compared under the same moment of
    the machine; so do the closed-loop throughput runs, in slices (:func:`throughputs`).
    """
    paths = {"direct": Upstream(stub_url, "unused", "stub")}
    for name, gateway in gateways.items():
        paths[name] = tenant_path(gateway, name, alias)
    load_before = load_average()
    pids = {name: (g.process.pid(), g.postgres.process.pid()) for name, g in gateways.items()}
    before = {name: tuple(tree_cpu_seconds(pid) for pid in pair) for name, pair in pids.items()}
    calls = sequential(paths, requests, warmup)
    rows = {name: latency_row(calls, name) for name in gateways}
    for name, pair in pids.items():  # over warm-up and measured calls alike: background work is the calls' too
        after = tuple(tree_cpu_seconds(pid) for pid in pair)
        rows[name]["gateway_cpu_ms_per_call"] = cpu_ms_per_call(before[name][0], after[0], warmup + requests)
        rows[name]["ledger_cpu_ms_per_call"] = cpu_ms_per_call(before[name][1], after[1], warmup + requests)
    if concurrency:
        rates = throughputs(paths, concurrency, seconds)
        for name in gateways:
            rows[name].update(throughput_row(rates["direct"], rates[name]))
    load = statistics.mean([load_before, load_average()])
    for name, row in rows.items():
        row["load_1m"] = load
        say(f"overhead: {name}: header p50 {_ms(row['header_p50'])}, wall added p50 {_ms(row['wall_added_p50'])}, "
            f"{_ms(row['gateway_cpu_ms_per_call'])} CPU per call, throughput ratio {row.get('throughput_ratio')}")
    return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


#: Figures compared pairwise with the baseline measured in the same repeat (``<figure>_vs_base``).
PAIRED = ("header_p50", "wall_added_p50", "gateway_cpu_ms_per_call", "gateway_rps")


def paired(candidate: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, float | None]:
    """The candidate's figures minus the baseline's of the same repeat (a ratio for requests per second)."""
    out: dict[str, float | None] = {}
    for key in PAIRED:
        c, b = candidate.get(key), baseline.get(key)
        if c is None or b is None:
            out[f"{key}_vs_base"] = None
        elif key == "gateway_rps":
            out[f"{key}_vs_base"] = c / b if b else None
        else:
            out[f"{key}_vs_base"] = c - b
    return out


def against_stub(profile: Profile, layout: Layout, settings: Iterable[Setting] = (SHIPPED,), repeats: int = 3,
                 requests: int = 200, warmup: int = 20, concurrency: int = 8, seconds: float = 10,
                 ports: Ports = Ports(), stub_delay_ms: float = 0.0, stub_token_interval_ms: float = 0.0,
                 cache_dir: Path | None = None, say: Say = print, keep_running: bool = False,
                 record: Callable[[str, dict[str, Any]], None] | None = None) -> pd.DataFrame:
    """The overhead table: the proxy's cost in front of a ~1 ms stub upstream, a row per setting.

    The first setting is the baseline; it runs throughout on ``ports.gateway``. Each other setting runs
    beside it on ``ports.second_gateway`` and the calls take turns between the stub, the baseline and the
    candidate, so a busy spell of a shared machine hits both alike: its ``*_vs_base`` columns are the paired
    differences (candidate minus baseline in the same repeat, a ratio for requests per second), the figures
    to read a setting's effect from. Every figure is the median over ``repeats``; repeats go round the
    settings. The gateways are of profiles derived from ``profile`` (:func:`stub_profile`): the profile's
    own stack is never touched. Everything started here is stopped at the end unless ``keep_running``.
    ``record(setting, row)`` receives each repeat's row as it is measured (to keep raw figures).
    """
    settings = list(settings)
    baseline, others = settings[0], settings[1:]
    rows: dict[str, list[dict[str, Any]]] = {s.name: [] for s in settings}
    deltas: dict[str, list[dict[str, Any]]] = {s.name: [] for s in others}
    base = TunedGateway(stub_profile(profile, ports), layout, baseline, cache_dir=cache_dir, say=say)
    candidate: TunedGateway | None = None
    measure = {"requests": requests, "warmup": warmup, "concurrency": concurrency, "seconds": seconds, "say": say}
    with StubProcess(ports.stub, delay_ms=stub_delay_ms, token_interval_ms=stub_token_interval_ms) as stub:
        try:
            base.start()
            for round_ in range(repeats):
                say(f"overhead: repeat {round_ + 1} of {repeats}")
                if not others:
                    rows[baseline.name].append(measure_gateways({"baseline": base}, stub.url, **measure)["baseline"])
                    if record:
                        record(baseline.name, rows[baseline.name][-1])
                for setting in others:
                    candidate = TunedGateway(stub_profile(profile, ports, second=True), layout, setting,
                                             cache_dir=cache_dir, say=say)
                    candidate.start()
                    both = measure_gateways({"baseline": base, "candidate": candidate}, stub.url, **measure)
                    rows[baseline.name].append(both["baseline"])
                    rows[setting.name].append(both["candidate"])
                    deltas[setting.name].append(paired(both["candidate"], both["baseline"]))
                    if record:
                        record(baseline.name, both["baseline"])
                        record(setting.name, {**both["candidate"], **deltas[setting.name][-1]})
        finally:
            if not keep_running:
                for gateway in (candidate, base):
                    if gateway is not None:
                        gateway.stop()
    combined = [combine(baseline.name, rows[baseline.name])]
    for setting in others:
        combined.append({**combine(setting.name, rows[setting.name]),
                         **{k: median_of(deltas[setting.name], k) for k in deltas[setting.name][0]}})
    return table(combined)


# --------------------------------------------------------------------------- what the guardrails add

#: The overhead table's figures: the client's wall-clock (what a user waits), and LiteLLM's overhead header, which
#: does not count the pre-call guardrails (measured: it is no higher with them), so it cannot show their cost.
GUARDRAIL_WALL, GUARDRAIL_HEADER = "client wall-clock (ms)", "LiteLLM overhead header (ms)"
#: The overhead harness's candidate: the shipped gateway without its guardrails (the baseline keeps them).
WITHOUT_GUARDRAILS = Setting("without guardrails", "the shipped configuration minus its guardrails section",
                             drop_config=("guardrails",))


def guardrails_cost(profile: Profile, layout: Layout, requests: int = 60, warmup: int = 10,
                    ports: Ports | None = None, say: Say = print) -> pd.DataFrame:
    """The latency the guardrails add (features.guardrails, ADR-0034; shown in the security chapter).

    Two gateways of their own in front of this harness's ~1 ms stub upstream: the shipped config (guardrails on,
    calling this profile's Presidio) and the same without its guardrails, one-token calls taking turns between
    them. The client's wall-clock and LiteLLM's overhead header, p50 and p95, and the differences. The profile's
    own stack is untouched; both gateways are stopped at the end.
    """
    ports = ports or Ports()
    calls: dict[str, list[Any]] = {}
    with StubProcess(ports.stub):
        on = TunedGateway(stub_profile(profile, ports), layout, SHIPPED, say=say)
        off = TunedGateway(stub_profile(profile, ports, second=True), layout, WITHOUT_GUARDRAILS, say=say)
        try:
            on.start()
            off.start()
            paths = {"guardrails on": tenant_path(on, "guardrails-on"), "guardrails off": tenant_path(off, "off")}
            say(f"guardrails: {requests} one-token calls per gateway, taking turns (after {warmup} warm-up each)")
            calls = sequential(paths, requests, warmup)
        finally:
            for gateway in (off, on):
                gateway.stop()
    rows = []
    for figure, pick in ((GUARDRAIL_WALL, lambda c: c.wall_ms), (GUARDRAIL_HEADER, lambda c: c.header_ms)):
        row: dict[str, Any] = {"figure": figure}
        for q in (50, 95):
            found = {name: percentile([pick(c) for c in path if c.ok and pick(c) is not None], q)
                     for name, path in calls.items()}
            on, off = found["guardrails on"], found["guardrails off"]
            row[f"on p{q}"] = None if on is None else round(on, 1)
            row[f"off p{q}"] = None if off is None else round(off, 1)
            row[f"added p{q}"] = None if on is None or off is None else round(on - off, 1)
        rows.append(row)
    result = pd.DataFrame(rows)
    result.attrs.update(errors=sum(not c.ok for path in calls.values() for c in path), requests=requests)
    return result



# --------------------------------------------------------------------------- where the time goes

@dataclass(frozen=True)
class ProxyProfile:
    """py-spy's view of the proxy in front of the stub: stages, hottest functions, CPU and header per call."""

    stages: pd.DataFrame
    hottest: pd.DataFrame
    calls: int
    cpu_ms_per_call: float | None
    header_p50: float | None


def settings_named(names: str) -> list[Setting]:
    """``shipped``, ``all`` or a comma-separated list of setting names (the shipped one always first)."""
    known = {s.name: s for s in (SHIPPED, *CANDIDATES)}
    if names.strip() == "all":
        return [SHIPPED, *CANDIDATES]
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(map(repr, unknown))}; choose from: "
                         + "; ".join(known) + " (or 'all')")
    return [SHIPPED, *(known[n] for n in chosen if n != SHIPPED.name)]


# --------------------------------------------------------------------------- the chapter's step

#: Issue #12's goal for the proxy alone: median added latency, LiteLLM's header and stub-isolated wall-clock.
GOAL_MS = 5.0


@dataclass(frozen=True)
class ProxyAlone:
    """The shipped proxy in front of the stub: latency row, and py-spy's stages (None with the reason if refused)."""

    row: dict[str, Any]
    profile: ProxyProfile | None
    refused: str | None = None

    def goals(self, goal_ms: float = GOAL_MS) -> pd.DataFrame:
        """The two medians against the goal, with the p90 beside them and a verdict per figure."""
        rows = []
        for label, key in (("LiteLLM's header (x-litellm-overhead-duration-ms)", "header"),
                           ("wall-clock added (gateway minus stub, same client)", "wall_added")):
            p50, p90 = self.row.get(f"{key}_p50"), self.row.get(f"{key}_p90")
            rows.append({"figure": label, "goal (median)": f"<= {goal_ms:g} ms", "median (ms)": _round(p50),
                         "p90 (ms)": _round(p90),
                         "verdict": "-" if p50 is None else ("met" if p50 <= goal_ms else "not met")})
        cpu = self.row.get("gateway_cpu_ms_per_call")
        rows.append({"figure": "proxy CPU per call (its process tree)", "goal (median)": "-",
                     "median (ms)": _round(cpu), "p90 (ms)": "-", "verdict": "-"})
        return pd.DataFrame(rows).set_index("figure")

    def plot(self) -> Any:
        """Where the proxy's CPU goes per call, by stage (a bar per stage, ms of CPU)."""
        import matplotlib.pyplot as plt

        if self.profile is None or "cpu_ms_per_call" not in self.profile.stages:
            raise ValueError(f"no py-spy profile to draw: {self.refused or 'the CPU per call was not measured'}")
        stages = self.profile.stages["cpu_ms_per_call"].iloc[::-1]
        fig, ax = plt.subplots(figsize=(8, 3.6))
        ax.barh(stages.index, stages.values, color="tab:blue")
        ax.axvline(GOAL_MS, color="grey", linestyle="--", linewidth=1,
                   label=f"the goal for the whole call ({GOAL_MS:g} ms)")
        ax.set_xlabel("CPU ms per call")
        ax.set_title(f"Where the LiteLLM proxy's CPU goes: {self.profile.cpu_ms_per_call:.1f} ms per one-token call")
        ax.legend(loc="upper right")
        fig.tight_layout()
        return fig


def _round(value: float | None) -> float | str:
    return "-" if value is None else round(value, 1)


def proxy_alone(profile: Profile, layout: Layout, requests: int = 200, warmup: int = 20, py_spy_seconds: float = 20,
                ports: Ports = Ports(), cache_dir: Path | None = None, say: Say = print) -> ProxyAlone:
    """The chapter's measurement: the shipped proxy alone in front of the stub, then sampled by py-spy.

    One gateway (own ports, own ledger, the shipped configuration), ``requests`` one-token calls taking turns
    with the stub directly, then ``py_spy_seconds`` of back-to-back calls under py-spy. A refused py-spy
    (no ptrace: see :mod:`.proxy_profile`) leaves the latency figures and says why there is no breakdown.
    """
    from . import proxy_profile

    gateway = TunedGateway(stub_profile(profile, ports), layout, SHIPPED, cache_dir=cache_dir, say=say)
    out = layout.run_dir(profile.name) / "overhead" / "py-spy.txt"
    with StubProcess(ports.stub) as stub:
        try:
            gateway.start()
            row = measure_gateways({"shipped": gateway}, stub.url, requests=requests, warmup=warmup, concurrency=0,
                                   say=say)["shipped"]
            client = Client(tenant_path(gateway, "profile"))
            pid = gateway.process.pid()
            calls: list[Call] = []

            def work() -> None:
                deadline = time.perf_counter() + py_spy_seconds
                while time.perf_counter() < deadline:
                    calls.append(client.call())

            try:
                if pid is None:
                    raise proxy_profile.ProfileRefused("the proxy has no running process to sample")
                before = tree_cpu_seconds(pid)
                say(f"overhead: sampling the proxy with py-spy for {py_spy_seconds:.0f} s ...")
                samples = proxy_profile.record_during(pid, out, py_spy_seconds, work)
                cpu = cpu_ms_per_call(before, tree_cpu_seconds(pid), len(calls))
                header = summary(c.header_ms for c in calls if c.ok and c.header_ms is not None)["p50"]
                found = ProxyProfile(proxy_profile.breakdown(samples, cpu), proxy_profile.hottest(samples),
                                     len(calls), cpu, header)
                return ProxyAlone(row, found)
            except proxy_profile.ProfileRefused as exc:
                say(f"overhead: no py-spy profile: {exc}")
                return ProxyAlone(row, None, str(exc))
            finally:
                client.close()
        finally:
            gateway.stop()
