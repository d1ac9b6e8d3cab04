"""Every input the money is computed from, read from the profile's ``economics:`` and shown as one table.

A price is a profile field with its source and date beside it; a price nobody could cite is ``null``, and then
every figure that needs it says "no price given: set <field>" instead of guessing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...errors import InferbookError
from ...profile import Profile

ON_DEMAND = "economics.accelerator.on_demand_usd_per_hour"
SPOT = "economics.accelerator.spot_usd_per_hour"


class InputError(InferbookError):
    """An economics input that cannot be used as given."""


def no_price(field: str) -> str:
    """What a figure that needs a missing price shows."""
    return f"no price given: set {field}"


@dataclass(frozen=True)
class Usage:
    """How the lab is used in a month: what the monthly figure is computed for."""

    hours_active_per_day: float
    days_per_month: float
    scale_to_zero: bool
    activations_per_day: float
    cold_start_minutes: float
    scale_down_after_minutes: float

    def __post_init__(self) -> None:
        if not 0 <= self.hours_active_per_day <= 24:
            raise InputError(f"economics.usage.hours_active_per_day is {self.hours_active_per_day}: give hours "
                             f"between 0 and 24")

    def billed_hours_per_day(self) -> float:
        """Hours a day the accelerator is billed: all day without scale-to-zero; else the active hours plus, per
        activation, the cold start (ADR-0025: billed while it loads) and the idle wait before scaling down."""
        if not self.scale_to_zero:
            return 24.0
        extra = self.activations_per_day * (self.cold_start_minutes + self.scale_down_after_minutes) / 60
        return min(24.0, self.hours_active_per_day + extra)

    def billed_hours_per_month(self) -> float:
        return self.billed_hours_per_day() * self.days_per_month


@dataclass(frozen=True)
class Inputs:
    """The prices (with sources), the hosted API's per-token prices and the usage pattern."""

    accelerator: str
    on_demand: float | None
    spot: float | None
    price_source: str | None
    price_date: str | None
    api_name: str
    api_input: float
    api_output: float
    api_source: str
    api_date: str
    usage: Usage

    @classmethod
    def from_profile(cls, profile: Profile, hardware: str) -> "Inputs":
        eco = profile.data["economics"]
        acc, api, usage = eco["accelerator"], eco["hosted_api"], eco["usage"]
        if (acc["on_demand_usd_per_hour"] is not None or acc["spot_usd_per_hour"] is not None) and not acc["source"]:
            raise InputError(f"profile {profile.name} gives an accelerator price without its source. Fix: set "
                             f"economics.accelerator.source (the page it was read on) and .date, or leave the "
                             f"price null")
        return cls(accelerator=acc["name"] or hardware, on_demand=acc["on_demand_usd_per_hour"],
                   spot=acc["spot_usd_per_hour"], price_source=acc["source"], price_date=acc["date"],
                   api_name=api["name"], api_input=api["usd_per_million_input_tokens"],
                   api_output=api["usd_per_million_output_tokens"], api_source=api["source"], api_date=api["date"],
                   usage=Usage(**usage))

    def prices(self) -> list[tuple[str, str, float | None]]:
        """(name, profile field, USD per hour or None) for each accelerator price."""
        return [("on-demand", ON_DEMAND, self.on_demand), ("spot", SPOT, self.spot)]

    def table(self, curve_label: str, claim: dict[str, Any]) -> pd.DataFrame:
        """Every input of the chapter, its value and where it comes from."""
        u = self.usage
        cited = f"{self.price_source}, read {self.price_date}" if self.price_source else "-"
        rows = [
            ("curve", curve_label, "economics.curve"),
            ("accelerator", self.accelerator, "economics.accelerator.name"),
            *[(f"{name} price (USD/hour)", "null: " + no_price(field) if value is None else f"{value:,.4f}",
               f"{field}; {cited}") for name, field, value in self.prices()],
            (f"hosted API: {self.api_name}, input (USD per million tokens)", f"{self.api_input:,.4f}",
             f"{self.api_source}, read {self.api_date}"),
            (f"hosted API: {self.api_name}, output (USD per million tokens)", f"{self.api_output:,.4f}",
             f"{self.api_source}, read {self.api_date}"),
            ("hours active per day", u.hours_active_per_day, "economics.usage.hours_active_per_day"),
            ("days per month", u.days_per_month, "economics.usage.days_per_month"),
            ("scale to zero", "on" if u.scale_to_zero else "off", "economics.usage.scale_to_zero"),
            ("activations per day (cold starts)", u.activations_per_day, "economics.usage.activations_per_day"),
            ("cold start per activation (minutes)", u.cold_start_minutes, "economics.usage.cold_start_minutes"),
            ("idle minutes before scaling down", u.scale_down_after_minutes,
             "economics.usage.scale_down_after_minutes"),
            ("the seed's claim (USD per month)", f"{claim['monthly_usd'][0]}-{claim['monthly_usd'][1]}",
             f"stored: {claim['source']}"),
        ]
        return pd.DataFrame(rows, columns=["input", "value", "from"]).set_index("input")
