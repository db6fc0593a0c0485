"""What a GGUF model file says about itself, read from its header alone.

Model files run to tens of gigabytes, and the catalog looks at every one it is shown,
so this parses the header directly rather than through `gguf.GGUFReader`: that reader
decodes every metadata array element by element in Python (a large vocabulary costs
seconds) and maps every tensor. Here the file is memory-mapped and only the header's
pages are touched; array values are stepped over, not decoded, and tensor data is
never read.

It also catches a file cut short inside its tensor data (an interrupted download or
copy), which llama-server would otherwise only report after it has started loading: the
header says where each tensor's bytes lie, so the end of the last one is the least the
file's size must be.

The format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import functools
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from llamaherd.errors import ModelFileError

GGUF_MAGIC = b"GGUF"

# Version 1 wrote counts and lengths as 32-bit integers; nothing current produces it.
_SUPPORTED_VERSIONS = (2, 3)

_STRING = 8
_ARRAY = 9
_SCALAR_FORMATS = {
    0: "B",  # uint8
    1: "b",  # int8
    2: "H",  # uint16
    3: "h",  # int16
    4: "I",  # uint32
    5: "i",  # int32
    6: "f",  # float32
    7: "?",  # bool
    10: "Q",  # uint64
    11: "q",  # int64
    12: "d",  # float64
}

_Scalar = int | float | bool | str

# The data section starts at the first multiple of this after the header, unless the file
# sets `general.alignment`.
_DEFAULT_ALIGNMENT = 32

# llama.cpp marks a file type it guessed from the tensors (rather than read) with this bit.
_FTYPE_GUESSED = 1024


@dataclass(frozen=True)
class GgufSummary:
    """The facts about a model file that the catalog shows and decides on."""

    architecture: str | None
    """`general.architecture`, e.g. "llama"; None if the file does not say."""
    name: str | None
    """`general.name`, the name its converter gave the model."""
    size_bytes: int
    """The file's size on disk."""
    context_length: int | None
    """`<architecture>.context_length`, the context the model was trained for."""
    parameter_count: int | None
    """The sum of every tensor's element count; None for a file without tensors."""
    file_type: int | None = None
    """`general.file_type`, llama.cpp's LLAMA_FTYPE number (15 is Q4_K_M)."""
    quantisation: str | None = None
    """The file type's name, e.g. "Q4_K_M", "F16", "IQ4_XS"; None if unknown or unset."""
    block_count: int | None = None
    """`<architecture>.block_count`: the number of transformer layers."""
    embedding_length: int | None = None
    """`<architecture>.embedding_length` (n_embd)."""
    head_count: int | None = None
    """`<architecture>.attention.head_count`; None when absent or given per layer."""
    head_count_kv: int | None = None
    """`<architecture>.attention.head_count_kv` (grouped-query attention); None when absent
    (llama.cpp then takes head_count) or given per layer."""
    key_length: int | None = None
    """`<architecture>.attention.key_length`, the size of one head's key, when set."""
    value_length: int | None = None
    """`<architecture>.attention.value_length`, the size of one head's value, when set."""


def read_gguf_summary(path: Path | str) -> GgufSummary:
    """Summarise the GGUF file at `path` from its header.

    Raises `ModelFileError`, naming the path, when the file is missing, unreadable,
    not a GGUF file, a GGUF file whose header is cut short or corrupt, or one cut short
    inside its tensor data. A split model's part is checked on its own: each part holds
    its own header and tensors.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            _check_magic(path, f.read(len(GGUF_MAGIC)))
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _summarise(path, buf)
    except FileNotFoundError:
        raise ModelFileError(f"Model file {path} does not exist") from None
    except IsADirectoryError:
        raise ModelFileError(f"Model file {path} is a directory, not a file") from None
    except OSError as e:
        raise ModelFileError(f"Model file {path} cannot be read: {e.strerror or e}") from e


def _check_magic(path: Path, head: bytes) -> None:
    if head == GGUF_MAGIC:
        return
    if not head:
        raise ModelFileError(f"Model file {path} is not a GGUF file (it is empty)")
    raise ModelFileError(f"Model file {path} is not a GGUF file (its first bytes are {head!r})")


def _summarise(path: Path, buf: mmap.mmap) -> GgufSummary:
    try:
        header = _Header.parse(buf, path)
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(
            f"Model file {path} is a GGUF file whose header is truncated or corrupt ({e})"
        ) from e
    if header.data_end is not None and header.data_end > len(buf):
        raise ModelFileError(
            f"Model file {path} is truncated: its tensors need {header.data_end} bytes, "
            f"the file has {len(buf)}. Download or copy it again."
        )
    meta = header.metadata
    architecture = _as_str(meta.get("general.architecture"))

    def arch_int(key: str) -> int | None:
        return _as_int(meta.get(f"{architecture}.{key}")) if architecture else None

    file_type = _as_int(meta.get("general.file_type"))
    return GgufSummary(
        architecture=architecture,
        name=_as_str(meta.get("general.name")),
        size_bytes=len(buf),
        context_length=arch_int("context_length"),
        parameter_count=header.parameter_count if header.tensor_count else None,
        file_type=file_type,
        quantisation=quantisation_name(file_type),
        block_count=arch_int("block_count"),
        embedding_length=arch_int("embedding_length"),
        head_count=arch_int("attention.head_count"),
        head_count_kv=arch_int("attention.head_count_kv"),
        key_length=arch_int("attention.key_length"),
        value_length=arch_int("attention.value_length"),
    )


def quantisation_name(file_type: int | None) -> str | None:
    """The name of llama.cpp's file type number: 15 -> "Q4_K_M", 1 -> "F16", 30 -> "IQ4_XS".

    None for None and for a number this version of the `gguf` package does not know.
    """
    if file_type is None:
        return None
    return _file_type_names().get(file_type & ~_FTYPE_GUESSED)


@functools.cache
def _file_type_names() -> dict[int, str]:
    # gguf-py's LlamaFileType mirrors llama.h's LLAMA_FTYPE (ALL_F32, MOSTLY_Q4_K_M, ...).
    # Imported here, not at the top: the package pulls in numpy, about 0.2 s that a
    # command which reads no model file should not pay.
    from gguf.constants import LlamaFileType

    names: dict[int, str] = {}
    for member in LlamaFileType:
        if member.value == _FTYPE_GUESSED:
            continue
        names[int(member.value)] = member.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return names


@functools.cache
def _ggml_type_sizes() -> dict[int, tuple[int, int]]:
    """ggml tensor type -> (elements per block, bytes per block), from gguf-py's table."""
    from gguf.constants import GGML_QUANT_SIZES

    return {int(t): (int(block), int(size)) for t, (block, size) in GGML_QUANT_SIZES.items()}


def _as_str(value: _Scalar | None) -> str | None:
    return value if isinstance(value, str) else None


def _as_int(value: _Scalar | None) -> int | None:
    # bool is an int subclass; a boolean context length is a broken file, not 1.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class _Header:
    metadata: dict[str, _Scalar]
    """Scalar and string metadata; arrays are skipped, nothing here needs them."""
    tensor_count: int
    parameter_count: int
    data_end: int | None
    """Where the last tensor's bytes end: the least size of a whole file. None when a
    tensor's type is one this package cannot size (a newer ggml type), or no tensors."""

    @classmethod
    def parse(cls, buf: mmap.mmap, path: Path) -> _Header:
        cursor = _Cursor(buf, pos=len(GGUF_MAGIC), endian=_endianness(buf, path))
        cursor.u32()  # version, already checked by _endianness
        tensor_count = cursor.u64()
        kv_count = cursor.u64()
        metadata: dict[str, _Scalar] = {}
        for _ in range(kv_count):
            key = cursor.string()
            value = cursor.value(cursor.u32())
            if value is not None:
                metadata[key] = value
        tensors = [cursor.tensor_info() for _ in range(tensor_count)]
        parameter_count = sum(t.elements for t in tensors)
        data_start = _align(cursor.pos, _alignment(metadata))
        return cls(metadata, tensor_count, parameter_count, _data_end(tensors, data_start))


@dataclass(frozen=True)
class _TensorInfo:
    elements: int
    ggml_type: int
    offset: int
    """From the start of the data section."""


def _alignment(metadata: dict[str, _Scalar]) -> int:
    alignment = _as_int(metadata.get("general.alignment"))
    if alignment is None:
        return _DEFAULT_ALIGNMENT
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"general.alignment is {alignment}, not a power of two")
    return alignment


def _align(pos: int, alignment: int) -> int:
    return (pos + alignment - 1) // alignment * alignment


def _data_end(tensors: list[_TensorInfo], data_start: int) -> int | None:
    if not tensors:
        return None
    sizes = _ggml_type_sizes()
    end = 0
    for tensor in tensors:
        block = sizes.get(tensor.ggml_type)
        if block is None:
            return None
        elements_per_block, bytes_per_block = block
        nbytes = tensor.elements // elements_per_block * bytes_per_block
        end = max(end, tensor.offset + nbytes)
    return data_start + end


def _endianness(buf: mmap.mmap, path: Path) -> str:
    # GGUF has no endianness flag; a big-endian file shows up as a byte-swapped version.
    if len(buf) < len(GGUF_MAGIC) + 4:
        raise ValueError(f"the file ends after {len(buf)} bytes")
    (little,) = struct.unpack_from("<I", buf, len(GGUF_MAGIC))
    if little in _SUPPORTED_VERSIONS:
        return "<"
    (big,) = struct.unpack_from(">I", buf, len(GGUF_MAGIC))
    if big in _SUPPORTED_VERSIONS:
        return ">"
    raise ModelFileError(
        f"Model file {path} is GGUF version {little}, which llamaherd cannot read "
        f"(it reads versions {', '.join(map(str, _SUPPORTED_VERSIONS))})"
    )


class _Cursor:
    """Reads GGUF's primitive values forward from a position in the mapped file."""

    def __init__(self, buf: mmap.mmap, *, pos: int, endian: str) -> None:
        self._buf = buf
        self._pos = pos
        self._endian = endian

    def u32(self) -> int:
        return int(self._unpack("I"))

    def u64(self) -> int:
        return int(self._unpack("Q"))

    def string(self) -> str:
        return self._raw_string().decode("utf-8")

    def value(self, vtype: int) -> _Scalar | None:
        """Read a value of `vtype`; an array is skipped and gives None."""
        if vtype == _ARRAY:
            self._skip_array()
            return None
        if vtype == _STRING:
            # Metadata strings are meant to be UTF-8; a stray byte should not sink the file.
            return self._raw_string().decode("utf-8", errors="replace")
        return self._unpack(_scalar_format(vtype))

    @property
    def pos(self) -> int:
        return self._pos

    def tensor_info(self) -> _TensorInfo:
        """Read one tensor's description: element count, ggml type, data offset."""
        self._skip_string()  # name
        n_dims = self.u32()
        dims = [self.u64() for _ in range(n_dims)]
        ggml_type = self.u32()
        offset = self.u64()
        return _TensorInfo(math.prod(dims), ggml_type, offset)

    def _skip_array(self) -> None:
        item_type = self.u32()
        count = self.u64()
        if item_type == _STRING:
            self._skip_strings(count)
        elif item_type == _ARRAY:
            for _ in range(count):
                self._skip_array()
        else:
            self._advance(count * struct.calcsize(_scalar_format(item_type)))

    def _skip_strings(self, count: int) -> None:
        # The hot loop: a vocabulary holds up to a few hundred thousand strings, and
        # this is most of the time a summary takes. Hence locals and no per-item check.
        unpack_length = struct.Struct(self._endian + "Q").unpack_from
        buf = self._buf
        pos = self._pos
        try:
            for _ in range(count):
                (length,) = unpack_length(buf, pos)
                pos += 8 + length
        except struct.error:
            raise ValueError(f"a string at byte {pos} runs past the end of the file") from None
        self._advance(pos - self._pos)

    def _raw_string(self) -> bytes:
        length = self.u64()
        start = self._advance(length)
        return self._buf[start : start + length]

    def _skip_string(self) -> None:
        self._advance(self.u64())

    def _unpack(self, fmt: str) -> _Scalar:
        fmt = self._endian + fmt
        start = self._advance(struct.calcsize(fmt))
        (value,) = struct.unpack_from(fmt, self._buf, start)
        return value  # type: ignore[no-any-return]

    def _advance(self, n: int) -> int:
        """Move past `n` bytes and return where they started."""
        start = self._pos
        if start + n > len(self._buf):
            raise ValueError(f"a value at byte {start} runs past the end of the file")
        self._pos = start + n
        return start


def _scalar_format(vtype: int) -> str:
    try:
        return _SCALAR_FORMATS[vtype]
    except KeyError:
        raise ValueError(f"unknown metadata value type {vtype}") from None
