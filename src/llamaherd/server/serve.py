"""`llamaherd serve`: the supervisor and the API in one process, run by uvicorn.

uvicorn owns the signals: on Ctrl-C or SIGTERM it stops accepting, ends open event streams,
lets requests finish, then runs the app's shutdown, which stops llama-server gracefully
(SIGTERM, then SIGKILL after stop_timeout_s). A second Ctrl-C forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import logging.handlers
import math
import queue
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import Any, Literal

import uvicorn

from llamaherd.api.access import AccessPolicy
from llamaherd.api.app import Application, create_app
from llamaherd.api.connections import ConnectionLimits, guarded_http_protocol
from llamaherd.api.guard import is_loopback
from llamaherd.api.handshakes import HandshakeLimits
from llamaherd.config.places import notify_socket, state_dir
from llamaherd.config.settings import Settings
from llamaherd.errors import ConfigError, PortInUseError
from llamaherd.server.notify import Notifier
from llamaherd.server.pulls import model_pulls
from llamaherd.server.reload import ConfigReloader, ConfigSource
from llamaherd.store.lock import hold_state_dir
from llamaherd.telemetry.assembly import Telemetry
from llamaherd.wiring.build import (
    access_policy,
    build_cluster,
    build_herd,
    check_exposure,
    request_limits,
    telemetry_options,
)

logger = logging.getLogger("llamaherd")
DRAIN_MARGIN_S = 10.0


class _Server(uvicorn.Server):
    """uvicorn, with llamaherd's life around it:

    - SIGHUP reloads the config (and, with watch_config, a change of the file does);
    - SIGTERM or Ctrl-C drains: no new connection, event streams end, requests in flight get
      up to `drain_s` to finish; then (or at a second signal) every llama-server is stopped,
      so what is still in flight ends with a clear error, not a cut connection; then the
      app's shutdown runs.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        application: Application,
        *,
        reloader: ConfigReloader | None = None,
        drain_s: float = 30.0,
    ) -> None:
        super().__init__(config)
        self._application = application
        self._reloader = reloader
        self._drain_s = drain_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cut: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self._reloader is not None and self.started:
            self._spawn(self._reloader.watch())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._application.hub.close_streams()
        logger.info(
            "stopping: requests in flight have up to %g s to finish (shutdown_drain_s); a "
            "second signal stops every llama-server now",
            self._drain_s,
        )
        deadline = asyncio.get_running_loop().call_later(self._drain_s, self._stop_servers)
        try:
            await super().shutdown(sockets)
        finally:
            deadline.cancel()
            if self._cut is not None:
                await asyncio.gather(self._cut, return_exceptions=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig in (signal.SIGINT, signal.SIGTERM):
            # The second signal: not uvicorn's force exit, which would skip the shutdown and
            # cut every connection; stop the servers now, so requests end clearly.
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._stop_servers)
            return
        super().handle_exit(sig, frame)

    def _stop_servers(self) -> None:
        if self._cut is None:
            logger.warning("stopping every llama-server now; requests in flight end with an error")
            self._cut = asyncio.get_running_loop().create_task(self._application.herd.stop_all())

    def _on_hangup(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and self._reloader is not None:
            self._loop.call_soon_threadsafe(self._reload, "SIGHUP")

    def _reload(self, trigger: str) -> None:
        assert self._reloader is not None
        self._spawn(self._reloader.reload(trigger))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # systemd's notify socket (deploy/systemd/llamaherd.service); run_serve sets it.
    notifier = Notifier(None)

    async def main_loop(self) -> None:
        # uvicorn runs its main loop once startup has bound every socket, and leaves it when it
        # begins to stop: READY=1 means it serves, STOPPING=1 comes before the drain.
        self.notifier.ready(f"serving on http://{self.config.host}:{self.config.port}")
        try:
            await super().main_loop()
        finally:
            self.notifier.stopping("stopping: draining requests, then every llama-server")

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            with super().capture_signals():
                yield
                # uvicorn re-raises the signal after shutdown, so the process would die of
                # it. A stop on request that went well is a success: exit 0.
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()
        finally:
            signal.signal(signal.SIGHUP, previous)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"cannot listen on {host}:{port} ({exc.strerror}): another program uses "
                    "it. Stop it, or choose another port with --port or app_port in the config."
                ) from None
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}). Use an address of "
                "this machine with --host or app_host, e.g. 127.0.0.1."
            ) from None


class _LogFile(logging.handlers.RotatingFileHandler):
    """llamaherd's own log file. When the disk refuses a line (full, read-only, gone), logging's
    default is "--- Logging error ---" and a traceback on stderr for every line: a full disk
    would bury the console. Instead this says so once, drops lines while it fails, and says
    when it writes again. The console log goes on either way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._failing = False
        self._failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)  # its errors come to handleError
        if self._failing and not self._failed_now:
            self._failing = False
            sys.stderr.write(f"llamaherd: writing its log file {self.baseFilename} again\n")

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed_now = True
        if self._failing:
            return
        self._failing = True
        exc = sys.exc_info()[1]
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        sys.stderr.write(
            f"llamaherd: cannot write its log file {self.baseFilename} ({reason}); its lines "
            "are dropped until it can write again (the console log goes on)\n"
        )


@contextlib.contextmanager
def _own_log_file(settings: Settings) -> Iterator[None]:
    """llamaherd's own log, rotated, next to the models' log files (state_dir/logs/). Written by
    a thread behind a queue: the event loop never waits for the disk."""
    if settings.log_file_max_bytes <= 0:
        yield
        return
    path = state_dir(settings) / "logs" / "llamaherd.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _LogFile(
            path, maxBytes=settings.log_file_max_bytes, backupCount=settings.log_file_count
        )
    except OSError as exc:
        logger.warning("not writing llamaherd's log to %s: %s", path, exc.strerror or exc)
        yield
        return
    file_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queue_handler = logging.handlers.QueueHandler(records)
    listener = logging.handlers.QueueListener(records, file_handler)
    root = logging.getLogger()
    root.addHandler(queue_handler)
    listener.start()
    try:
        yield
    finally:
        root.removeHandler(queue_handler)
        listener.stop()
        file_handler.close()


def _http_protocol(settings: Settings) -> type[asyncio.Protocol] | Literal["auto"]:
    """uvicorn's httptools protocol with the connection caps, the header and body timeouts."""
    limits = ConnectionLimits(
        max_connections=settings.max_connections,
        max_per_client=settings.max_connections_per_client,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
    )
    try:
        return guarded_http_protocol(limits)
    except ImportError as exc:
        logger.warning("no connection caps, header or body timeout: %s", exc)
        return "auto"


def _log_access(settings: Settings, access: AccessPolicy) -> None:
    """Who may call llamaherd, said once at start: key names and scopes, never keys."""
    if access.keys:
        logger.info("API keys required: %s", access.keys.describe())
    elif is_loopback(settings.app_host):
        logger.info("no API keys: serving this machine only (%s)", settings.app_host)
    else:
        logger.warning(
            "no API keys, and listening on %s (--unsafe-expose-without-keys): anyone who can "
            "reach this address can use, stop and swap its models",
            settings.app_host,
        )


def _hold_state_dir(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """The state folder, for this llamaherd alone while it writes there (history, log files):
    a second one on the same folder refuses to start, naming this one's pid."""
    if settings.history_enabled or settings.log_file_max_bytes > 0:
        return hold_state_dir(state_dir(settings))
    return contextlib.nullcontext()


def run_serve(settings: Settings, source: ConfigSource | None = None) -> int:
    """Serve until stopped. `source`: the config file (and command-line overrides) that
    SIGHUP, `llamaherd reload`, POST /api/config/reload and watch_config read again."""
    with _hold_state_dir(settings), _own_log_file(settings):
        return _serve(settings, source)


def _serve(settings: Settings, source: ConfigSource | None) -> int:
    access = access_policy(settings)
    check_exposure(settings, access)
    _check_port_free(settings.app_host, settings.app_port)
    herd = build_herd(settings)
    telemetry = Telemetry(herd, telemetry_options(settings))
    reloader = None if source is None else ConfigReloader(source, settings, herd, access)
    application = create_app(
        herd,
        reload=None if reloader is None else reloader.reload,
        cluster=build_cluster(settings, herd),
        pulls=model_pulls(settings, reloader),
        loopback_only=is_loopback(settings.app_host),
        telemetry=telemetry,
        access=access,
        limits=request_limits(settings),
        handshakes=HandshakeLimits(
            max_total=settings.max_socketio_pending,
            max_per_client=settings.max_socketio_pending_per_client,
            connect_timeout_s=settings.socketio_connect_timeout_s,
        ),
    )
    config = uvicorn.Config(
        application.asgi,
        host=settings.app_host,
        port=settings.app_port,
        # None: uvicorn's lines go through our logging set-up, in the same format as ours.
        log_config=None,
        access_log=False,
        lifespan="on",
        # "auto" takes uvloop and httptools, which llamaherd depends on (where they exist):
        # the event loop and the HTTP parser are most of the gateway's cost per request.
        loop="auto",
        http=_http_protocol(settings),
        # A proxied answer carries llama-server's own Server and Date headers; uvicorn's
        # would make two of each.
        server_header=False,
        date_header=False,
        # No X-Forwarded-* rewriting: llamaherd trusts no proxy in front of it (keys and
        # connection caps go by the TCP peer), and the middleware is one more ASGI layer on
        # every request.
        proxy_headers=False,
        # The drain, then a few seconds for what the servers' stop ends (see _Server).
        timeout_graceful_shutdown=math.ceil(settings.shutdown_drain_s + DRAIN_MARGIN_S),
        timeout_keep_alive=settings.idle_timeout_s,
    )
    server = _Server(config, application, reloader=reloader, drain_s=settings.shutdown_drain_s)
    logger.info(
        "llamaherd on http://%s:%d serving %s",
        settings.app_host,
        settings.app_port,
        ", ".join(
            f"{model} (llama-server on {backend.base_url})"
            for model, backend in herd.backends.items()
        ),
    )
    _log_access(settings, access)
    server.notifier = Notifier(notify_socket())
    server.run()
    return 0 if server.started else 1
