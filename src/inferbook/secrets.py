"""Secrets of the local target: generated per installation, kept outside the repository, never printed.

On a cluster, secrets come from External Secrets (ADR-0011). Locally the same
names (``<secret>/<key>``, as a pod's ``secretKeyRef`` names them) resolve to
values generated on first use and stored in a 0600 file under the user's
config folder. Nothing in this module logs or returns a secret in a repr.
"""

from __future__ import annotations

import json
import os
import secrets as _random
from pathlib import Path

from .envs import file_lock


def default_secrets_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "inferbook" / "secrets"


class SecretStore:
    """Generated secrets of one profile, in ``<dir>/<profile>.json`` with mode 0600."""

    def __init__(self, profile: str, directory: Path | None = None) -> None:
        self.directory = directory or default_secrets_dir()
        self.path = self.directory / f"{profile}.json"

    def __repr__(self) -> str:
        return f"SecretStore({str(self.path)!r})"

    def _read(self) -> dict[str, str]:
        if not self.path.is_file():
            return {}
        return json.loads(self.path.read_text())

    def get(self, name: str) -> str:
        """The value of ``name`` (``secret/key``), generated on first use."""
        values = self._read()
        if name in values:
            return values[name]
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        with file_lock(self.path.with_suffix(".lock")):
            values = self._read()
            if name not in values:
                values[name] = "sk-local-" + _random.token_urlsafe(24)
                fd = os.open(self.path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as handle:
                    json.dump(values, handle)
                os.replace(self.path.with_suffix(".tmp"), self.path)
        return values[name]

    def peek(self, name: str) -> str | None:
        """The value of ``name`` if it was ever generated; never creates one."""
        return self._read().get(name)

    def names(self) -> list[str]:
        return sorted(self._read())
