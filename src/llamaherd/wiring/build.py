"""Building the running objects from the settings: the one place that knows both.

The supervisor knows nothing of the config file; whoever reads the config builds the services
and hands them over (the layers: docs/architecture.md). The llama-server binary is found here, once,
before a service exists, so the supervisor never reads the environment.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from llamaherd.api.access import AccessPolicy, KeyRing
from llamaherd.api.guard import is_loopback
from llamaherd.cluster.front import Cluster
from llamaherd.cluster.peers import Peer
from llamaherd.config.binaries import locate_llama_server
from llamaherd.config.defaults import ENV_API_KEY
from llamaherd.config.keys import api_key_secrets
from llamaherd.config.model_specs import build_registry
from llamaherd.config.places import state_dir
from llamaherd.config.settings import PeerEntry, Settings
from llamaherd.errors import ConfigError
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.registry import ModelRegistry, ModelSpec
from llamaherd.gateway.route import RequestLimits
from llamaherd.gateway.scheduler import Limits
from llamaherd.supervisor.service import LlamaService
from llamaherd.telemetry.assembly import TelemetryOptions


def build_service(settings: Settings) -> LlamaService:
    """The LlamaService for the config's llama-server (`llama_model_path` on `llama_server_port`).

    Raises BinaryNotFoundError when no llama-server can be found."""
    return LlamaService(
        host=settings.llama_server_host,
        port=settings.llama_server_port,
        model_path=settings.llama_model_path,
        server_args=settings.llama_server_args,
        binary=locate_llama_server(settings.llama_server_binary),
        policy=settings.supervisor_policy(),
    )


def build_herd(settings: Settings, *, source: str = "config") -> Herd:
    """Every configured model, each with its own supervised llama-server, and the scheduler
    that shares them out. Raises ConfigError or BinaryNotFoundError."""
    registry = build_registry(settings, source=source)
    return Herd(registry, build_services(settings, registry), herd_limits(settings))


def build_services(
    settings: Settings, registry: ModelRegistry, keep_ports: Mapping[str, int] | None = None
) -> dict[str, LlamaService]:
    """A LlamaService (not started) per model of `registry`. `keep_ports`: the ports that
    models already running keep when the config names none for them (a reload must not move
    a server only because a free port is chosen again). Raises BinaryNotFoundError."""
    binary = locate_llama_server(settings.llama_server_binary)
    ports = _assign_ports(registry, settings, keep_ports or {})
    return {spec.id: _service(settings, spec, ports[spec.id], binary) for spec in registry}


def herd_limits(settings: Settings) -> Limits:
    return Limits(
        max_loaded=settings.max_loaded,
        memory_budget_mb=settings.memory_budget_mb,
        queue_depth=settings.queue_depth,
        queue_timeout_s=settings.queue_timeout_s,
        failure_cooldown_s=settings.failure_cooldown_s,
    )


def _service(settings: Settings, spec: ModelSpec, port: int, binary: Path) -> LlamaService:
    return LlamaService(
        host=settings.llama_server_host,
        port=port,
        model_path=spec.path,
        # --metrics: llama-server's own counters, readable at /upstream/{model}/metrics.
        server_args=(
            *spec.server_args,
            *_unless_given(spec.server_args, "--metrics"),
            *_alias(spec),
        ),
        binary=binary,
        policy=settings.supervisor_policy(),
    )


def _unless_given(args: tuple[str, ...], flag: str) -> tuple[str, ...]:
    return () if flag in args else (flag,)


def _alias(spec: ModelSpec) -> tuple[str, ...]:
    """`--alias ID`: llama-server names its model so in every answer ("model", streamed or
    not) and in its /v1/models, where it would otherwise give the file's path; clients see the
    id they use. Not when the args name an alias already, nor for an id llama-server would
    change (it splits the value at commas and strips spaces)."""
    given = any(arg in ("-a", "--alias") for arg in spec.server_args)
    if given or "," in spec.id or spec.id != spec.id.strip():
        return ()
    return ("--alias", spec.id)


def _assign_ports(
    registry: ModelRegistry, settings: Settings, keep: Mapping[str, int]
) -> dict[str, int]:
    """The seed's model (and a model without a file) keeps llama_server_port; a model with a
    `port` keeps it; a model in `keep` keeps that one; every other model gets a port that is
    free now, chosen by the OS."""
    taken = {settings.llama_server_port, settings.app_port}
    ports: dict[str, int] = {}
    for spec in registry:
        if spec.port is not None:
            ports[spec.id] = spec.port
        elif spec.path is None:
            ports[spec.id] = settings.llama_server_port
    taken |= set(ports.values())
    for spec in registry:
        port = keep.get(spec.id)
        if spec.id not in ports and port is not None and port not in taken:
            ports[spec.id] = port
            taken.add(port)
    for spec in registry:
        if spec.id not in ports:
            ports[spec.id] = _free_port(settings.llama_server_host, taken)
            taken.add(ports[spec.id])
    return ports


def _free_port(host: str, taken: set[int]) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family) as sock:
            sock.bind((host if host != "localhost" else "127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def telemetry_options(settings: Settings) -> TelemetryOptions:
    """What measures and records the herd: history in `state_dir/history.db`, one rotating
    log file per model in `state_dir/logs/`, alerts as configured."""
    folder = state_dir(settings)
    return TelemetryOptions(
        metrics=settings.metrics_enabled,
        history_path=folder / "history.db" if settings.history_enabled else None,
        retention_days=settings.history_retention_days,
        requests_kept=settings.history_requests_kept,
        log_folder=folder / "logs",
        log_max_bytes=settings.log_file_max_bytes,
        log_count=settings.log_file_count,
        alerts=settings.alerts,
    )


def access_policy(settings: Settings) -> AccessPolicy:
    """The keys (reading each key_env and LLAMAHERD_API_KEY), /metrics' exposure and CORS.
    Raises ConfigError naming a key entry that is missing or weak, never the key."""
    return AccessPolicy(
        keys=KeyRing(api_key_secrets(settings)),
        metrics_public=settings.metrics_public,
        # As written: the config's pattern allows no "/" at the end, as browsers send them.
        cors_allowed_origins=settings.cors_allowed_origins,
    )


def request_limits(settings: Settings) -> RequestLimits:
    return RequestLimits(
        body_limit=int(settings.max_body_mb * 1024 * 1024),
        body_timeout_s=settings.body_timeout_s,
    )


def check_exposure(settings: Settings, access: AccessPolicy) -> None:
    """Without keys, llamaherd serves loopback only: anyone who can reach another address
    could run, stop and swap models. Raises ConfigError unless told it is meant."""
    if access.keys or is_loopback(settings.app_host) or settings.unsafe_expose_without_keys:
        return
    raise ConfigError(
        f"refusing to listen on {settings.app_host} without API keys: anyone who can reach "
        "this machine could use, stop and swap its models. Add keys (api_keys in the config, "
        f"or set {ENV_API_KEY}), or listen on 127.0.0.1, or pass --unsafe-expose-without-keys "
        "if something in front of llamaherd (a firewall, a proxy) already controls access."
    )


def build_cluster(settings: Settings, herd: Herd) -> Cluster | None:
    """The peers this llamaherd serves models of (`peers`; `peers_dns` adds those it finds),
    or None when it has none. Raises ConfigError naming a peer whose key_env is unset."""
    if not settings.peers and not settings.peers_dns:
        return None
    cluster = Cluster(herd, [_peer(entry) for entry in settings.peers])
    if settings.peers_dns:
        env = settings.peers_dns_key_env
        key = os.environ.get(env) if env else None
        if env and not key:
            raise ConfigError(
                f"peers_dns_key_env: the environment variable {env} is not set or empty; export "
                "it (the workers' admin key) before starting llamaherd"
            )
        cluster.discover(
            settings.peers_dns,
            key=key,
            server=settings.peers_dns_server,
            interval_s=settings.peers_dns_interval_s,
        )
    return cluster


def _peer(entry: PeerEntry) -> Peer:
    key = entry.key.get_secret_value() if entry.key is not None else None
    if entry.key_env is not None:
        key = os.environ.get(entry.key_env) or None
        if key is None:
            raise ConfigError(
                f"peers ({entry.name}): key_env: the environment variable {entry.key_env} is not "
                "set or empty; export it (the peer's admin key) before starting llamaherd"
            )
    return Peer(name=entry.name, url=entry.url, key=key)
