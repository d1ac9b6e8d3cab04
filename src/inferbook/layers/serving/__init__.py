"""The serving layer: vLLM's OpenAI-compatible server with the profile's model (chapter ``20-serving``).

On a cluster the rendered Deployment (or KServe InferenceService) is applied and its rollout awaited
(:mod:`.cluster`); on the local target the same server runs as a process configured from the same
Deployment (:mod:`.local`). Both give the chapter an :class:`~.endpoint.Endpoint`.
"""

from __future__ import annotations

from .declaration import DECLARATION
from .endpoint import Endpoint, probe
from .local import LaunchSpec, LocalServing, launch_spec
from .manifests import LAYER, MANIFESTS
from .steps import coder, connect, exercise_coder, machine, provenance, provision, verify, verify_coder

__all__ = ["DECLARATION", "LAYER", "MANIFESTS", "Endpoint", "LaunchSpec", "LocalServing", "coder", "connect",
           "exercise_coder", "launch_spec", "machine", "probe", "provision", "provenance", "verify", "verify_coder"]
