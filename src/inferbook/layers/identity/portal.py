"""The portal's sign-in, checked from outside: an unauthenticated visit must be sent to Dex.

oauth2-proxy answers ``/oauth2/start`` with a redirect to the login URL (Dex's ``/auth``) carrying the portal's
client id and callback. Written against a URL, so a kube target's port-forward and a test's stand-in server
are checked the same way.
"""

from __future__ import annotations

import http.client
import urllib.parse
from typing import Any

from ...profile import Profile
from .manifests import CLIENT_ID, settings


def redirect_of(base: str, path: str = "/oauth2/start?rd=%2F", timeout: float = 10.0) -> tuple[int, str]:
    """The status and Location of ``GET base+path``, the redirect not followed."""
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Location") or ""
    finally:
        conn.close()


def check_redirect(profile: Profile, status: int, location: str) -> dict[str, Any]:
    """Whether the answer sends the browser to Dex's /auth with the portal's client and callback."""
    s = settings(profile)
    wanted = f"{s['issuer'].rstrip('/')}/auth"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    callback = f"{s['portal_url'].rstrip('/')}/oauth2/callback"
    ok = (status in (302, 303, 307) and location.split("?", 1)[0] == wanted
          and query.get("client_id") == [CLIENT_ID] and query.get("redirect_uri") == [callback])
    return {"proof": "the portal sends an unauthenticated visit to Dex",
            "result": f"{status} -> {location.split('?', 1)[0] or '(no Location)'}", "pass": ok}
