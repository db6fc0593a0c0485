"""Settings: one typed, frozen object, filled from the JSON config file and the command line.

The seed's file keeps working exactly as written:

    {"llama_server_host": "localhost", "llama_server_port": 8134,
     "llama_model_path": "./models/your-model.gguf"}

Every other key is optional (see `Settings`). Relative paths are resolved against the folder of
the config file, so `llamaherd serve --config some/dir/.llama-proxy-config.json` works from
anywhere. This is the only module that reads the environment.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llamaherd.errors import BinaryNotFoundError, ConfigError
from llamaherd.supervisor.policy import SupervisorPolicy

DEFAULT_CONFIG_NAME = ".llama-proxy-config.json"
LLAMA_CPP_SOURCE_PIN = "11434.0.0"  # keep in step with scripts/build-llama-server

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveMs = Annotated[int, Field(ge=1)]


class Settings(BaseModel):
    """Everything llamaherd can be told. Keys are the JSON config's keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # The seed's keys.
    llama_server_host: str = "127.0.0.1"
    llama_server_port: Port = 8134
    llama_model_path: Path | None = None
    # How to run llama-server.
    llama_server_binary: Path | None = None
    llama_server_args: tuple[str, ...] = ()
    # The supervisor's numbers (see SupervisorPolicy).
    max_retries: Annotated[int, Field(ge=0, le=100)] = 5
    backoff_initial_ms: PositiveMs = 1000
    backoff_max_ms: PositiveMs = 30_000
    health_timeout_ms: PositiveMs = 5000
    readiness_initial_ms: PositiveMs = 50
    readiness_interval_ms: PositiveMs = 1000
    readiness_max_attempts: Annotated[int, Field(ge=1)] = 60
    liveness_interval_ms: PositiveMs = 5000
    liveness_failures: Annotated[int, Field(ge=1)] = 3
    stable_after_s: Annotated[float, Field(ge=0)] = 60.0
    stop_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    log_lines: Annotated[int, Field(ge=10)] = 2000
    # llamaherd's own HTTP service.
    app_host: str = "127.0.0.1"
    app_port: Port = 3000

    def supervisor_policy(self) -> SupervisorPolicy:
        # Every policy number has a config key of the same name (a new one without a key
        # fails here at once rather than being silently unconfigurable).
        values = {field.name: getattr(self, field.name) for field in fields(SupervisorPolicy)}
        return SupervisorPolicy(**values)


_FIXES = {
    "llama_server_port": "use a whole number from 1 to 65535, e.g. 8134",
    "app_port": "use a whole number from 1 to 65535, e.g. 3000",
    "llama_server_args": 'use a list of strings, e.g. ["--threads", "4"]',
    "llama_model_path": 'use a path to a .gguf file, e.g. "./models/model.gguf"',
    "llama_server_binary": 'use the path of an executable llama-server, e.g. "/opt/llama-server"',
}


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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found. Create it, for example:\n"
            '  {"llama_server_host": "127.0.0.1", "llama_server_port": 8134, '
            '"llama_model_path": "./models/your-model.gguf"}\n'
            "or pass --config PATH."
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object ({{...}}), not {type(data).__name__}")
    return data


def settings_from_mapping(raw: dict[str, Any], *, source: str = "config") -> Settings:
    """Validate a mapping of config keys; JSON lists become tuples, strings become paths."""
    unknown = sorted(set(raw) - set(Settings.model_fields))
    if unknown:
        raise ConfigError("; ".join(_unknown_key_message(key, source) for key in unknown))
    data = {key: _coerce(key, value) for key, value in raw.items()}
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, source)) from None


def _coerce(key: str, value: Any) -> Any:
    annotation = str(Settings.model_fields[key].annotation)
    if "Path" in annotation and isinstance(value, str):
        return Path(value).expanduser()
    if "tuple" in annotation and isinstance(value, list):
        return tuple(value)
    if "float" in annotation and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _unknown_key_message(key: str, source: str) -> str:
    close = difflib.get_close_matches(key, list(Settings.model_fields), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "remove it"
    return f"{source}: unknown key {key!r}: {hint} (known keys: {', '.join(Settings.model_fields)})"


def _validation_message(exc: ValidationError, source: str) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"][:1]) or "config"
        got = error.get("input")
        fix = _FIXES.get(key, "")
        problems.append(
            f"{source}: {key}: {error['msg'].lower()} (got {got!r})" + (f"; {fix}" if fix else "")
        )
    return "\n".join(problems)


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    changes: dict[str, Path] = {}
    for key in ("llama_model_path", "llama_server_binary"):
        value = getattr(settings, key)
        if value is not None and not value.is_absolute():
            changes[key] = (base / value).resolve()
    return settings.model_copy(update=changes) if changes else settings


def check_settings_files(settings: Settings, *, source: str = "config") -> None:
    """The model file and the binary must exist before anything starts."""
    model = settings.llama_model_path
    if model is not None and not model.is_file():
        raise ConfigError(
            f"{source}: llama_model_path: {model} does not exist. Point it at a .gguf file, "
            "or make a tiny demo model with `llamaherd demo-model ./models/demo.gguf`."
        )
    try:
        locate_llama_server(settings.llama_server_binary)
    except BinaryNotFoundError as exc:
        raise ConfigError(f"{source}: llama_server_binary: {exc}") from None


def cache_dir() -> Path:
    """Where scripts/build-llama-server keeps its build (LLAMAHERD_CACHE overrides)."""
    env = os.environ.get("LLAMAHERD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llamaherd"


def cached_llama_server() -> Path:
    return cache_dir() / f"llama-server-{LLAMA_CPP_SOURCE_PIN}" / "bin" / "llama-server"


def locate_llama_server(explicit: str | Path | None = None) -> Path:
    """The llama-server to run: the config's, else $LLAMA_SERVER, else PATH, else the cache."""
    if explicit is not None:
        return _check_executable(Path(explicit), "the configured llama_server_binary")
    env = os.environ.get("LLAMA_SERVER")
    if env:
        return _check_executable(Path(env), "LLAMA_SERVER")
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    cached = cached_llama_server()
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    raise BinaryNotFoundError(
        "no llama-server found: not in the config (llama_server_binary), not in LLAMA_SERVER, "
        f"not on PATH, not in {cached}. Build one with scripts/build-llama-server."
    )


def _check_executable(path: Path, origin: str) -> Path:
    if not path.exists():
        raise BinaryNotFoundError(f"{origin} {path} does not exist")
    if path.is_dir() or not os.access(path, os.X_OK):
        raise BinaryNotFoundError(f"{origin} {path} is not an executable file (chmod +x it?)")
    return path
