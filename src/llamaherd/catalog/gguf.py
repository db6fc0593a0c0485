"""What a GGUF model file says about itself, read from its header alone.

Model files run to tens of gigabytes, and the catalog looks at every one it is shown,
so this parses the header directly rather than through `gguf.GGUFReader`: that reader
decodes every metadata array element by element in Python (a large vocabulary costs
seconds) and maps every tensor. Here the file is memory-mapped and only the header's
pages are touched; array values are stepped over, not decoded, and tensor data is
never read.

The format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

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


def is_gguf_file(path: Path | str) -> bool:
    """Whether `path` is a readable file that starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except OSError:
        return False


def read_gguf_summary(path: Path | str) -> GgufSummary:
    """Summarise the GGUF file at `path` from its header.

    Raises `ModelFileError`, naming the path, when the file is missing, unreadable,
    not a GGUF file, or a GGUF file whose header is cut short or corrupt.
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
    architecture = _as_str(header.metadata.get("general.architecture"))
    context_key = f"{architecture}.context_length"
    return GgufSummary(
        architecture=architecture,
        name=_as_str(header.metadata.get("general.name")),
        size_bytes=len(buf),
        context_length=_as_int(header.metadata.get(context_key)) if architecture else None,
        parameter_count=header.parameter_count if header.tensor_count else None,
    )


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
        parameter_count = sum(cursor.tensor_elements() for _ in range(tensor_count))
        return cls(metadata, tensor_count, parameter_count)


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

    def tensor_elements(self) -> int:
        """Read one tensor's description and return how many elements it holds."""
        self._skip_string()  # name
        n_dims = self.u32()
        dims = [self.u64() for _ in range(n_dims)]
        self.u32()  # ggml type
        self.u64()  # offset into the data section
        return math.prod(dims)

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
