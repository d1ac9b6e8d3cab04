"""The identity layer (ADR-0026): Dex's config and oauth2-proxy's flags from the profile, secrets only from the
store, and the portal's redirect to Dex checked the way a kube target checks it (against a stand-in server here).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
import yaml

from inferbook import layers, load_profile, targets
from inferbook.layers import identity
from inferbook.layers.identity import portal, steps
from inferbook.layers.identity.manifests import CLIENT_ID, STATIC_HASH_ENV
from inferbook.paths import Layout

from .conftest import ROOT


def render(tmp_path, name: str = "kind", **overrides: Any) -> list[dict[str, Any]]:
    return layers.render("identity", load_profile(name, overrides), Layout(ROOT, tmp_path))


def dex_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(next(o for o in objects if o["kind"] == "ConfigMap")["data"]["config.yaml"])


def deployment(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


def args(objects: list[dict[str, Any]]) -> dict[str, str]:
    c = deployment(objects, "oauth2-proxy")["spec"]["template"]["spec"]["containers"][0]
    return dict(a.split("=", 1) for a in c["args"])


def test_the_shipped_profiles_enable_identity_where_they_belong():
    assert all("identity" in load_profile(n).features for n in ("kind", "gke-l4", "prod"))
    assert "identity" not in load_profile("local").features


def test_the_lab_user_comes_from_the_store_and_no_secret_is_rendered(tmp_path):
    objects = render(tmp_path)
    config = dex_config(objects)
    user = config["staticPasswords"][0]
    assert user["hashFromEnv"] == STATIC_HASH_ENV and "hash" not in user
    assert not [o for o in objects if o["kind"] == "Secret"]
    made = {o["spec"]["target"]["name"] for o in objects if o["kind"] == "ExternalSecret"}
    for name in ("dex", "oauth2-proxy"):
        for env in deployment(objects, name)["spec"]["template"]["spec"]["containers"][0]["env"]:
            assert env["valueFrom"]["secretKeyRef"]["name"] in made, env


def test_issuer_redirect_and_portal_flags_agree(tmp_path):
    objects = render(tmp_path, **{"identity.issuer": "https://sso.example.com/dex",
                                  "identity.portal_url": "https://portal.example.com"})
    config, flags = dex_config(objects), args(objects)
    assert config["issuer"] == flags["--oidc-issuer-url"] == "https://sso.example.com/dex"
    assert flags["--login-url"] == "https://sso.example.com/dex/auth"
    assert config["staticClients"][0]["redirectURIs"] == [flags["--redirect-url"]] == [
        "https://portal.example.com/oauth2/callback"]
    assert config["staticClients"][0]["id"] == flags["--client-id"] == CLIENT_ID
    assert flags["--cookie-secure"] == "true"
    assert flags["--redeem-url"] == "http://dex.inferbook.svc.cluster.local:5556/dex/token"


def test_the_portal_fronts_the_litellm_service_the_gateway_layer_renders(tmp_path):
    gateway = layers.render("llm-gateway", load_profile("kind"), Layout(ROOT, tmp_path / "g"))
    service = next(o for o in gateway if o["kind"] == "Service" and o["metadata"]["name"] == "litellm")
    assert args(render(tmp_path))["--upstream"] == f"http://litellm:{service['spec']['ports'][0]['port']}/"


def test_the_google_connector_by_profile(tmp_path):
    objects = render(tmp_path, **{"identity.connector": "google", "identity.google_domain": "example.com"})
    config = dex_config(objects)
    assert "staticPasswords" not in config and not config["enablePasswordDB"]
    google = config["connectors"][0]
    assert google["type"] == "google" and google["config"]["hostedDomains"] == ["example.com"]
    assert google["config"]["clientSecret"] == "$GOOGLE_CLIENT_SECRET"
    env = {e["name"] for e in deployment(objects, "dex")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"} <= env and STATIC_HASH_ENV not in env
    assert "dex-google" in {o["metadata"]["name"] for o in objects if o["kind"] == "ExternalSecret"}


def test_the_sign_in_path_is_opened_only_with_security(tmp_path):
    with_security = {o["metadata"]["name"] for o in render(tmp_path / "a") if o["kind"] == "NetworkPolicy"}
    assert with_security == {"identity-portal", "identity-dex", "litellm-from-portal"}
    without = render(tmp_path / "b", **{"features.security": False})
    assert not [o for o in without if o["kind"] == "NetworkPolicy"]


def test_the_summary_names_issuer_connector_and_secrets(tmp_path):
    table = steps.summary(render(tmp_path)).set_index("setting")["value"]
    assert table["issuer"] == "http://127.0.0.1:5556/dex"
    assert "static password" in table["connector"] and table["Secret objects rendered"] == "0"


# --------------------------------------------------------------------------- the redirect check


@pytest.fixture
def stand_in() -> Iterator[dict[str, Any]]:
    """A server answering /oauth2/start as told (status, Location), like oauth2-proxy does."""
    answer: dict[str, Any] = {"status": 302, "location": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(answer["status"])
            if answer["location"]:
                self.send_header("Location", answer["location"])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    answer["base"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield answer
    server.shutdown()
    server.server_close()


def test_the_redirect_check_passes_only_for_dexs_login_with_the_portals_client(stand_in):
    profile = load_profile("kind")
    good = ("http://127.0.0.1:5556/dex/auth?approval_prompt=force&client_id=inferbook-portal"
            "&redirect_uri=http%3A%2F%2F127.0.0.1%3A4180%2Foauth2%2Fcallback&response_type=code&state=x")
    stand_in["location"] = good
    assert portal.check_redirect(profile, *portal.redirect_of(stand_in["base"]))["pass"]
    stand_in["location"] = good.replace("inferbook-portal", "someone-else")
    assert not portal.check_redirect(profile, *portal.redirect_of(stand_in["base"]))["pass"]
    stand_in["location"] = "http://evil.example.com/auth?client_id=inferbook-portal"
    assert not portal.check_redirect(profile, *portal.redirect_of(stand_in["base"]))["pass"]
    stand_in.update(status=200, location="")
    assert not portal.check_redirect(profile, *portal.redirect_of(stand_in["base"]))["pass"]


def test_the_local_target_says_the_redirect_needs_a_cluster(tmp_path):
    target = targets.of(load_profile("local"), Layout(ROOT, tmp_path), say=lambda *_: None)
    rows = steps.live(target, identity.DECLARATION, [])
    assert list(rows["result"]) == ["needs a cluster"]
