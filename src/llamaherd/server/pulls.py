"""Pulls of models from the Hugging Face Hub, composed for `llamaherd serve`: into the
models_dir of the config in use (a reload may change it), from $HF_ENDPOINT with $HF_TOKEN,
and a config reload once a pull's files are in place, so that its model is served without a
restart (the reload scans models_dir).

Composition, like wiring/build.py and server/reload.py: it knows the config and the running objects.
"""

from __future__ import annotations

from pathlib import Path

from llamaherd.catalog.hub import Hub
from llamaherd.catalog.pulls import Pull, PullManager
from llamaherd.config.defaults import hub_endpoint, hub_token
from llamaherd.config.settings import Settings
from llamaherd.errors import PullError
from llamaherd.server.reload import ConfigReloader


def model_pulls(settings: Settings, reloader: ConfigReloader | None) -> PullManager:
    """The pulls `serve` offers at /api/models/pull; with a reloader, each pull that completes
    reloads the config."""

    def models_dir() -> Path | None:
        return (reloader.settings if reloader is not None else settings).models_dir

    async def reloaded(pull: Pull) -> None:
        if reloader is None:
            return
        report = await reloader.reload(f"pulled {pull.resolution.model_id}")
        if not report.ok:
            raise PullError(
                f"{pull.resolution.model_id} is in models_dir, but the config did not reload, so "
                f"it is not served yet: {report.error}",
                status=500,
                code="reload_failed",
            )

    return PullManager(models_dir, Hub(hub_endpoint(), hub_token()), on_complete=reloaded)
