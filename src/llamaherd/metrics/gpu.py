"""GPU memory per process, from NVML (the `pynvml` module of nvidia-ml-py), when there is any.

Optional by design: without the library, without a driver, or without a GPU, every answer is
None ("unknown"), never an error. NVML is initialised once, on first use, and a failure to
initialise is not retried: a machine does not grow a GPU while llamaherd runs.

Calls block (NVML talks to the driver): run them off the event loop.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("llamaherd.metrics")


def _load_pynvml() -> Any:
    return importlib.import_module("pynvml")


class GpuMemory:
    """How much GPU memory a process uses, summed over every GPU."""

    def __init__(self, load: Callable[[], Any] = _load_pynvml) -> None:
        self._load = load
        self._nvml: Any = None
        self._tried = False
        self._lock = threading.Lock()

    def used_bytes(self, pid: int) -> int | None:
        """Bytes of GPU memory `pid` holds; None when unknown (no NVML, no GPU, or NVML does
        not see that pid: another PID namespace, or a driver that does not say)."""
        nvml = self._init()
        if nvml is None:
            return None
        try:
            found: int | None = None
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                for process in _processes(nvml, handle):
                    used = getattr(process, "usedGpuMemory", None)
                    if getattr(process, "pid", None) == pid and isinstance(used, int):
                        found = (found or 0) + used
            return found
        except Exception as exc:  # an optional reading: whatever NVML raises means "unknown"
            logger.debug("NVML could not list GPU processes: %s", exc)
            return None

    def close(self) -> None:
        with self._lock:
            nvml, self._nvml = self._nvml, None
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception as exc:
                logger.debug("NVML shutdown failed: %s", exc)

    def _init(self) -> Any:
        with self._lock:
            if not self._tried:
                self._tried = True
                try:
                    nvml = self._load()
                    nvml.nvmlInit()
                except Exception as exc:  # ImportError, or NVMLError: no driver, no GPU
                    logger.debug("no GPU memory figures (NVML unavailable): %s", exc)
                else:
                    self._nvml = nvml
            return self._nvml


def _processes(nvml: Any, handle: Any) -> list[Any]:
    """Compute and graphics processes of one GPU; a process using both is listed once."""
    seen: dict[int, Any] = {}
    for lister in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        function = getattr(nvml, lister, None)
        if function is None:
            continue
        for process in function(handle):
            seen.setdefault(getattr(process, "pid", -1), process)
    return list(seen.values())
