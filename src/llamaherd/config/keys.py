"""The API keys llamaherd serve accepts, read from the config and the environment, and checked:
long enough, fit for an HTTP header, each named once and each distinct. Keys are never echoed."""

from __future__ import annotations

import os
from typing import Literal

from llamaherd.config.defaults import ENV_API_KEY
from llamaherd.config.settings import Settings
from llamaherd.errors import ConfigError

MIN_KEY_CHARS = 16
KEY_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' makes a good one"


def api_key_secrets(
    settings: Settings, environ: dict[str, str] | None = None
) -> list[tuple[str, str, tuple[Literal["inference", "admin"], ...]]]:
    """(name, key, scopes) of every key llamaherd serve accepts: `api_keys` (reading each
    `key_env`) and LLAMAHERD_API_KEY (named so, with every scope). A ConfigError names the
    entry, never the key."""
    env = os.environ if environ is None else environ
    found: list[tuple[str, str, tuple[Literal["inference", "admin"], ...]]] = []
    for index, entry in enumerate(settings.api_keys):
        where = f"api_keys[{index}] ({entry.name})"
        if entry.key is not None:
            secret = entry.key.get_secret_value()
        else:
            secret = env.get(entry.key_env or "", "")
            if not secret:
                raise ConfigError(
                    f"{where}: key_env: the environment variable {entry.key_env} is not set or "
                    "empty; export it before starting llamaherd"
                )
        found.append((entry.name, _checked_key(where, secret), entry.scopes))
    if env.get(ENV_API_KEY):
        found.append((ENV_API_KEY, _checked_key(ENV_API_KEY, env[ENV_API_KEY]), ("admin",)))
    names = [name for name, _, _ in found]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"api_keys: two keys are named {twice[0]!r}; give each key its own name")
    secrets = [secret for _, secret, _ in found]
    if len(set(secrets)) < len(secrets):
        raise ConfigError(
            "api_keys: two entries hold the same key, so llamaherd could not tell which one "
            "was used; give each client its own key"
        )
    return found


def _checked_key(where: str, secret: str) -> str:
    if len(secret) < MIN_KEY_CHARS:
        raise ConfigError(
            f"{where}: the key is {len(secret)} characters long; use at least "
            f"{MIN_KEY_CHARS} ({KEY_HINT})"
        )
    if not secret.isascii() or not secret.isprintable() or " " in secret:
        raise ConfigError(
            f"{where}: the key holds spaces, control or non-ASCII characters, which an HTTP "
            f"header cannot carry; use letters, digits and -._~+/= ({KEY_HINT})"
        )
    return secret
