"""The local stand-in for the inference gateway's front: body-based model routing and weighted backends.

On a cluster, the Gateway lifts the ``model`` of the JSON body into ``X-Gateway-Base-Model-Name`` (GIE's
body-based router) and an HTTPRoute rule per model sends the request to its InferencePool, split by weight
between pools for a canary. No registry ships a Gateway implementation that runs here, so this small aiohttp
server does that part, configured from the rendered HTTPRoute rules (:func:`routes_from`): a request goes to
the pool its model names, a weighted choice among the rule's backends; a model no rule names gets a 404
listing the models there are routes for; each response says which pool served it (``x-inferbook-pool``).

It runs as a supervised process in the vllm-router environment (which has aiohttp):
``python -m inferbook.layers.routing.front CONFIG.json``. It imports nothing of inferbook beyond this file.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

#: The header body-based routing fills from the body's ``model`` (GIE), which the HTTPRoute rules match.
MODEL_HEADER = "X-Gateway-Base-Model-Name"
#: The backendRef kinds a rule may send to (a backendRef with no kind is a Service, as in Gateway API).
BACKEND_KINDS = {"InferencePool", "Service"}
#: Hop-by-hop headers a proxy must not forward (RFC 9110 section 7.6.1), and what aiohttp sets itself.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}


def routes_from(httproutes: list[dict[str, Any]], upstreams: dict[str, str]) -> dict[str, list[tuple[str, int]]]:
    """``{model: [(backend, weight), ...]}`` from rendered HTTPRoutes, for the backends ``upstreams`` knows.

    A rule counts when it matches the model header exactly; its backends are InferencePools, or a Service (a
    model served by one endpoint, with no picker to ask); a backend with no local upstream is an error naming
    it, since a silently missing pool would shift its share onto the others.
    """
    routes: dict[str, list[tuple[str, int]]] = {}
    for route in httproutes:
        for rule in route.get("spec", {}).get("rules") or []:
            models = [h["value"] for m in rule.get("matches") or [] for h in m.get("headers") or []
                      if h.get("name", "").lower() == MODEL_HEADER.lower() and h.get("type", "Exact") == "Exact"]
            backends = [(b["name"], int(b.get("weight", 1))) for b in rule.get("backendRefs") or []
                        if b.get("kind", "Service") in BACKEND_KINDS]
            for pool, _ in backends:
                if pool not in upstreams:
                    raise ValueError(f"HTTPRoute {route['metadata']['name']} sends to {pool}, which has no local "
                                     f"upstream (known: {', '.join(sorted(upstreams))})")
            for model in models:
                if backends:
                    routes[model] = [(p, w) for p, w in backends if w > 0]
    return routes


class Picker:
    """A weighted choice among a rule's backends, seeded: the same seed gives the same sequence of pools."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def pick(self, backends: list[tuple[str, int]]) -> str:
        if len(backends) == 1:
            return backends[0][0]
        return self._random.choices([p for p, _ in backends], weights=[w for _, w in backends])[0]


def not_found(model: Any, routes: dict[str, Any]) -> dict[str, Any]:
    """The 404 body for a model with no route: OpenAI's error shape, naming the models there are routes for."""
    return {"error": {"message": f"no route for model {model!r}: this gateway routes {', '.join(sorted(routes))}",
                      "type": "not_found_error", "code": 404}}


def make_app(config: dict[str, Any]) -> Any:
    """The aiohttp application for ``config``: ``routes`` ({model: [[pool, weight], ...]}), ``upstreams``
    ({pool: base URL}), ``seed``."""
    from aiohttp import ClientSession, ClientTimeout, web

    routes = {m: [(p, int(w)) for p, w in b] for m, b in config["routes"].items()}
    upstreams: dict[str, str] = config["upstreams"]
    picker = Picker(int(config.get("seed", 0)))
    counts: dict[tuple[str, str], int] = {}

    async def models(_request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "inferbook-routing"} for m in sorted(routes)]
        return web.json_response({"object": "list", "data": data})

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def version(_request: web.Request) -> web.Response:
        return web.json_response({"version": f"inferbook-routing-front ({len(routes)} routes)"})

    async def metrics(_request: web.Request) -> web.Response:
        lines = ["# HELP inferbook_route_requests_total Requests routed, by model and pool.",
                 "# TYPE inferbook_route_requests_total counter"]
        lines += [f'inferbook_route_requests_total{{model="{m}",pool="{p}"}} {n}'
                  for (m, p), n in sorted(counts.items())]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            model = json.loads(body).get("model") if body else None
        except (ValueError, AttributeError):
            model = None
        if model not in routes:
            return web.json_response(not_found(model, routes), status=404)
        pool = picker.pick(routes[model])
        counts[(model, pool)] = counts.get((model, pool), 0) + 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers[MODEL_HEADER] = model
        session: ClientSession = request.app["session"]
        async with session.request(request.method, upstreams[pool] + request.path_qs, headers=headers,
                                   data=body) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                **{k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
                "x-inferbook-pool": pool})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def start(app: web.Application) -> None:
        app["session"] = ClientSession(timeout=ClientTimeout(total=None, sock_connect=10), auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application(client_max_size=64 * 2**20)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/{tail:.*}", proxy)
    return app


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m inferbook.layers.routing.front CONFIG.json", file=sys.stderr)
        return 2
    from aiohttp import web

    with open(args[0]) as handle:
        config = json.load(handle)
    web.run_app(make_app(config), host="127.0.0.1", port=int(config["port"]), print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
