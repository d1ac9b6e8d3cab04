"""An endpoint's lifetime, the part every layer's endpoint type shares (target-neutral, below the layers).

A layer's endpoint (where vLLM or the gateway answers) is built by its local target and by its cluster
target alike; on a cluster it owns the port-forward that makes it reachable. :class:`Held` gives it a
close and a ``with`` block, so a chapter that holds the endpoint holds the forward.
"""

from __future__ import annotations

import contextlib


class Held:
    """An endpoint's lifetime: what keeps it reachable (a port-forward on a cluster, nothing locally) is
    released by :meth:`close` or at the end of a ``with`` block, and lasts as long as the endpoint is held.

    A chapter keeps the endpoint object for as long as it calls the layer; dropping it would let the
    port-forward's generator be finalised, closing the forward under the chapter.
    """

    closer: contextlib.ExitStack

    def close(self) -> None:
        """Stop the port-forward, if any (the layer itself keeps running)."""
        self.closer.close()

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
