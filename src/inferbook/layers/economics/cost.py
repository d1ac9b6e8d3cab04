"""What a token costs on the curve, what the lab costs a month, and where a hosted API is cheaper.

All of it is arithmetic on the curve (:mod:`.curve`) and the inputs (:mod:`.inputs`); nothing is measured here.
The accelerator's hourly price is charged to the output tokens (a request's input tokens ride along, as a hosted
API's price for them is added on its side), so "cost per million output tokens" is the price of the hour divided by
the output tokens the replica makes in it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .curve import Curve
from .inputs import Inputs, no_price

MILLION = 1_000_000


def tokens_per_hour(tok_s: float) -> float:
    return tok_s * 3600


def cost_per_million(usd_per_hour: float | None, tok_s: float) -> float | None:
    """USD per million output tokens at ``tok_s`` output tokens/s, or None without a price."""
    return None if usd_per_hour is None else usd_per_hour / tokens_per_hour(tok_s) * MILLION


def api_usd_per_request(curve: Curve, inputs: Inputs) -> float:
    """What the hosted API charges for one request of the curve's shape (its input and its output tokens)."""
    return (curve.input_tokens * inputs.api_input + curve.output_tokens * inputs.api_output) / MILLION


def break_even_usd_per_hour(curve: Curve, inputs: Inputs, tok_s: float) -> float:
    """The hourly price below which a busy replica at ``tok_s`` is cheaper than the hosted API for the same requests."""
    requests_per_hour = tokens_per_hour(tok_s) / curve.output_tokens
    return requests_per_hour * api_usd_per_request(curve, inputs)


def _money(value: float | None, missing: str, digits: int = 4) -> str:
    return missing if value is None else f"{value:,.{digits}f}"


def per_level(curve: Curve, inputs: Inputs) -> pd.DataFrame:
    """Per level of the curve: throughput, tokens per hour, cost per million output tokens (each price), the
    break-even hourly price against the hosted API, and the knee marked."""
    rows = []
    for p in curve.points:
        row: dict[str, Any] = {"concurrency": p.concurrency, "source": curve.label,
                               "output tok/s": round(p.output_tokens_per_s, 1),
                               "output tokens per hour": f"{tokens_per_hour(p.output_tokens_per_s):,.0f}"}
        for name, field, price in inputs.prices():
            row[f"USD per million output tokens, {name}"] = _money(cost_per_million(price, p.output_tokens_per_s),
                                                                   no_price(field))
        row[f"break-even USD/hour vs {inputs.api_name}"] = round(break_even_usd_per_hour(curve, inputs,
                                                                                        p.output_tokens_per_s), 4)
        row["knee"] = "knee" if p.concurrency == curve.knee else ""
        rows.append(row)
    return pd.DataFrame(rows).set_index("concurrency")


def monthly(curve: Curve, inputs: Inputs, claim: dict[str, Any]) -> pd.DataFrame:
    """The lab's month under the usage pattern, beside the seed's claim: billed hours, cost per price, the hourly
    price the claim implies, and what the hosted API would charge for the requests the knee serves in the
    active hours."""
    u = inputs.usage
    hours = u.billed_hours_per_month()
    low, high = claim["monthly_usd"]
    rows: list[tuple[str, Any]] = [("billed accelerator hours per month", f"{hours:,.1f}"
                                    + (" (scale to zero off: all day)" if not u.scale_to_zero else
                                       f" ({u.hours_active_per_day} active + {u.activations_per_day} x "
                                       f"({u.cold_start_minutes} cold start + {u.scale_down_after_minutes} idle) "
                                       f"min, x {u.days_per_month} days)"))]
    for name, field, price in inputs.prices():
        value = None if price is None else price * hours
        verdict = "" if value is None else (" : within the seed's claim" if low <= value <= high else
                                            f" : {'above' if value > high else 'below'} the seed's claim")
        rows.append((f"monthly cost, {name} (USD)", _money(value, no_price(field), 2) + verdict))
    rows.append(("the seed's claim (USD per month, stored)", f"{low}-{high}"))
    rows.append(("hourly price the claim implies for these hours (USD/hour)",
                 f"{low / hours:,.4f}-{high / hours:,.4f}" if hours else "-"))
    knee = curve.knee_point
    if knee is not None:
        served = tokens_per_hour(knee.output_tokens_per_s) * u.hours_active_per_day * u.days_per_month
        api = served / curve.output_tokens * api_usd_per_request(curve, inputs)
        rows.append((f"output tokens the knee serves in the active hours ({curve.label})", f"{served:,.0f}"))
        rows.append((f"{inputs.api_name} for the same requests (USD per month)", f"{api:,.2f}"))
    return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")


def figures(curve: Curve, inputs: Inputs, claim: dict[str, Any]) -> pd.DataFrame:
    """The numbers for the closing notes: cost per million at the knee, the month against the claim, break-even."""
    knee = curve.knee_point
    rows: list[tuple[str, Any]] = [("curve", curve.label),
                                   ("knee (concurrency)", curve.knee if curve.knee is not None else "none"),
                                   ("knee rule", curve.knee_rule)]
    if knee is None:
        rows.append(("cost per million output tokens at the knee", "no level meets the objectives: no knee"))
    else:
        for name, field, price in inputs.prices():
            rows.append((f"USD per million output tokens at the knee, {name}",
                         _money(cost_per_million(price, knee.output_tokens_per_s), no_price(field))))
        # price-free: what any hourly price becomes, and the price the seed's claim implies for the usage pattern
        per_dollar = cost_per_million(1.0, knee.output_tokens_per_s) or 0.0
        rows.append(("USD per million output tokens at the knee, per USD/hour of the accelerator",
                     f"{per_dollar:,.4f} (multiply by any hourly price)"))
        hours = inputs.usage.billed_hours_per_month()
        if hours:
            low, high = (x / hours for x in claim["monthly_usd"])
            rows.append(("USD per million output tokens at the knee, at the hourly price the seed's claim implies",
                         f"{low * per_dollar:,.4f}-{high * per_dollar:,.4f} (at {low:,.4f}-{high:,.4f} USD/hour)"))
        rows.append((f"break-even USD/hour vs {inputs.api_name} at the knee",
                     f"{break_even_usd_per_hour(curve, inputs, knee.output_tokens_per_s):,.4f}"))
    month = monthly(curve, inputs, claim)
    for label in month.index:
        if label.startswith("monthly cost") or label.startswith("hourly price the claim"):
            rows.append((label, month.loc[label, "value"]))
    return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")


def plot(curve: Curve, inputs: Inputs) -> Any:
    """Output tokens per hour and the break-even hourly price against concurrency, the knee marked; the prices given
    are drawn as lines (self-hosting at a level is cheaper than the API where its point is above a price line)."""
    import matplotlib.pyplot as plt  # plotting is the chapter's

    xs = curve.levels
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), constrained_layout=True)
    left.plot(xs, [tokens_per_hour(p.output_tokens_per_s) / MILLION for p in curve.points], marker="o",
              label=curve.label)
    right.plot(xs, [break_even_usd_per_hour(curve, inputs, p.output_tokens_per_s) for p in curve.points], marker="o",
               label=f"break-even vs {inputs.api_name}")
    for _name, _field, price in inputs.prices():
        if price is not None:
            right.axhline(price, linestyle="--", color="grey", linewidth=1, label=f"{_name}: ${price:,.2f}/h")
    for ax, title in ((left, "million output tokens per hour"), (right, "break-even accelerator price (USD/hour)")):
        if curve.knee is not None:
            ax.axvline(curve.knee, color="tab:green", linestyle=":", linewidth=1, label=f"knee (c={curve.knee})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(c) for c in xs])
        ax.set_xlabel("concurrent requests per replica")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{curve.label}: {curve.hardware}, {curve.input_tokens} in / {curve.output_tokens} out")
    plt.close(fig)
    return fig


def verify(curve: Curve, inputs: Inputs, table: pd.DataFrame) -> pd.DataFrame:
    """The chapter's checks: the curve is one labelled source, every level priced or saying why not, the arithmetic
    holds (cost per million x tokens per hour = the price), and every price shown has its source."""
    rows = []
    rows.append({"check": "one labelled curve", "expected": "measured here, or stored (seed, L4): never both",
                 "observed": curve.label, "pass": curve.label.startswith(("measured here", "stored (seed, L4)"))})
    rows.append({"check": "every level has a throughput", "expected": "output tok/s > 0 at each level",
                 "observed": ", ".join(f"c={p.concurrency}: {p.output_tokens_per_s:,.1f}" for p in curve.points),
                 "pass": all(p.output_tokens_per_s > 0 for p in curve.points)})
    for name, field, price in inputs.prices():
        column = table[f"USD per million output tokens, {name}"]
        if price is None:
            ok = all(value == no_price(field) for value in column)
            observed = f"every level says '{no_price(field)}'"
        else:
            back = [float(v) * tokens_per_hour(p.output_tokens_per_s) / MILLION for v, p in zip(column, curve.points,
                                                                                                strict=True)]
            # the table keeps 4 decimals: half a unit of the last one, times the tokens of an hour, is the slack
            slack = [0.5e-4 * tokens_per_hour(p.output_tokens_per_s) / MILLION + 1e-9 for p in curve.points]
            ok = all(abs(b - price) <= s for b, s in zip(back, slack, strict=True)) and bool(inputs.price_source)
            observed = f"{min(back):,.4f}-{max(back):,.4f} USD/hour back from the table; source {inputs.price_source}"
        rows.append({"check": f"{name} price applied or named as missing",
                     "expected": "cost x tokens per hour = the price, with its source; or 'no price given'",
                     "observed": observed, "pass": ok})
    rows.append({"check": "the hosted API's price has a source", "expected": "a URL and a date",
                 "observed": f"{inputs.api_source} ({inputs.api_date})",
                 "pass": bool(inputs.api_source) and bool(inputs.api_date)})
    return pd.DataFrame(rows).set_index("check")
