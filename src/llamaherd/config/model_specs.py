"""From the config's model keys to the gateway's registry: which models exist, and how each is
served.

Three sources, in order of precedence:
1. `models`: explicit entries (path, args, aliases, ttl_s, pinned, max_concurrency, port);
2. the seed's `llama_model_path`: one model whose id is the file's stem, on `llama_server_port`;
3. `models_dir`: every GGUF file in the folder (split sets as one model, mmproj attached).
Every mistake is a ConfigError that starts with the config file and the key.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from llamaherd.catalog.library import (
    ModelFile,
    ModelMetadata,
    model_file,
    read_metadata,
    scan_models_dir,
)
from llamaherd.config.settings import DEMO_MODEL_HINT, Settings
from llamaherd.errors import ConfigError, ModelFileError
from llamaherd.gateway.registry import ModelRegistry, ModelSpec, merge_specs

logger = logging.getLogger("llamaherd.config")


def seed_model_id(settings: Settings) -> str | None:
    """The id of the seed's model (`llama_model_path`): its file name without `.gguf`."""
    path = settings.llama_model_path
    return None if path is None else path.name.removesuffix(".gguf")


def build_registry(settings: Settings, *, source: str = "config") -> ModelRegistry:
    """Every model the config declares, checked: files readable as GGUF, ids and aliases
    unique, the default known, no more pinned models than `max_loaded`."""
    explicit = [_entry_spec(settings, name, source) for name in settings.models]
    seed = _seed_spec(settings, source)
    if seed is not None:
        if seed.id in settings.models:
            raise ConfigError(
                f"{source}: models.{seed.id}: llama_model_path already declares a model with "
                f"this id; remove one of the two"
            )
        explicit.insert(0, seed)
    scanned = _scanned_specs(settings, source)
    specs = merge_specs(explicit, scanned)
    if not specs and not (settings.peers or settings.peers_dns or settings.models_dir):
        # No model at all: a server already running on llama_server_port is adopted, as
        # the seed did; nothing can be started. (A front serves its peers' models only; a
        # models_dir still empty gets its models by a reload.)
        specs = [ModelSpec(id="default", path=None, args=settings.llama_server_args)]
    pinned = [spec.id for spec in specs if spec.pinned]
    if len(pinned) > settings.max_loaded:
        raise ConfigError(
            f"{source}: max_loaded: {settings.max_loaded} is fewer than the pinned models "
            f"({', '.join(pinned)}); raise max_loaded or unpin some"
        )
    specs = [dataclasses.replace(s, preload=_preload_rank(settings, s.id)) for s in specs]
    known = {spec.id for spec in specs}
    unknown = [name for name in settings.preload if name not in known]
    if unknown:
        raise ConfigError(
            f"{source}: preload: {', '.join(map(repr, unknown))} is not a model here; the "
            f"models are {', '.join(sorted(known))}"
        )
    default = settings.default_model
    if default is None and seed is not None:
        default = seed.id
    try:
        return ModelRegistry(specs, default)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _seed_spec(settings: Settings, source: str) -> ModelSpec | None:
    path = settings.llama_model_path
    model_id = seed_model_id(settings)
    if path is None or model_id is None:
        return None
    file = _model_file(path, model_id, "llama_model_path", source)
    return ModelSpec(
        id=model_id,
        path=file.path,
        args=settings.llama_server_args,
        port=settings.llama_server_port,
        mmproj=file.mmproj,
        metadata=_metadata(file, "llama_model_path", source),
    )


def _entry_spec(settings: Settings, name: str, source: str) -> ModelSpec:
    entry = settings.models[name]
    key = f"models.{name}.path"
    file = _model_file(entry.path, name, key, source)
    return ModelSpec(
        id=name,
        path=file.path,
        args=(*settings.llama_server_args, *entry.args),
        aliases=entry.aliases,
        ttl_s=entry.ttl_s,
        pinned=entry.pinned,
        max_concurrency=entry.max_concurrency,
        port=entry.port,
        mmproj=file.mmproj,
        metadata=_metadata(file, key, source),
    )


def _preload_rank(settings: Settings, name: str) -> int | None:
    """Its place (from 1) in the preload order: the top-level `preload` list first, in its
    order; then the models flagged `preload`, in the config's order."""
    flags = [m for m, entry in settings.models.items() if entry.preload]
    order = [*settings.preload, *(m for m in flags if m not in settings.preload)]
    return order.index(name) + 1 if name in order else None


def _scanned_specs(settings: Settings, source: str) -> list[ModelSpec]:
    folder = settings.models_dir
    if folder is None:
        return []
    try:
        files = scan_models_dir(folder)
    except ModelFileError as exc:
        raise ConfigError(f"{source}: models_dir: {exc}") from None
    specs = []
    for file in files:
        try:
            metadata = read_metadata(file)
        except ModelFileError as exc:
            # One bad file in a folder of many must not stop the others being served.
            logger.warning("models_dir: skipping %s: %s", file.path, exc)
            continue
        specs.append(
            ModelSpec.from_model_file(
                file, metadata, args=tuple(settings.llama_server_args), in_models_dir=True
            )
        )
    return specs


def _model_file(path: Path, model_id: str, key: str, source: str) -> ModelFile:
    try:
        return model_file(path, model_id=model_id)
    except ModelFileError as exc:
        raise ConfigError(f"{source}: {key}: {_lower(exc)}. {DEMO_MODEL_HINT}") from None


def _metadata(file: ModelFile, key: str, source: str) -> ModelMetadata:
    try:
        return read_metadata(file)
    except ModelFileError as exc:
        raise ConfigError(f"{source}: {key}: {_lower(exc)}. {DEMO_MODEL_HINT}") from None


def _lower(exc: Exception) -> str:
    text = str(exc).rstrip(".")
    return text[:1].lower() + text[1:]
