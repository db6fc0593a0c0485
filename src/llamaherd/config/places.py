"""Where llamaherd keeps its state and whom it tells it is ready: from the config or the
environment (XDG_STATE_HOME, NOTIFY_SOCKET)."""

from __future__ import annotations

import os
from pathlib import Path

from llamaherd.config.settings import Settings


def state_dir(settings: Settings) -> Path:
    """Where llamaherd keeps its history and log files: `state_dir` from the config, else
    `$XDG_STATE_HOME/llamaherd`, else `~/.local/state/llamaherd`."""
    if settings.state_dir is not None:
        return settings.state_dir
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "llamaherd"


def notify_socket() -> str | None:
    """Where systemd waits for llamaherd's READY=1 and STOPPING=1 (a `Type=notify` unit):
    $NOTIFY_SOCKET, or None when systemd did not start it."""
    return os.environ.get("NOTIFY_SOCKET") or None
