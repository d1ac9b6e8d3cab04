"""Capacity: a fleet simulation (``94-capacity``)."""

from __future__ import annotations

from ...layer import Layer

DECLARATION = Layer(
    name="capacity",
    summary="a discrete-event fleet simulation on the measured curve, comparing autoscaling policies",
)
