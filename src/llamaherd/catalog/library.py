"""The models in a folder: which files are models, what they say, what they cost in memory.

`scan_models_dir` turns a `models_dir` into `ModelFile`s by file names alone (no file is
opened), so a folder of large models is listed at once; `read_metadata` then reads each
model's GGUF header (cheap: see `gguf`), and `estimate_memory_mb` is a pure function of
that metadata and the model's llama-server arguments.

The folder's rules, chosen to match how models are downloaded and how llama.cpp loads them:

- Every `*.gguf` file is a model whose id is its file stem. Subfolders are scanned one
  level deep (a folder per multimodal model is common); ids stay file stems. Names that
  start with "." are ignored (partial downloads, caches).
- A split model (`name-00001-of-00003.gguf`, as `llama-gguf-split` writes it) is one model,
  id `name`, started from its first part; llama.cpp finds the other parts by that name.
  If any part is missing the model is skipped with a warning naming the missing part.
- A file whose name starts with "mmproj" (any case) is a multimodal projector, not a model:
  it belongs to a model in the same folder, passed as `--mmproj`. One whose name names a
  model (`mmproj-<id>.gguf`, `mmproj-<id>-f16.gguf`) goes to that model; otherwise it goes
  to the only model of its folder; otherwise it is left out with a warning.
- A symlink may point anywhere inside the folder; one that leads outside it is skipped
  with a warning, so a models folder cannot expose files elsewhere on the machine.
- Two models with the same id: the one at the top level wins over one in a subfolder,
  then the first by path; the other is skipped with a warning.
- The result is sorted by id, the same on every run.

Skipped files are logged on the "llamaherd.catalog" logger, never raised: one bad file
must not take the other models down with it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llamaherd.catalog.gguf import GgufSummary, read_gguf_summary
from llamaherd.errors import ModelFileError

logger = logging.getLogger("llamaherd.catalog")

_SUFFIX = ".gguf"
_MMPROJ_PREFIX = "mmproj"
_SPLIT_NAME = re.compile(r"^(?P<id>.+)-(?P<number>\d{5})-of-(?P<count>\d{5})\.gguf$")
_SEPARATORS = "-_. "

_MIB = 1024 * 1024


@dataclass(frozen=True)
class ModelFile:
    """One model found on disk: what llama-server is started with."""

    id: str
    """The file stem (for a split model, the stem without `-00001-of-0000N`)."""
    path: Path
    """The file to pass as `-m`: the model file, or the first part of a split model."""
    parts: tuple[Path, ...]
    """Every file of the model in order: `(path,)`, or all parts of a split model."""
    mmproj: Path | None = None
    """The multimodal projector to pass as `--mmproj`, if the model has one."""


@dataclass(frozen=True)
class SplitPart:
    """What a split model's part name says: `name-00002-of-00003.gguf`."""

    model_id: str
    number: int
    """1-based, as llama.cpp numbers them."""
    count: int


def split_part_name(name: str) -> SplitPart | None:
    """Parse a split part's file name; None for a name that is not one."""
    match = _SPLIT_NAME.match(name)
    if match is None:
        return None
    return SplitPart(match["id"], int(match["number"]), int(match["count"]))


def split_part_file_name(model_id: str, number: int, count: int) -> str:
    """The file name llama.cpp gives part `number` of `count` (llama_split_path)."""
    return f"{model_id}-{number:05d}-of-{count:05d}{_SUFFIX}"


def is_mmproj_name(name: str) -> bool:
    """Whether a file name is a multimodal projector's: it starts with "mmproj", any case."""
    return name.lower().startswith(_MMPROJ_PREFIX)


def model_file(path: Path, *, model_id: str | None = None, mmproj: Path | None = None) -> ModelFile:
    """The `ModelFile` for a path named in the config, split or not.

    `model_id` defaults to the stem (without the split suffix). A split model must be
    named by its first part, and all its parts must exist: otherwise `ModelFileError`
    says which part is missing or which file to name instead. That the file itself
    exists and is a GGUF file is `read_metadata`'s to check.
    """
    part = split_part_name(path.name)
    if part is None:
        return ModelFile(model_id or path.stem, path, (path,), mmproj)
    first = path.with_name(split_part_file_name(part.model_id, 1, part.count))
    if part.number != 1:
        raise ModelFileError(
            f"Model file {path} is part {part.number} of {part.count} of a split model: "
            f"name its first part, {first}"
        )
    parts = tuple(
        path.with_name(split_part_file_name(part.model_id, n, part.count))
        for n in range(1, part.count + 1)
    )
    missing = [p for p in parts if not p.exists()]
    if missing:
        raise ModelFileError(
            f"Model file {path} is part 1 of {part.count} of a split model, "
            f"but {_missing_parts_text(missing)}"
        )
    return ModelFile(model_id or part.model_id, path, parts, mmproj)


def _missing_parts_text(missing: Sequence[Path]) -> str:
    names = ", ".join(p.name for p in missing)
    return f"part {names} is missing" if len(missing) == 1 else f"parts {names} are missing"


# --- scanning a folder ---------------------------------------------------------------


def scan_models_dir(folder: Path) -> list[ModelFile]:
    """Every model in `folder` and its subfolders (one level), sorted by id.

    Raises `ModelFileError` if `folder` does not exist, is not a folder, or cannot be
    read. Everything wrong inside it is a logged warning and a skipped file.
    """
    root = _resolved_folder(folder)
    found: list[tuple[int, ModelFile]] = []  # (depth, model), for the duplicate rule
    files, subfolders = _entries(folder, root, scan_subfolders=True)
    found += [(0, m) for m in _models_of_folder(files)]
    for sub in subfolders:
        sub_files, _ = _entries(sub, root, scan_subfolders=False)
        found += [(1, m) for m in _models_of_folder(sub_files)]
    return _unique_ids(found)


def _resolved_folder(folder: Path) -> Path:
    try:
        root = folder.resolve(strict=True)
    except FileNotFoundError:
        raise ModelFileError(f"Models folder {folder} does not exist") from None
    except OSError as exc:
        raise ModelFileError(f"Models folder {folder} cannot be read: {exc.strerror}") from exc
    if not root.is_dir():
        raise ModelFileError(f"Models folder {folder} is not a folder")
    return root


def _entries(
    directory: Path, root: Path, *, scan_subfolders: bool
) -> tuple[list[Path], list[Path]]:
    """The `.gguf` files of `directory` (sorted by name) and, if asked, its subfolders."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        if scan_subfolders:  # the models folder itself
            raise ModelFileError(
                f"Models folder {directory} cannot be read: {exc.strerror}"
            ) from exc
        logger.warning("models_dir: skipping folder %s: %s", directory, exc.strerror)
        return [], []
    files: list[Path] = []
    subfolders: list[Path] = []
    for name in names:
        if name.startswith("."):
            continue
        path = directory / name
        is_gguf = name.endswith(_SUFFIX)
        if not (is_gguf or scan_subfolders):
            continue
        if not _inside(path, root):
            continue
        if is_gguf and path.is_file():
            files.append(path)
        elif scan_subfolders and path.is_dir():
            subfolders.append(path)
    return files, subfolders


def _inside(path: Path, root: Path) -> bool:
    """Whether `path` (a symlink followed to its end) is inside `root`; warns if not."""
    if not path.is_symlink():
        return True
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop
        logger.warning("models_dir: skipping %s: it is a symlink to nothing", path)
        return False
    if target.is_relative_to(root):
        return True
    logger.warning(
        "models_dir: skipping %s: it is a symlink to %s, outside the models folder %s",
        path,
        target,
        root,
    )
    return False


def _models_of_folder(files: Sequence[Path]) -> list[ModelFile]:
    """The models among one folder's `.gguf` files, with their projectors attached."""
    mmprojs = [f for f in files if is_mmproj_name(f.name)]
    models = _whole_models([f for f in files if not is_mmproj_name(f.name)])
    attached = _attach_mmprojs([m.id for m in models], mmprojs)
    return [
        dataclasses.replace(m, mmproj=attached[m.id]) if m.id in attached else m for m in models
    ]


def _whole_models(files: Sequence[Path]) -> list[ModelFile]:
    """Plain files as they are; split parts grouped, complete sets only."""
    models: list[ModelFile] = []
    splits: dict[tuple[str, int], dict[int, Path]] = {}
    for path in files:
        part = split_part_name(path.name)
        if part is None:
            models.append(ModelFile(path.stem, path, (path,)))
        elif not 1 <= part.number <= part.count:
            logger.warning(
                "models_dir: skipping %s: part %d of %d is not a part of a split model",
                path,
                part.number,
                part.count,
            )
        else:
            splits.setdefault((part.model_id, part.count), {})[part.number] = path
    for (model_id, count), present in splits.items():
        folder = next(iter(present.values())).parent
        parts = [folder / split_part_file_name(model_id, n, count) for n in range(1, count + 1)]
        missing = [p for n, p in enumerate(parts, 1) if n not in present]
        if missing:
            logger.warning(
                "models_dir: skipping split model %s (%d parts): %s",
                model_id,
                count,
                _missing_parts_text(missing),
            )
            continue
        models.append(ModelFile(model_id, parts[0], tuple(parts)))
    return models


def _attach_mmprojs(model_ids: Sequence[str], mmprojs: Sequence[Path]) -> dict[str, Path]:
    """Which projector goes to which model of one folder (see the module's rules)."""
    named: dict[str, list[Path]] = {}
    unnamed: list[Path] = []
    for mmproj in mmprojs:
        owner = _named_model(mmproj, model_ids)
        if owner is not None:
            named.setdefault(owner, []).append(mmproj)
        elif len(model_ids) == 1:
            unnamed.append(mmproj)
        elif not model_ids:
            logger.warning("models_dir: %s is not attached: there is no model beside it", mmproj)
        else:
            logger.warning(
                "models_dir: %s is not attached: its folder holds %d models and its name "
                "names none of them (name it mmproj-<model id>.gguf)",
                mmproj,
                len(model_ids),
            )
    if len(model_ids) == 1 and unnamed and model_ids[0] not in named:
        named[model_ids[0]] = unnamed
    attached: dict[str, Path] = {}
    for model_id, candidates in named.items():
        attached[model_id] = candidates[0]
        if len(candidates) > 1:
            logger.warning(
                "models_dir: model %s has several mmproj files (%s); using %s",
                model_id,
                ", ".join(c.name for c in candidates),
                candidates[0].name,
            )
    return attached


def _named_model(mmproj: Path, model_ids: Sequence[str]) -> str | None:
    """The model an mmproj file's name names: the longest id its name continues with."""
    rest = mmproj.stem[len(_MMPROJ_PREFIX) :].lstrip(_SEPARATORS).lower()
    matches = [
        model_id
        for model_id in model_ids
        if rest == model_id.lower()
        or (rest.startswith(model_id.lower()) and rest[len(model_id)] in _SEPARATORS)
    ]
    return max(matches, key=len, default=None)


def _unique_ids(found: Iterable[tuple[int, ModelFile]]) -> list[ModelFile]:
    chosen: dict[str, ModelFile] = {}
    for _, model in sorted(found, key=lambda item: (item[0], str(item[1].path))):
        kept = chosen.get(model.id)
        if kept is None:
            chosen[model.id] = model
        else:
            logger.warning(
                "models_dir: skipping %s: %s already has the id %r", model.path, kept.path, model.id
            )
    return [chosen[model_id] for model_id in sorted(chosen)]


# --- metadata ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelMetadata:
    """What a model's files say about it, for listings and for the memory estimate.

    Header facts come from the first part (a split model's later parts carry only their
    tensors); sizes and parameter counts are summed over all parts.
    """

    architecture: str | None = None
    name: str | None = None
    parameter_count: int | None = None
    quantisation: str | None = None
    """The file type's name, e.g. "Q4_K_M"."""
    file_type: int | None = None
    context_length: int | None = None
    """The context the model was trained for; llama-server's default `-c 0` uses it."""
    size_bytes: int = 0
    """All parts together (not the projector)."""
    modified_at: int = 0
    """Unix seconds: the newest part's modification time."""
    block_count: int | None = None
    embedding_length: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None
    key_length: int | None = None
    value_length: int | None = None
    mmproj_bytes: int = 0
    """The multimodal projector's size, 0 without one: it is loaded beside the model."""

    @classmethod
    def from_summaries(
        cls, summaries: Sequence[GgufSummary], *, modified_at: int = 0, mmproj_bytes: int = 0
    ) -> ModelMetadata:
        """Combine the summaries of a model's parts, first part first."""
        first = summaries[0]
        counts = [s.parameter_count for s in summaries if s.parameter_count is not None]
        return cls(
            architecture=first.architecture,
            name=first.name,
            parameter_count=sum(counts) if counts else None,
            quantisation=first.quantisation,
            file_type=first.file_type,
            context_length=first.context_length,
            size_bytes=sum(s.size_bytes for s in summaries),
            modified_at=modified_at,
            block_count=first.block_count,
            embedding_length=first.embedding_length,
            head_count=first.head_count,
            head_count_kv=first.head_count_kv,
            key_length=first.key_length,
            value_length=first.value_length,
            mmproj_bytes=mmproj_bytes,
        )


def read_metadata(model: ModelFile) -> ModelMetadata:
    """Read every part's header (and the projector's) into one `ModelMetadata`.

    Raises `ModelFileError`, naming the file, if a part or the projector is missing,
    unreadable, not GGUF, or truncated.
    """
    summaries = [read_gguf_summary(part) for part in model.parts]
    mmproj_bytes = read_gguf_summary(model.mmproj).size_bytes if model.mmproj else 0
    try:
        modified_at = max(int(part.stat().st_mtime) for part in model.parts)
    except OSError as exc:
        raise ModelFileError(f"Model file {exc.filename} cannot be read: {exc.strerror}") from exc
    return ModelMetadata.from_summaries(
        summaries, modified_at=modified_at, mmproj_bytes=mmproj_bytes
    )


# --- memory --------------------------------------------------------------------------

_CTX_FLAGS = frozenset({"-c", "--ctx-size"})
_CACHE_K_FLAGS = frozenset({"-ctk", "--cache-type-k"})
_CACHE_V_FLAGS = frozenset({"-ctv", "--cache-type-v"})
_F16_BYTES = 2.0


def estimate_memory_mb(meta: ModelMetadata, args: Sequence[str]) -> float:
    """What the model will take once llama-server has loaded it with `args`, in MiB.

        bytes = size of all parts + projector
              + n_layer x n_ctx x (n_embd_k + n_embd_v) x bytes per cache element

    The second line is the KV cache: K and V for every layer and every position of the
    context. n_embd_k = key_length x n_head_kv (else n_embd / n_head x n_head_kv), and
    likewise n_embd_v with value_length; with equal K and V that is the familiar
    2 x n_layer x n_ctx x n_embd_kv x 2 bytes of an f16 cache. n_head_kv defaults to
    n_head, as in llama.cpp. n_ctx is the last `-c`/`--ctx-size` in `args`, and the
    trained context when there is none or it is 0 (llama-server's default). Parallel
    slots (`-np`) share that context, so they add nothing. The cache element is f16
    (2 bytes) unless `-ctk`/`-ctv` choose another type (q8_0 is 34 bytes per 32).

    An estimate, not a measurement: compute buffers (some hundreds of MiB) are left out,
    and sliding-window or recurrent layers, which need less cache, are counted as full
    attention. A model whose header lacks the layer or head counts is counted by its
    file size alone.
    """
    n_ctx = context_size_from_args(args) or meta.context_length or 0
    kv_bytes = n_ctx * _kv_bytes_per_position(meta, args)
    return (meta.size_bytes + meta.mmproj_bytes + kv_bytes) / _MIB


def context_size_from_args(args: Sequence[str]) -> int | None:
    """The last `-c N` / `--ctx-size N` in llama-server arguments; None if absent or bad.

    0 comes back as 0: "the trained context", for the caller to fill in.
    """
    value = _last_value(args, _CTX_FLAGS)
    if value is None:
        return None
    try:
        size = int(value)
    except ValueError:
        return None
    return size if size >= 0 else None


def _kv_bytes_per_position(meta: ModelMetadata, args: Sequence[str]) -> float:
    n_layer, n_head = meta.block_count, meta.head_count
    if not n_layer or not n_head:
        return 0.0
    n_head_kv = meta.head_count_kv if meta.head_count_kv is not None else n_head
    head_dim = meta.embedding_length / n_head if meta.embedding_length else None
    key_dim = meta.key_length or head_dim
    value_dim = meta.value_length or head_dim
    if key_dim is None or value_dim is None:
        return 0.0
    k_bytes = key_dim * n_head_kv * _cache_element_bytes(_last_value(args, _CACHE_K_FLAGS))
    v_bytes = value_dim * n_head_kv * _cache_element_bytes(_last_value(args, _CACHE_V_FLAGS))
    return n_layer * (k_bytes + v_bytes)


def _last_value(args: Sequence[str], flags: frozenset[str]) -> str | None:
    """The value after the last of `flags` (llama.cpp lets the last one win)."""
    value = None
    for i, arg in enumerate(args[:-1]):
        # llama.cpp reads `--ctx_size` as `--ctx-size`; it has no `--flag=value` form.
        name = arg.replace("_", "-") if arg.startswith("--") else arg
        if name in flags:
            value = args[i + 1]
    return value


def _cache_element_bytes(type_name: str | None) -> float:
    """Bytes per element of a KV cache type ("f16", "q8_0"...); f16 when unset or unknown."""
    if type_name is None:
        return _F16_BYTES
    return _type_bytes().get(type_name.lower(), _F16_BYTES)


@functools.cache
def _type_bytes() -> dict[str, float]:
    # The package's own table of ggml block sizes (imported late: it loads numpy).
    from gguf.constants import GGML_QUANT_SIZES

    return {t.name.lower(): size / block for t, (block, size) in GGML_QUANT_SIZES.items()}
