"""Building the running objects from the settings: the arguments each llama-server gets."""

from __future__ import annotations

from pathlib import Path

from llamaherd.config.settings import settings_from_mapping
from llamaherd.wiring.build import build_herd


def test_every_llama_server_names_its_model_by_the_id_clients_use(
    fake_binary: Path, demo_model: Path
) -> None:
    # Without --alias, llama-server puts the model file's path in every answer's "model".
    alpha = str(demo_model)
    settings = settings_from_mapping(
        {
            "llama_server_binary": str(fake_binary),
            "models": {
                "coder": {"path": alpha},
                "named": {"path": alpha, "args": ["-a", "theirs"]},
                "long": {"path": alpha, "args": ["--alias", "theirs-too"]},
                "a,b": {"path": alpha},  # llama-server would read two aliases
            },
        }
    )
    args = {
        model: backend.service.server_args
        for model, backend in build_herd(settings).backends.items()
    }
    assert args["coder"] == ("--metrics", "--alias", "coder")
    assert args["named"] == ("-a", "theirs", "--metrics")
    assert args["long"] == ("--alias", "theirs-too", "--metrics")
    assert args["a,b"] == ("--metrics",)
