"""Settings: one typed, frozen object, filled from the JSON config file and the command line.

The seed's file keeps working exactly as written:

    {"llama_server_host": "localhost", "llama_server_port": 8134,
     "llama_model_path": "./models/your-model.gguf"}

Every other key is optional (see `Settings`). Relative paths are resolved against the folder of
the config file, so `llamaherd serve --config some/dir/.llama-proxy-config.json` works from
anywhere. The rest of the package reads what is not in the file: API keys (keys.py), where the
state goes (places.py), which llama-server to run (binaries.py), and the defaults the command
line knows without loading pydantic (defaults.py); messages.py says what a wrong value is.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from llamaherd.catalog.gguf import read_gguf_summary
from llamaherd.config.binaries import locate_llama_server
from llamaherd.config.defaults import DEFAULT_CONFIG_NAME
from llamaherd.config.messages import unknown_key_message, validation_message
from llamaherd.errors import BinaryNotFoundError, ConfigError, ModelFileError
from llamaherd.supervisor.policy import POLICY_BOUNDS, SupervisorPolicy

# A config is a few hundred bytes; reading /dev/zero by mistake must not eat the memory.
MAX_CONFIG_BYTES = 1024 * 1024
DEMO_MODEL_HINT = (
    "Point it at a GGUF model file, or make a tiny demo model with "
    "`llamaherd demo-model ./models/demo.gguf`."
)

_POLICY_DEFAULTS = {field.name: field.default for field in fields(SupervisorPolicy)}


def _policy_key(name: str) -> Any:
    """The Field of the supervisor's number `name`: default and bounds are the policy's own,
    so no number is declared twice (POLICY_BOUNDS in supervisor/policy.py)."""
    low, high = POLICY_BOUNDS[name]
    return Field(default=_POLICY_DEFAULTS[name], ge=low, le=high)


def _not_blank(host: str) -> str:
    # An empty --host means "every interface" to uvicorn and "no address" to llama-server:
    # neither is what someone who left the value empty meant.
    if not host.strip():
        raise PydanticCustomError("blank_host", "an empty host is a mistake")
    return host


def _no_nul(value: Any) -> Any:
    # A NUL cannot be passed to the OS (open, exec); say so here rather than with a traceback.
    if "\0" in str(value):
        raise PydanticCustomError("nul_character", "it contains a NUL character (\\0)")
    return value


Port = Annotated[int, Field(ge=1, le=65535)]
Host = Annotated[str, AfterValidator(_not_blank)]
FilePath = Annotated[Path, AfterValidator(_no_nul)]
Argument = Annotated[str, AfterValidator(_no_nul)]


class ModelEntry(BaseModel):
    """One entry of `models`: how to serve one model file (see the README's Models section)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    path: FilePath
    args: tuple[Argument, ...] = ()
    aliases: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    ttl_s: Annotated[float, Field(gt=0, le=365 * 86400)] | None = None
    pinned: StrictBool = False
    max_concurrency: Annotated[StrictInt, Field(ge=1, le=4096)] | None = None
    port: Port | None = None
    preload: StrictBool = False


class CrashLoopRule(BaseModel):
    """`alerts.crash_loop`: this many crashes of one model within `within_s` is a crash loop."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    crashes: Annotated[StrictInt, Field(ge=2, le=1000)] = 3
    within_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 300.0


class AlertSettings(BaseModel):
    """`alerts`: where to say that a model failed, crash-loops, or recovered."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    webhooks: tuple[Annotated[str, Field(pattern=r"^https?://")], ...] = ()
    command: tuple[Argument, ...] = ()  # an argument list, run without a shell
    crash_loop: CrashLoopRule = CrashLoopRule()
    min_interval_s: Annotated[float, Field(ge=0, le=86400)] = 300.0  # per model and event
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0  # one delivery attempt
    retries: Annotated[StrictInt, Field(ge=0, le=20)] = 3


class ApiKeyEntry(BaseModel):
    """One entry of `api_keys`: a named key, written here or kept in an environment variable,
    and what it may do (README "Security")."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
    key: SecretStr | None = None
    key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    scopes: Annotated[tuple[Literal["inference", "admin"], ...], Field(min_length=1)] = (
        "inference",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeyEntry:
        if (self.key is None) == (self.key_env is None):
            raise PydanticCustomError(
                "key_source", "give exactly one of key and key_env (the name of a variable)"
            )
        return self


class PeerEntry(BaseModel):
    """One entry of `peers`: another llamaherd whose models this one serves too (README "Many
    machines"). Its admin key, written here or kept in an environment variable, or none for
    a peer without keys (on loopback)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    url: Annotated[str, Field(pattern=r"^https?://[^/?#\s]+/?$")]
    key: SecretStr | None = None
    key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PeerEntry:
        if self.key is not None and self.key_env is not None:
            raise PydanticCustomError(
                "key_source", "give at most one of key and key_env (the name of a variable)"
            )
        return self


class Settings(BaseModel):
    """Everything llamaherd can be told. Keys are the JSON config's keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # The seed's keys.
    llama_server_host: Host = "127.0.0.1"
    llama_server_port: Port = 8134
    llama_model_path: FilePath | None = None
    # How to run llama-server.
    llama_server_binary: FilePath | None = None
    llama_server_args: tuple[Argument, ...] = ()
    # The supervisor's numbers: defaults and bounds are SupervisorPolicy's and POLICY_BOUNDS.
    max_retries: int = _policy_key("max_retries")
    backoff_initial_ms: int = _policy_key("backoff_initial_ms")
    backoff_max_ms: int = _policy_key("backoff_max_ms")
    health_timeout_ms: int = _policy_key("health_timeout_ms")
    readiness_initial_ms: int = _policy_key("readiness_initial_ms")
    readiness_interval_ms: int = _policy_key("readiness_interval_ms")
    readiness_max_attempts: int = _policy_key("readiness_max_attempts")
    liveness_interval_ms: int = _policy_key("liveness_interval_ms")
    liveness_failures: int = _policy_key("liveness_failures")
    stable_after_s: float = _policy_key("stable_after_s")
    stop_timeout_s: float = _policy_key("stop_timeout_s")
    log_lines: int = _policy_key("log_lines")
    # llamaherd's own HTTP service.
    app_host: Host = "127.0.0.1"
    app_port: Port = 3000
    # The gateway: which models, how many at once, how long requests may wait.
    models: dict[Annotated[str, Field(min_length=1)], ModelEntry] = {}
    models_dir: FilePath | None = None
    default_model: str | None = None
    max_loaded: Annotated[int, Field(ge=1, le=256)] = 1
    memory_budget_mb: Annotated[float, Field(gt=0)] | None = None
    queue_depth: Annotated[int, Field(ge=0, le=1_000_000)] = 64
    queue_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 120.0
    failure_cooldown_s: Annotated[float, Field(ge=0, le=86400)] = 30.0
    # Serving as a service: models loaded at start (in order), config reloads, the drain.
    preload: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    watch_config: StrictBool = False
    shutdown_drain_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    # Many machines: other llamaherds whose models this one serves too (README "Many
    # machines"), listed, or found as the targets of a DNS SRV name (a Kubernetes headless
    # Service), with one admin key for those (peers_dns_key_env).
    peers: tuple[PeerEntry, ...] = ()
    peers_dns: (
        Annotated[str, Field(pattern=r"^_[A-Za-z0-9-]+\._(tcp|udp)\.[A-Za-z0-9.-]+[A-Za-z0-9.]$")]
        | None
    ) = None
    peers_dns_interval_s: Annotated[float, Field(ge=1, le=3600)] = 10.0
    peers_dns_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    peers_dns_server: Annotated[str, Field(pattern=r"^[0-9a-fA-F.:\[\]]+(:[0-9]+)?$")] | None = None
    # Observability: measurements, history, log files, alerts.
    metrics_enabled: StrictBool = True
    history_enabled: StrictBool = True
    state_dir: FilePath | None = None  # default: $XDG_STATE_HOME/llamaherd or ~/.local/state/…
    history_retention_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    history_requests_kept: Annotated[int, Field(ge=0, le=10_000_000)] = 10_000
    log_file_max_bytes: Annotated[int, Field(ge=0, le=2**40)] = 10 * 1024 * 1024  # 0: no files
    log_file_count: Annotated[int, Field(ge=1, le=1000)] = 5
    alerts: AlertSettings = AlertSettings()
    # Access: who may call what (README "Security").
    api_keys: tuple[ApiKeyEntry, ...] = ()
    metrics_public: StrictBool = False  # /metrics without a key, for a scraper on the network
    cors_allowed_origins: tuple[Annotated[str, Field(pattern=r"^https?://[^/\s]+$")], ...] = ()
    unsafe_expose_without_keys: StrictBool = False
    # What one client may cost: a request's body, how long it may take to send, connections.
    max_body_mb: Annotated[float, Field(gt=0, le=4096)] = 16.0
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    header_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    idle_timeout_s: Annotated[int, Field(ge=1, le=3600)] = 5  # a kept-alive connection, unused
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    max_connections_per_client: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    # Socket.IO sessions between their handshake and an authorized connect (api/handshakes.py).
    max_socketio_pending: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    max_socketio_pending_per_client: Annotated[int, Field(ge=1, le=1_000_000)] = 32
    socketio_connect_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0

    def supervisor_policy(self) -> SupervisorPolicy:
        # Every policy number has a config key of the same name (a new one without a key
        # fails here at once rather than being silently unconfigurable).
        values = {field.name: getattr(self, field.name) for field in fields(SupervisorPolicy)}
        return SupervisorPolicy(**values)


def load_config(
    path: str | Path = DEFAULT_CONFIG_NAME,
    *,
    overrides: dict[str, Any] | None = None,
    check_files: bool = True,
) -> Settings:
    """Read, validate and resolve a config file; raises ConfigError naming the key and the fix."""
    path = Path(path)
    raw = _read_json(path)
    raw.update(overrides or {})
    settings = settings_from_mapping(raw, source=str(path))
    settings = _resolve_paths(settings, path.parent)
    if check_files:
        check_settings_files(settings, source=str(path))
    return settings


def _read_json(path: Path) -> dict[str, Any]:
    """The config file's JSON object; every way it can be unreadable is one ConfigError line."""
    try:
        with path.open("rb") as file:
            content = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found. Create it, for example:\n"
            '  {"llama_server_host": "127.0.0.1", "llama_server_port": 8134, '
            '"llama_model_path": "./models/your-model.gguf"}\n'
            "or pass --config PATH."
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(content) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB, too large to be a llamaherd "
            "config (a few hundred bytes of JSON); check --config"
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at position "
            f"{exc.start}; save it as UTF-8 (JSON files are UTF-8)"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{path} is nested too deeply to read (lists or objects inside each other about a "
            "thousand deep); a config is one object of keys and plain values"
        ) from None
    except ValueError as exc:  # e.g. a number of more than 4300 digits
        reason = str(exc).split(";")[0]
        raise ConfigError(f"{path} is not valid JSON: {reason[:1].lower()}{reason[1:]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object ({{...}}), not {type(data).__name__}")
    return data


def settings_from_mapping(raw: dict[str, Any], *, source: str = "config") -> Settings:
    """Validate a mapping of config keys; JSON lists become tuples, strings become paths."""
    unknown = sorted(set(raw) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(
            "; ".join(
                unknown_key_message(key, source, list(Settings.model_fields)) for key in unknown
            )
        )
    data = {key: _coerce(key, value) for key, value in raw.items()}
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, source)) from None


def _coerce(key: str, value: Any) -> Any:
    annotation = str(Settings.model_fields[key].annotation)
    if "Path" in annotation and isinstance(value, str):
        return Path(value).expanduser()
    if "tuple" in annotation and isinstance(value, list):
        return tuple(value)
    if "float" in annotation and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # 10**400: pydantic's bound check names it as it is
            return value
    return value


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Relative paths are the config file's folder's, wherever llamaherd was started."""
    changes: dict[str, Any] = {}
    for key in ("llama_model_path", "llama_server_binary", "models_dir", "state_dir"):
        value = getattr(settings, key)
        if value is not None and not value.is_absolute():
            changes[key] = (base / value).resolve()
    if any(not entry.path.is_absolute() for entry in settings.models.values()):
        changes["models"] = {
            name: entry
            if entry.path.is_absolute()
            else entry.model_copy(update={"path": (base / entry.path).resolve()})
            for name, entry in settings.models.items()
        }
    return settings.model_copy(update=changes) if changes else settings


def check_settings_files(settings: Settings, *, source: str = "config") -> None:
    """The model file must be a readable GGUF and the binary must exist before anything starts.

    The model's header is read here (a directory, random bytes, a truncated or unreadable file),
    so a wrong file is one line now rather than a crash loop of llama-server launches.
    """
    model = settings.llama_model_path
    if model is not None:
        try:
            read_gguf_summary(model)
        except ModelFileError as exc:
            reason = str(exc).rstrip(".")
            raise ConfigError(
                f"{source}: llama_model_path: {reason[:1].lower()}{reason[1:]}. {DEMO_MODEL_HINT}"
            ) from None
    try:
        locate_llama_server(settings.llama_server_binary)
    except BinaryNotFoundError as exc:
        raise ConfigError(f"{source}: llama_server_binary: {exc}") from None
