"""Turning llama-server's /v1/models answer into the wire contract's model entries.

llama-server reports an id and a `meta` block (tensor size, vocabulary, context) but no
architecture and no file date, so the GGUF file on disk fills those in when we know it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaherd.catalog.gguf import GgufSummary, read_gguf_summary
from llamaherd.errors import ModelFileError

logger = logging.getLogger("llamaherd.catalog")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model served by llama-server, as the wire contract names its fields."""

    id: str
    name: str
    size: int  # bytes
    type: str  # architecture, e.g. "llama"
    modified_at: int  # unix seconds

    def to_wire(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "type": self.type,
            "modified_at": self.modified_at,
        }


def _local_model(
    model_id: str, meta: dict[str, Any], model_path: Path | None
) -> tuple[Path | None, GgufSummary | None]:
    """The configured file, and what its header says, when llama-server's entry is that file:
    its id names the file (by path or by file name), or, for an id that does not (an
    `--alias`, which llamaherd gives every model it starts), its parameter count is the
    file's. A server found running with another model matches neither."""
    if model_path is None:
        return None, None
    if model_id in (str(model_path), model_path.name, model_path.stem):
        return model_path, _summary(model_path)
    n_params = meta.get("n_params")
    if not isinstance(n_params, int) or n_params <= 0:
        return None, None
    summary = _summary(model_path)
    if summary is None or summary.parameter_count != n_params:
        return None, None
    return model_path, summary


def _summary(path: Path) -> GgufSummary | None:
    try:
        return read_gguf_summary(path)
    except ModelFileError as exc:
        logger.warning("cannot read model metadata: %s", exc)
        return None


def model_info(entry: dict[str, Any], model_path: Path | None) -> ModelInfo:
    model_id = str(entry.get("id", ""))
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    local, summary = _local_model(model_id, meta, model_path)
    size = summary.size_bytes if summary else int(meta.get("size") or 0)
    arch = (summary.architecture if summary else None) or "unknown"
    name = (summary.name if summary else None) or model_id
    try:
        modified_at = int(local.stat().st_mtime) if local else int(entry.get("created") or 0)
    except OSError:
        modified_at = int(entry.get("created") or 0)
    return ModelInfo(id=model_id, name=name, size=size, type=arch, modified_at=modified_at)


def models_from_listing(entries: list[dict[str, Any]], model_path: Path | None) -> list[ModelInfo]:
    return [model_info(entry, model_path) for entry in entries if entry.get("id")]
