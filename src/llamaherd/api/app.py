"""The ASGI application: REST and SSE (FastAPI), Socket.IO beside it, the dashboard at `/`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import socketio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from llamaherd.api.access import AccessGuard, AccessPolicy
from llamaherd.api.config_routes import Reload, create_config_router
from llamaherd.api.errors import install_error_handlers
from llamaherd.api.event_names import MODEL_PULL_EVENT
from llamaherd.api.front_views import with_peer_metrics
from llamaherd.api.gateway_routes import create_gateway_router
from llamaherd.api.guard import BrowserGuard
from llamaherd.api.handshakes import HandshakeLimits
from llamaherd.api.history_routes import create_history_router
from llamaherd.api.hub import EventHub
from llamaherd.api.model_routes import create_model_router
from llamaherd.api.model_streams import ModelStreams
from llamaherd.api.models_feed import ModelsFeed
from llamaherd.api.openapi import document_gateway
from llamaherd.api.packets import PacketCheck
from llamaherd.api.pull_routes import create_no_pull_router, create_pull_router
from llamaherd.api.realtime import create_socketio
from llamaherd.api.routes import create_router
from llamaherd.api.sse import create_sse_router
from llamaherd.catalog.pulls import PullManager
from llamaherd.cluster.front import Cluster
from llamaherd.cluster.peers import HOP_HEADER
from llamaherd.cluster.route import ClusterRoute
from llamaherd.gateway.herd import Herd, herd_of_one
from llamaherd.gateway.route import GatewayRoute, RequestLimits
from llamaherd.metrics.prometheus import CONTENT_TYPE
from llamaherd.supervisor.service import LlamaService
from llamaherd.telemetry.assembly import Telemetry
from llamaherd.version import __version__

logger = logging.getLogger("llamaherd.api")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

NO_DASHBOARD = """<!doctype html><meta charset="utf-8"><title>llamaherd</title>
<p>llamaherd is running, but its dashboard was not built.
Run <code>scripts/install</code> (it builds <code>web/</code> with npm), or use the API:
<a href="/api/status">/api/status</a>, <a href="/docs">/docs</a>.</p>"""


@dataclass
class Application:
    """The ASGI app to serve, and the hub whose streams must end before a shutdown waits."""

    asgi: ASGIApp
    hub: EventHub
    api: FastAPI
    herd: Herd
    telemetry: Telemetry


def create_app(  # noqa: PLR0915 (one statement per part it wires; parts are helpers)
    target: Herd | LlamaService,
    *,
    start_service: bool = True,
    loopback_only: bool = True,
    telemetry: Telemetry | None = None,
    access: AccessPolicy | None = None,
    limits: RequestLimits | None = None,
    handshakes: HandshakeLimits | None = None,
    reload: Reload | None = None,
    cluster: Cluster | None = None,
    pulls: PullManager | None = None,
) -> Application:
    """The whole app, for a herd of models (or the one server a LlamaService supervises).

    `start_service`: load the models marked `preload` at start-up, in order, as far as the
    limits allow; without any, the primary model, as the seed did with its one model.
    `loopback_only`: llamaherd listens on loopback, so only loopback Host names are served
    (see api/guard.py). `telemetry`: what measures and records the herd (default: metrics,
    no history, no log files, no alerts). `access`: keys, scopes and CORS (default: no keys,
    no other origins). `limits`: how large and how slow a request body may be. `handshakes`:
    how many Socket.IO sessions may wait for an authorized connect, and how long. `reload`:
    reads the config again (POST /api/config/reload; none: the route is not there).
    `cluster`: the peers whose models this llamaherd serves too (none: it serves its own).
    `pulls`: pulls of models from the Hugging Face Hub into models_dir (none: the routes of
    api/pull_routes.py are not there)."""
    herd = target if isinstance(target, Herd) else herd_of_one(target)
    telemetry = telemetry or Telemetry(herd)
    access = access or AccessPolicy()
    service = herd.primary.service  # what llamaStatus and /api/llama/* speak of
    hub = EventHub(service)
    feed = ModelsFeed(herd, hub)
    streams = ModelStreams(herd, hub.publish)  # every model's lines and state, as events
    hub.on_close_streams(streams.end_follows)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.start()
        streams.start()
        await telemetry.start(hub.publish)
        try:
            # Loads run in the background: the API answers at once while llama-server loads.
            herd.start(preload=herd.preload_order() if start_service else [])
            if cluster is not None:
                _follow_peers(herd, cluster)
            feed.start()
            telemetry.after_herd_start()
            yield
        finally:
            feed.close()
            if pulls is not None:
                await pulls.aclose()
            if cluster is not None:
                await cluster.aclose()
            await telemetry.close_before_herd()
            await herd.aclose()
            await telemetry.close_after_herd()
            streams.close()
            await hub.aclose()

    api = FastAPI(
        title="llamaherd",
        version=__version__,
        description="Supervisor and gateway for llama.cpp's llama-server.",
        lifespan=lifespan,
    )
    install_error_handlers(api)
    document_gateway(api)  # the gateway's routes are not FastAPI's, but belong in its schema
    api.include_router(create_router(herd))
    _mount_pulls(api, hub, herd, pulls, reload)  # first: before /api/models/{id}/...
    api.include_router(create_gateway_router(herd, cluster))  # ?host=NAME: a peer's model
    api.include_router(create_model_router(herd, streams, cluster))
    if reload is not None:
        api.include_router(create_config_router(herd, reload))
    api.include_router(create_sse_router(herd, hub))
    if telemetry.history is not None or cluster is not None:  # a front: its peers' history
        api.include_router(create_history_router(telemetry.history, cluster))
    if telemetry.metrics is not None:
        _mount_metrics(api, telemetry, cluster)
    _mount_dashboard(api)
    sio = create_socketio(service, hub, herd, telemetry, access, handshakes=handshakes)
    combined = PacketCheck(
        socketio.ASGIApp(sio, other_asgi_app=api, socketio_path="socket.io"),
        max_bytes=sio.eio.max_http_buffer_size,
    )
    # Inference first: its paths never touch FastAPI or Socket.IO.
    observe = telemetry.observe if telemetry.measuring else None
    gateway = GatewayRoute(herd, combined, limits=limits, observe=observe)
    inner: ASGIApp = gateway if cluster is None else ClusterRoute(gateway, cluster)
    asgi = _guarded(inner, access, loopback_only=loopback_only)
    return Application(asgi=asgi, hub=hub, api=api, herd=herd, telemetry=telemetry)


def _mount_pulls(
    api: FastAPI, hub: EventHub, herd: Herd, pulls: PullManager | None, reload: Reload | None
) -> None:
    """The routes of pulls from the Hugging Face Hub, and their `modelPull` events (without
    pulls: an empty list, and a pull refused with what to do)."""
    if pulls is None:
        api.include_router(create_no_pull_router())
        return
    pulls.on_change(lambda pull: hub.publish(MODEL_PULL_EVENT, pull))
    api.include_router(create_pull_router(herd, pulls, reload))


def _guarded(asgi: ASGIApp, access: AccessPolicy, *, loopback_only: bool) -> ASGIApp:
    """Outermost first: the browser checks, CORS (a preflight carries no key), the keys. The
    key check is always in the chain (it passes everything on while there are no keys): a
    reload may add keys to the ring it holds."""
    asgi = AccessGuard(asgi, access.keys, metrics_public=access.metrics_public)
    if access.cors_allowed_origins:
        asgi = CORSMiddleware(
            asgi,
            allow_origins=list(access.cors_allowed_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "x-api-key", "content-type"],
            expose_headers=["retry-after"],
            max_age=600,
        )
    return BrowserGuard(
        asgi,
        loopback_only=loopback_only,
        allowed_origins=frozenset(access.cors_allowed_origins),
    )


def _follow_peers(herd: Herd, cluster: Cluster) -> None:
    """A front: llamaModels shows its peers and their models too, and follows them live."""
    cluster.on_change(herd.notify_changed)
    herd.peers_view = lambda: {"peers": cluster.hosts(), "peerModels": cluster.peer_models()}
    cluster.start()


def _mount_metrics(api: FastAPI, telemetry: Telemetry, cluster: Cluster | None) -> None:
    metrics = telemetry.metrics
    assert metrics is not None

    @api.get("/metrics", tags=["status"], response_class=Response)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text: llamaherd_* series with a `model` label, and every running
        llama-server's own llamacpp:* series, re-exported with a `model` label. On a front,
        every reachable peer's series too, with a `peer` label (its own have none), and
        `llamaherd_peer_up` per peer."""
        own = await metrics.render()
        if cluster is None or HOP_HEADER in request.headers:  # a front asks for ours alone
            return Response(own, media_type=CONTENT_TYPE)
        merged = await with_peer_metrics(cluster, own, metrics.scrape_timeout_s)
        return Response(merged, media_type=CONTENT_TYPE)


def _mount_dashboard(api: FastAPI) -> None:
    """The built dashboard: index.html at `/`, Vite's hashed files under `/assets`.

    Not one catch-all mount at `/`: that would answer 404 for a wrong method on an API path
    instead of 405, and hide the API's own errors."""
    index = STATIC_DIR / "index.html"
    if not index.is_file():

        @api.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def no_dashboard() -> str:
            return NO_DASHBOARD

        return

    @api.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    if (STATIC_DIR / "assets").is_dir():
        api.mount("/assets", StaticFiles(directory=STATIC_DIR / "assets"), name="assets")
    top_level = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p != index}

    @api.get("/{name}", include_in_schema=False)
    async def static_file(name: str) -> FileResponse:
        if name not in top_level:
            raise HTTPException(404, f"no such page: /{name}")
        return FileResponse(top_level[name])
