"""Reloading the config while serving (SIGHUP, `llamaherd reload`, POST /api/config/reload, or
a change of the file with `watch_config`), without dropping a request.

The new file is read and checked whole first (JSON, every key, every model file's header, the
llama-server binary, the keys): if anything is wrong, nothing changes, and the one-line error
goes to the log, to whoever asked, and to the dashboard. Otherwise the herd applies what can
change while serving (see `Herd.reconfigure`: models added, removed, relaunched or rerouted;
the limits; the keys, at once), and every other key that changed is named in "needs a
restart" (where llamaherd listens, its state folder, what it records...).

This is composition, like wiring.py: it knows the config and the running objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamaherd.api.access import AccessPolicy
from llamaherd.config.model_specs import build_registry
from llamaherd.config.settings import Settings, load_config
from llamaherd.errors import LlamaherdError
from llamaherd.gateway.herd import NO_MODEL, Herd
from llamaherd.gateway.registry import ModelRegistry
from llamaherd.gateway.scheduler import Limits
from llamaherd.supervisor.policy import POLICY_BOUNDS
from llamaherd.supervisor.service import LlamaService
from llamaherd.wiring.build import access_policy, build_services, check_exposure, herd_limits

logger = logging.getLogger("llamaherd.reload")

# What a reload applies while serving; any other key that changed needs a restart.
LIVE_KEYS = frozenset(
    {
        "models",
        "models_dir",
        "default_model",
        "preload",
        "llama_model_path",
        "llama_server_args",
        "llama_server_binary",
        "llama_server_host",
        "llama_server_port",
        "max_loaded",
        "memory_budget_mb",
        "queue_depth",
        "queue_timeout_s",
        "failure_cooldown_s",
        "api_keys",
        "watch_config",
        *POLICY_BOUNDS,  # a server's policy applies from its next step
    }
)
WATCH_INTERVAL_S = 1.0  # how often the file's stat is compared, with watch_config
WATCH_SETTLE_S = 0.5  # a change must hold this long (an editor writes in several steps)


@dataclass(frozen=True)
class ConfigSource:
    """Where the settings come from: the file, and what the command line overrides in it."""

    path: Path
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Settings:
        return load_config(self.path, overrides=dict(self.overrides))


@dataclass(frozen=True)
class ReloadReport:
    """How a reload went: what changed, what needs a restart, or why nothing changed."""

    ok: bool
    at: float  # unix seconds
    trigger: str
    changes: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "at": int(self.at * 1000),
            "trigger": self.trigger,
            "changes": list(self.changes),
            "needsRestart": list(self.needs_restart),
            "error": self.error,
        }


@dataclass(frozen=True)
class _Plan:
    settings: Settings
    registry: ModelRegistry
    services: dict[str, LlamaService]
    limits: Limits
    access: AccessPolicy


class ConfigReloader:
    """Reloads `source` into the running `herd` and `access`; one reload at a time."""

    def __init__(
        self,
        source: ConfigSource,
        settings: Settings,
        herd: Herd,
        access: AccessPolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.settings = settings
        self._herd = herd
        self._access = access
        self._clock = clock
        self._lock = asyncio.Lock()
        self.loaded_at = clock()
        self.last: ReloadReport | None = None
        self._publish()

    def info(self) -> dict[str, Any]:
        """For `llamaModels` and the dashboard: when the config was loaded, the last reload."""
        return {
            "path": str(self.source.path),
            "loadedAt": int(self.loaded_at * 1000),
            "lastReload": None if self.last is None else self.last.as_dict(),
        }

    async def reload(self, trigger: str) -> ReloadReport:
        async with self._lock:
            keep_ports = {m: b.service.port for m, b in self._herd.backends.items()}
            primary = self._herd.primary.spec.id
            try:
                # Off the loop: it reads the file, every model's header, the binary.
                plan = await asyncio.to_thread(self._prepare, keep_ports, primary)
            except LlamaherdError as exc:
                report = ReloadReport(False, self._clock(), trigger, error=str(exc))
                logger.error("config not reloaded (%s): %s; the config in use stays", trigger, exc)
                return self._finish(report)
            changes = self._herd.reconfigure(plan.registry, plan.services, plan.limits)
            if plan.access.keys.keys != self._access.keys.keys:
                self._access.keys.replace(plan.access.keys)
                changes.append(f"api_keys: {plan.access.keys.describe() or 'none'}")
            restart = _needs_restart(self.settings, plan.settings)
            self.settings, self.loaded_at = plan.settings, self._clock()
            report = ReloadReport(True, self.loaded_at, trigger, tuple(changes), restart)
            logger.info(
                "config reloaded (%s): %s%s",
                trigger,
                "; ".join(changes) or "nothing changed",
                f"; needs a restart to apply: {', '.join(restart)}" if restart else "",
            )
            return self._finish(report)

    def _prepare(self, keep_ports: Mapping[str, int], primary: str) -> _Plan:
        settings = self.source.load()
        registry = build_registry(settings, source=str(self.source.path))
        # NO_MODEL: no model at start (an empty models_dir, a front), so none to keep.
        if primary != NO_MODEL and primary not in {spec.id for spec in registry}:
            raise LlamaherdError(
                f"{self.source.path}: model {primary!r} is the primary model (llamaStatus and "
                "/api/llama/* speak of it) and cannot be removed by a reload; keep it, or "
                "restart llamaherd with the new config"
            )
        services = build_services(settings, registry, keep_ports)
        access = access_policy(settings)
        # Where it listens changes only with a restart: check the keys against that.
        check_exposure(settings.model_copy(update={"app_host": self.settings.app_host}), access)
        return _Plan(settings, registry, services, herd_limits(settings), access)

    def _finish(self, report: ReloadReport) -> ReloadReport:
        self.last = report
        self._publish()
        return report

    def _publish(self) -> None:
        self._herd.config_info = self.info()
        self._herd.notify_changed()

    async def watch(self) -> None:
        """With watch_config: reload when the file changes (its size, time or inode), once the
        change has held for WATCH_SETTLE_S. Runs until cancelled."""
        seen = _stamp(self.source.path)
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = _stamp(self.source.path)
            if now == seen:
                continue
            await asyncio.sleep(WATCH_SETTLE_S)
            if _stamp(self.source.path) != now:
                continue  # still being written: look again at the next round
            seen = now
            if self.settings.watch_config:  # a reload may have turned it off
                await self.reload("file changed")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    with contextlib.suppress(OSError):
        info = os.stat(path)
        return (info.st_mtime_ns, info.st_size, info.st_ino)
    return None


def _needs_restart(old: Settings, new: Settings) -> tuple[str, ...]:
    return tuple(
        name
        for name in Settings.model_fields
        if name not in LIVE_KEYS and getattr(old, name) != getattr(new, name)
    )
