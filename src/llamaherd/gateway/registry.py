"""Which models the gateway serves, and which one a request's "model" names.

Pure data: no processes and no I/O. Whoever reads the config builds a `ModelSpec` per
model (the config's `models` entries and the files found in `models_dir`, joined by
`merge_specs`) and hands them to `ModelRegistry`, which checks them once, at start-up,
so that a request can never meet an ambiguous name: every id and alias names exactly
one model.

A config mistake is a `ConfigError` whose message starts with the key at fault
(`models.coder.aliases: ...`, `default_model: ...`); the config reader puts the file's
name in front. A request for a model that is not served is an `UnknownModelError`,
which carries the name and the models there are, for an OpenAI-style 404.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaherd.catalog.library import ModelFile, ModelMetadata, estimate_memory_mb
from llamaherd.errors import ConfigError, LlamaherdError

logger = logging.getLogger("llamaherd.gateway")

_MMPROJ_FLAGS = frozenset({"-mm", "--mmproj"})


class UnknownModelError(LlamaherdError):
    """A request named a model that is not served here (or named none, and there is no default).

    `name` is what the request asked for (None or "" when it named nothing), `available`
    the ids that would have worked.
    """

    def __init__(self, name: str | None, available: Sequence[str]) -> None:
        self.name = name
        self.available = tuple(available)
        listing = ", ".join(self.available) if self.available else "none"
        if name:
            message = f"The model '{name}' does not exist. Available models: {listing}"
        else:
            message = (
                f'No model was named and there is no default model: set "model" to one of {listing}'
            )
        super().__init__(message)


@dataclass(frozen=True)
class ModelSpec:
    """One model the gateway can serve: the file, how to start it, how to treat it."""

    id: str
    """The name clients send as "model"; for a scanned file, its stem."""
    path: Path | None
    """The model file (a split model's first part), passed to llama-server as `-m`; None for
    a server that is only ever found running (adopted), never started by llamaherd."""
    args: tuple[str, ...] = ()
    """Extra llama-server arguments, e.g. ("-ngl", "99", "-c", "8192")."""
    aliases: tuple[str, ...] = ()
    """Other names that reach this model (e.g. "gpt-4o-mini" for a client that insists)."""
    ttl_s: float | None = None
    """Unload after this many idle seconds; None keeps it until memory is needed."""
    pinned: bool = False
    """Never evicted to make room for another model."""
    max_concurrency: int | None = None
    """Requests it serves at once; None leaves it to the scheduler's default."""
    port: int | None = None
    """A fixed port for its llama-server; None lets the gateway pick a free one."""
    mmproj: Path | None = None
    """A multimodal projector, passed as `--mmproj`."""
    metadata: ModelMetadata | None = None
    """What the file says (architecture, size, context...); None if not read."""
    preload: int | None = None
    """Its place in the order of models loaded at start (or when a reload adds it), as far as
    the limits allow; None: loaded on its first request."""
    in_models_dir: bool = False
    """Found by scanning `models_dir` (not named in the config): its files are llamaherd's to
    delete (DELETE /api/models/{id}, `llamaherd rm`) once it is unloaded."""

    @property
    def memory_mb(self) -> float | None:
        """The estimated memory once loaded with `args` (see `estimate_memory_mb`), in MiB;
        None without metadata."""
        return estimate_memory_mb(self.metadata, self.args) if self.metadata else None

    @property
    def server_args(self) -> tuple[str, ...]:
        """`args`, plus `--mmproj FILE` when the model has a projector that `args` do not
        name already: the arguments to start llama-server with besides `-m`, host and port."""
        if self.mmproj is None or any(a in _MMPROJ_FLAGS for a in self.args):
            return self.args
        return (*self.args, "--mmproj", str(self.mmproj))

    @classmethod
    def from_model_file(
        cls, model: ModelFile, metadata: ModelMetadata | None = None, **settings: Any
    ) -> ModelSpec:
        """The spec of a scanned file; `settings` are any other fields (args, ttl_s...)."""
        return cls(id=model.id, path=model.path, mmproj=model.mmproj, metadata=metadata, **settings)


def merge_specs(explicit: Sequence[ModelSpec], scanned: Sequence[ModelSpec]) -> list[ModelSpec]:
    """The config's own models, then the scanned ones that they do not already cover.

    A configured model wins over a scanned one with the same id, with its id among the
    configured aliases, or with the same file (resolved, so a symlink counts as its
    target): the configured entry says how that file is served, and a file must not be
    served twice under two names. Dropping a scanned file for a clash of names is logged.
    """
    names = {s.id for s in explicit} | {a for s in explicit for a in s.aliases}
    files = {_same_file_key(s.path) for s in explicit if s.path is not None}
    merged = list(explicit)
    for spec in scanned:
        if spec.path is not None and _same_file_key(spec.path) in files:
            continue
        if spec.id in names:
            logger.warning(
                "models_dir: %s is not served as '%s': the config's models already use that name",
                spec.path,
                spec.id,
            )
            continue
        merged.append(spec)
    return merged


def _same_file_key(path: Path) -> Path:
    return path.resolve()


class ModelRegistry:
    """Every served model by id and alias, and the default for a request that names none.

    The default is `default_model` (an id or an alias), else the only model when there is
    exactly one, else none: a request must then name its model.
    """

    def __init__(self, specs: Iterable[ModelSpec], default_model: str | None = None) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self._names: dict[str, str] = {}  # every id and alias -> the model's id
        for spec in specs:
            self._add_id(spec)
        for spec in self._specs.values():
            self._add_aliases(spec)
        self._default = self._default_id(default_model)

    def _add_id(self, spec: ModelSpec) -> None:
        if not spec.id:
            raise ConfigError("models: a model id must not be empty: give every model a name")
        if spec.id in self._specs:
            raise ConfigError(
                f"models.{spec.id}: two models have the id '{spec.id}' "
                f"({self._specs[spec.id].path} and {spec.path}); give each its own id"
            )
        self._specs[spec.id] = spec
        self._names[spec.id] = spec.id

    def _add_aliases(self, spec: ModelSpec) -> None:
        key = f"models.{spec.id}.aliases"
        for alias in spec.aliases:
            if not alias:
                raise ConfigError(f"{key}: an alias must not be empty")
            owner = self._names.get(alias)
            if owner is None:
                self._names[alias] = spec.id
            elif owner == spec.id and alias == spec.id:
                continue  # the model's own id: redundant, not ambiguous
            elif owner == spec.id:
                raise ConfigError(f"{key}: '{alias}' is listed twice")
            elif alias == owner:
                raise ConfigError(
                    f"{key}: '{alias}' is the id of another model; "
                    "an alias must not shadow a model: remove it or rename that model"
                )
            else:
                raise ConfigError(
                    f"{key}: '{alias}' is already an alias of model '{owner}'; "
                    "an alias names one model: remove it from one of them"
                )

    def _default_id(self, default_model: str | None) -> str | None:
        if default_model is None:
            return next(iter(self._specs)) if len(self._specs) == 1 else None
        model_id = self._names.get(default_model)
        if model_id is None:
            known = ", ".join(self._specs) or "none"
            raise ConfigError(
                f"default_model: '{default_model}' is not the id or an alias of any model "
                f"(models: {known})"
            )
        return model_id

    def resolve(self, name: str | None) -> ModelSpec:
        """The model a request's "model" names: an id or an alias, or the default for
        None or "". Raises `UnknownModelError` otherwise."""
        model_id = self._names.get(name) if name else self._default
        if model_id is None:
            raise UnknownModelError(name, self.ids())
        return self._specs[model_id]

    def get(self, model_id: str) -> ModelSpec | None:
        """The model with this id (not alias), or None."""
        return self._specs.get(model_id)

    @property
    def default(self) -> ModelSpec | None:
        """The model a request that names none gets, if any."""
        return self._specs[self._default] if self._default is not None else None

    def ids(self) -> tuple[str, ...]:
        """Every model's id, in the order the specs were given."""
        return tuple(self._specs)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        """Whether `name` is a model's id or alias."""
        return name in self._names
