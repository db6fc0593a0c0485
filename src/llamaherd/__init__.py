"""llamaherd: a supervisor and gateway for llama.cpp's llama-server.

from llamaherd import LlamaService, load_config
svc = LlamaService.from_config(load_config(".llama-proxy-config.json"))
await svc.start()
"""

from llamaherd.config import Settings, load_config
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import ModelInfo, ServiceState, Status

__version__ = "0.1.0"

__all__ = [
    "LlamaService",
    "ModelInfo",
    "ServiceState",
    "Settings",
    "Status",
    "__version__",
    "load_config",
]
