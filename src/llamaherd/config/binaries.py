"""Which llama-server to run: the config's, $LLAMA_SERVER, PATH, or the one that
scripts/build-llama-server built and cached."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from llamaherd.errors import BinaryNotFoundError

LLAMA_CPP_SOURCE_PIN = "11434.0.0"  # keep in step with scripts/build-llama-server


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
