"""What the command line needs before it has loaded anything: the config file's name, the
address of a llamaherd that runs with the defaults, and the key it sends. Nothing heavy is
imported here: `llamaherd --version` builds its parser from these, and `llamaherd status --url`
must not pay for the server or for validating a config with pydantic (bench/cli_startup.py).
With config/settings.py and its neighbours, the only modules that read the environment."""

from __future__ import annotations

import os

DEFAULT_CONFIG_NAME = ".llama-proxy-config.json"
DEFAULT_URL = "http://127.0.0.1:3000"  # app_host and app_port as config.Settings has them
ENV_API_KEY = "LLAMAHERD_API_KEY"  # a key with every scope, for serve and for the CLI


def client_api_key() -> str | None:
    """The key the command line sends to a llamaherd that asks for one."""
    return os.environ.get(ENV_API_KEY) or None


HUB_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    """The Hugging Face Hub that `llamaherd pull` downloads from: $HF_ENDPOINT (a mirror, or a
    test's own hub), else huggingface.co. Read at each call, not once at import."""
    return (os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT).rstrip("/")


def hub_token() -> str | None:
    """$HF_TOKEN, for gated and private repositories; None lets huggingface_hub use the token
    of `hf auth login`, if any. Never logged."""
    return os.environ.get("HF_TOKEN") or None
