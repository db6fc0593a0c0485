"""llamaherd: a supervisor and gateway for llama.cpp's llama-server.

from llamaherd import build_service, load_config
svc = build_service(load_config(".llama-proxy-config.json"))
await svc.start()

or, in code: LlamaService(port=8134, model_path="m.gguf", binary="/opt/llama-server",
policy=SupervisorPolicy(max_retries=3))

Importing the package loads nothing else: each public name below is imported on first use
(PEP 562), so `llamaherd --version` and `llamaherd status` do not pay for the whole server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llamaherd.version import __version__

# Each public name, and the module that defines it.
_EXPORTS = {
    "LlamaService": "llamaherd.supervisor.service",
    "ModelInfo": "llamaherd.catalog.models",
    "ServiceState": "llamaherd.supervisor.states",
    "Settings": "llamaherd.config.settings",
    "Status": "llamaherd.supervisor.states",
    "SupervisorPolicy": "llamaherd.supervisor.policy",
    "build_service": "llamaherd.wiring.build",
    "load_config": "llamaherd.config.settings",
}

__all__ = [
    "LlamaService",
    "ModelInfo",
    "ServiceState",
    "Settings",
    "Status",
    "SupervisorPolicy",
    "__version__",
    "build_service",
    "load_config",
]

if TYPE_CHECKING:
    from llamaherd.catalog.models import ModelInfo
    from llamaherd.config.settings import Settings, load_config
    from llamaherd.supervisor.policy import SupervisorPolicy
    from llamaherd.supervisor.service import LlamaService
    from llamaherd.supervisor.states import ServiceState, Status
    from llamaherd.wiring.build import build_service


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llamaherd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
