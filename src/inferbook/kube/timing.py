"""The kube client's timings: request timeouts, how often a wait reports progress, CRD and port-forward starts.

Read as ``timing.NAME`` at call time by the other modules, so that a test can shorten one
(``monkeypatch.setattr(kube.timing, "PROGRESS_EVERY", 1.0)``).
"""

from __future__ import annotations

from typing import Callable

#: (connect, read) seconds for one request: a black-holed API server fails in seconds, not minutes.
REQUEST_TIMEOUT = (10.0, 60.0)
#: A wait prints a progress line at least this often (seconds), even when nothing changes.
PROGRESS_EVERY = 10.0
#: How long a freshly applied CRD may take to be Established before its custom resources are applied.
CRD_ESTABLISH_TIMEOUT = 60.0
#: Extra seconds of socket read timeout beyond a watch's server-side timeoutSeconds.
WATCH_READ_SLACK = 15.0
#: How long ``kubectl port-forward`` may take to start forwarding.
PORT_FORWARD_START_TIMEOUT = 30.0

#: Where a wait reads the time: seconds that only go forward. ``time.monotonic``, unless a test passes
#: a virtual clock (``clock=``) to drive a wait's timeout without spending the seconds.
Clock = Callable[[], float]
