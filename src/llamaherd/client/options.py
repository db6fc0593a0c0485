"""Options shared by the commands that talk to a running llamaherd."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamaherd.config.defaults import DEFAULT_CONFIG_NAME, DEFAULT_URL


def remote_options(config_use: str = "to take the address from") -> argparse.ArgumentParser:
    """--url and --config, as a parent parser; `config_use` says what the config is read for."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help=f"llamaherd's address (default: http://app_host:app_port from --config, "
        f"or {DEFAULT_URL} without a config file)",
    )
    common.add_argument(
        "--config",
        type=Path,
        default=Path(DEFAULT_CONFIG_NAME),
        help=f"JSON config file {config_use} (default: ./{DEFAULT_CONFIG_NAME})",
    )
    return common
