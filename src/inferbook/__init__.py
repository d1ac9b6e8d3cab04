"""inferbook: an executable runbook book for OpenAI-compatible LLM inference on Kubernetes.

Notebooks stay thin and call this library: profiles (:mod:`inferbook.profile`),
the feature resolver (:mod:`inferbook.features`), the target checks
(:mod:`inferbook.preflight`), the book runner (:mod:`inferbook.runner`) and
the site builder (:mod:`inferbook.site`).
"""

import sys
from importlib.metadata import PackageNotFoundError, version

# jsonschema checks the `iri` formats with rfc3987-syntax when it is installed (Jupyter's format extras
# install it), and that package compiles some forty Earley parsers at import: 3 s at every start of the
# CLI and of every chapter's kernel. No inferbook schema uses those formats, so jsonschema is told the
# package is absent (it then skips those two format checks, as it does wherever the package is missing).
if "rfc3987_syntax" not in sys.modules:
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]

from .errors import InferbookError, ProfileError
from .paths import Layout
from .profile import Profile, load_profile

try:
    __version__ = version("inferbook")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = ["InferbookError", "Layout", "Profile", "ProfileError", "load_profile", "__version__"]
