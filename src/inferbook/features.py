"""Feature groups (ADR-0031) and the resolver that turns a profile's booleans into what gets deployed.

A profile names the capability groups it wants; each group declares the groups
it needs. The resolver switches on what a wanted group needs (and says why),
and refuses a profile that switches a needed group off explicitly, because
silently overriding a human's ``false`` would deploy something they refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Feature:
    """A capability group: its name, what it provisions and what it needs."""

    name: str
    summary: str
    requires: tuple[str, ...] = ()


#: The catalogue, in deployment order (ADR-0027 stages the layers in this order).
CATALOGUE: tuple[Feature, ...] = (
    Feature("platform", "namespaces, CRDs, GPU stack choice, Kueue quota, External Secrets"),
    Feature("serving", "vLLM OpenAI server (raw Deployment)", ("platform",)),
    Feature("kserve", "KServe InferenceService alternative to the raw Deployment", ("serving",)),
    Feature("routing", "Gateway API + InferencePool + endpoint picker", ("serving",)),
    Feature("llm-d", "prefill/decode disaggregation (needs >= 2 GPUs)", ("routing",)),
    Feature("egress", "external providers exit through the inference gateway", ("routing",)),
    Feature("llm-gateway", "LiteLLM + Postgres: virtual keys, budgets, limits, spend", ("serving",)),
    Feature("embeddings", "an embeddings model behind the alias `embeddings`", ("llm-gateway",)),
    Feature("coding-assistant", "aliases coder-chat and coder-fim for IDEs", ("llm-gateway",)),
    Feature("experience", "chat, FIM and agentic coding through tenant keys", ("coding-assistant",)),
    Feature("mcp", "the book's MCP server: repository tools behind LiteLLM's MCP gateway, per-key tool permissions",
            ("llm-gateway",)),
    Feature("demos", "demo tenants and sample sessions", ("experience",)),
    Feature("observability", "Prometheus scrape, SLO rules, dashboards", ("platform",)),
    Feature("opencost", "cost attribution per namespace", ("observability",)),
    Feature("autoscaling", "KEDA ScaledObject on queue depth", ("serving", "observability")),
    Feature("identity", "Dex + oauth2-proxy single sign-on", ("platform",)),
    Feature("dns", "external-dns records for public hosts", ("platform",)),
    Feature("public-edge", "public TLS entry point", ("dns", "identity")),
    Feature("security", "default-deny NetworkPolicy, Kyverno GPU gate", ("llm-gateway",)),
    Feature("guardrails", "PII masking and prompt-injection block in the gateway", ("llm-gateway",)),
    Feature("mcp-gateway", "read-only MCP server behind agentgateway with JWT auth", ("routing", "identity", "mcp")),
    Feature("gitops", "an Argo CD Application per layer over the same built manifests, synced in layer order",
            ("platform",)),
    Feature("resilience", "fault drills and a load run on the local stack", ("llm-gateway",)),
    Feature("benchmarks", "GuideLLM sweeps against serving and gateway", ("llm-gateway",)),
    # Paper only: they read the run's benchmark artefacts (or the stored L4 figures on an L4 profile), deploy nothing.
    Feature("economics", "cost per million tokens, the lab's month, break-even against a hosted API"),
    Feature("capacity", "a fleet simulation comparing autoscaling policies on the measured curve"),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in CATALOGUE}


@dataclass(frozen=True)
class FeatureState:
    """One row of the resolved feature table."""

    name: str
    enabled: bool
    reason: str


@dataclass(frozen=True)
class ResolvedFeatures:
    """The outcome of resolution: every feature in catalogue order, with why it is on or off."""

    states: tuple[FeatureState, ...] = field(default_factory=tuple)

    @property
    def enabled(self) -> list[str]:
        return [s.name for s in self.states if s.enabled]

    def __contains__(self, name: object) -> bool:
        return name in self.enabled

    def table(self) -> pd.DataFrame:
        """The feature table as the book and ``inferbook profile show`` print it."""
        rows = [
            {
                "feature": s.name,
                "enabled": "yes" if s.enabled else "no",
                "why": s.reason,
                "requires": ", ".join(BY_NAME[s.name].requires) or "-",
                "provides": BY_NAME[s.name].summary,
            }
            for s in self.states
        ]
        return pd.DataFrame(rows).set_index("feature")


class FeatureConflict(Exception):
    """A wanted feature needs one that the profile explicitly switched off."""

    def __init__(self, feature: str, needs: str, chain: list[str]) -> None:
        self.feature = feature
        self.needs = needs
        self.chain = chain
        super().__init__(f"{feature} needs {needs}")


def resolve(requested: dict[str, bool]) -> ResolvedFeatures:
    """Resolve requested booleans into the full feature set.

    ``requested`` holds only what the profile wrote. A feature is on when the
    profile says ``true`` or when an enabled feature needs it; it is off
    otherwise. Raises :class:`FeatureConflict` when a needed feature was set
    to ``false``, and :class:`KeyError` for a name not in the catalogue.
    """
    for name in requested:
        if name not in BY_NAME:
            raise KeyError(name)
    reasons: dict[str, str] = {}

    def enable(name: str, reason: str, chain: list[str]) -> None:
        # chain: the path of requirements from the feature the profile asked for down to `name`
        if name in reasons:
            return
        if requested.get(name) is False:
            raise FeatureConflict(chain[0], name, chain)
        reasons[name] = reason
        for dep in BY_NAME[name].requires:
            enable(dep, f"required by {name}", chain + [dep])

    for feature in CATALOGUE:
        if requested.get(feature.name) is True:
            enable(feature.name, "profile", [feature.name])

    states = []
    for feature in CATALOGUE:
        if feature.name in reasons:
            states.append(FeatureState(feature.name, True, reasons[feature.name]))
        elif feature.name in requested:
            states.append(FeatureState(feature.name, False, "profile"))
        else:
            states.append(FeatureState(feature.name, False, "default (off)"))
    return ResolvedFeatures(tuple(states))
