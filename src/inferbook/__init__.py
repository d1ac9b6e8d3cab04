"""inferbook: an executable runbook book for OpenAI-compatible LLM inference on Kubernetes.

Notebooks stay thin and call this library: profiles (:mod:`inferbook.profile`),
the feature resolver (:mod:`inferbook.features`), the target checks
(:mod:`inferbook.preflight`), the book runner (:mod:`inferbook.runner`) and
the site builder (:mod:`inferbook.site`).
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import InferbookError, ProfileError
from .paths import Layout
from .profile import Profile, load_profile

try:
    __version__ = version("inferbook")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = ["InferbookError", "Layout", "Profile", "ProfileError", "load_profile", "__version__"]
