"""llama-server's /v1/models entry turned into the wire contract's model: the facts come from
the configured file when the entry is that file, named by its path or by an alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamaherd.catalog.gguf import read_gguf_summary
from llamaherd.catalog.models import models_from_listing


def entry(model_id: str, n_params: int) -> dict[str, Any]:
    """As llama-server lists its model (`--alias coder` makes the id "coder")."""
    meta = {"n_params": n_params, "size": 432_896, "n_ctx_train": 2048}
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "meta": meta}


def test_an_aliased_entry_is_the_configured_file_when_its_parameters_match(
    demo_model: Path,
) -> None:
    summary = read_gguf_summary(demo_model)
    assert summary.parameter_count is not None
    for model_id in (str(demo_model), demo_model.name, "coder"):
        (info,) = models_from_listing([entry(model_id, summary.parameter_count)], demo_model)
        assert info.id == model_id
        assert (info.size, info.type, info.name) == (
            demo_model.stat().st_size,
            "llama",
            summary.name,
        )
        assert info.modified_at == int(demo_model.stat().st_mtime)


def test_an_aliased_entry_of_another_model_keeps_llama_servers_facts(demo_model: Path) -> None:
    # A server found running on the port with another model under an alias.
    (info,) = models_from_listing([entry("other", 5)], demo_model)
    assert (info.id, info.name, info.size, info.type) == ("other", "other", 432_896, "unknown")
    assert info.modified_at == 1_700_000_000
