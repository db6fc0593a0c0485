"""llamaherd: a supervisor and gateway for llama.cpp's llama-server.

from llamaherd import build_service, load_config
svc = build_service(load_config(".llama-proxy-config.json"))
await svc.start()

or, in code: LlamaService(port=8134, model_path="m.gguf", binary="/opt/llama-server",
policy=SupervisorPolicy(max_retries=3))
"""

from llamaherd.catalog.models import ModelInfo
from llamaherd.config import Settings, load_config
from llamaherd.supervisor.policy import SupervisorPolicy
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import ServiceState, Status
from llamaherd.wiring import build_service

__version__ = "0.1.0"

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
