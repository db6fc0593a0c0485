"""Building the running objects from the settings: the one place that knows both.

The supervisor knows nothing of the config file; whoever reads the config builds the services
and hands them over (DESIGN.md's layering rule). The llama-server binary is found here, once,
before a service exists, so the supervisor never reads the environment.
"""

from __future__ import annotations

from llamaherd.config import Settings, locate_llama_server
from llamaherd.supervisor.service import LlamaService


def build_service(settings: Settings) -> LlamaService:
    """The LlamaService for the config's llama-server (`llama_model_path` on `llama_server_port`).

    Raises BinaryNotFoundError when no llama-server can be found."""
    return LlamaService(
        host=settings.llama_server_host,
        port=settings.llama_server_port,
        model_path=settings.llama_model_path,
        server_args=settings.llama_server_args,
        binary=locate_llama_server(settings.llama_server_binary),
        policy=settings.supervisor_policy(),
    )
