"""One JSON call over HTTP, for the small admin and health clients of the layers (LiteLLM, vLLM)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def call_json(method: str, url: str, key: str | None = None, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """One JSON call to the proxy: (status, parsed body); HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw) if raw else {}
        except ValueError:
            return error.code, {"detail": raw.decode(errors="replace")}
