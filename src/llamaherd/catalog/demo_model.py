"""A tiny, real GGUF model that llama-server can load and run.

llamaherd's tests and its demo have to drive a genuine llama-server, and no model
weights can be downloaded where they run. So this module writes one from nothing: a
two-block llama with 64-dim embeddings, a byte-level BPE vocabulary and a ChatML chat
template, its weights drawn at random from a seeded generator. Its answers are
gibberish, but llama-server loads it, tokenizes, applies the template and generates
tokens exactly as it would for a real model, in well under a second, from half a
megabyte on disk.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from gguf import GGUFWriter, LlamaFileType, TokenType

from llamaherd.errors import ModelFileError

DEMO_MODEL_NAME = "llamaherd-demo"

_ARCH = "llama"
_N_LAYERS = 2
_N_EMBD = 64
_N_HEAD = 4
_N_HEAD_KV = 2
_N_FF = 128
_CONTEXT_LENGTH = 2048
_RMS_EPS = 1e-5
_ROPE_FREQ_BASE = 10000.0

# GGUFWriter cannot write an empty array and llama.cpp refuses a "gpt2" vocabulary
# without a merges key, so the vocabulary carries a few genuine merges; each merged
# token is in the vocabulary too, as a real BPE vocabulary would have it.
_MERGES = ("Ġ t", "h e", "Ġ a", "i n", "Ġt he", "e r", "o n", "Ġ s")

_BOS = "<|endoftext|>"
_IM_START = "<|im_start|>"
_IM_END = "<|im_end|>"

_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int


def write_demo_model(path: Path, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the demo model to `path` and return `path`.

    The same seed gives a byte-identical file. The file appears whole or not at all:
    it is written beside `path` under a temporary name and moved into place.

    Only a path where nothing exists yet is written, unless `overwrite` (the command line's
    `--force`); even then only a regular file is replaced, never a directory, a device, a
    FIFO, a socket or a symbolic link: run as root onto /dev/full, a plain replace once turned
    the device into a file, and a mistyped path could as well name a real model.
    """
    path = Path(path)
    _check_target(path, overwrite=overwrite)  # before the work, so a refusal comes at once
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _temporary_sibling(path) as tmp:
            _write_gguf(tmp, seed)
            _move_into_place(tmp, path, overwrite=overwrite)
    except OSError as exc:  # a full disk, a read-only folder, a file where a folder should be
        reason = exc.strerror or str(exc)
        raise ModelFileError(f"cannot write the demo model to {path}: {reason}") from exc
    return path


# os.link's answers on filesystems that have no hard links (FAT, some network and FUSE mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


def _move_into_place(tmp: Path, path: Path, *, overwrite: bool) -> None:
    if overwrite:
        _check_target(path, overwrite=True)  # again: something else may have appeared there
        os.replace(tmp, path)
        return
    try:
        # A hard link fails if anything at all is at `path`: no window between check and write.
        os.link(tmp, path)
    except FileExistsError:
        _check_target(path, overwrite=False)
        raise  # it went away again in between; the caller reports the error as it is
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        _check_target(path, overwrite=False)
        os.replace(tmp, path)


def _check_target(path: Path, *, overwrite: bool) -> None:
    """Raise ModelFileError unless `path` may be written: nothing there, or (with `overwrite`)
    a regular file."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there (a missing or wrong folder is reported when writing)
    if stat.S_ISDIR(info.st_mode):
        raise ModelFileError(
            f"{path} is a directory; give a file path such as {path / 'demo.gguf'}"
        )
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(
            f"{path} {_what_is(path, info.st_mode)}; demo-model does not replace it, even with "
            "--force (only a regular file can be replaced). Choose another path"
        )
    if not overwrite:
        raise ModelFileError(
            f"{path} already exists (a file of {_size(info.st_size)}); choose another path, "
            "or add --force to replace it"
        )


def _what_is(path: Path, mode: int) -> str:
    if stat.S_ISLNK(mode):
        return f"is a symbolic link (to {os.readlink(path)})"
    kinds = (
        (stat.S_ISCHR, "is a character device"),
        (stat.S_ISBLK, "is a block device"),
        (stat.S_ISFIFO, "is a named pipe (FIFO)"),
        (stat.S_ISSOCK, "is a socket"),
    )
    return next((text for test, text in kinds if test(mode)), "is not a regular file")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} byte{'' if size == 1 else 's'}"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@contextlib.contextmanager
def _temporary_sibling(path: Path) -> Iterator[Path]:
    # Same directory as the target so the final rename cannot cross filesystems. Only a
    # unique name is made here; GGUFWriter creates the file, so it gets the umask's
    # permissions rather than mkstemp's 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _write_gguf(path: Path, seed: int) -> None:
    vocab = _build_vocab()
    writer = GGUFWriter(path, _ARCH)
    try:
        _add_hparams(writer, n_vocab=len(vocab.tokens))
        _add_tokenizer(writer, vocab)
        rng = np.random.default_rng(seed)
        for name, tensor in _weights(rng, n_vocab=len(vocab.tokens)):
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_hparams(writer: GGUFWriter, *, n_vocab: int) -> None:
    writer.add_name(DEMO_MODEL_NAME)
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(_CONTEXT_LENGTH)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(_N_LAYERS)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD_KV)
    writer.add_rope_dimension_count(_N_EMBD // _N_HEAD)
    writer.add_rope_freq_base(_ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(_RMS_EPS)


def _add_tokenizer(writer: GGUFWriter, vocab: _Vocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(_CHATML_TEMPLATE)


def _build_vocab() -> _Vocab:
    tokens = list(_byte_to_unicode().values())
    tokens += ["".join(merge.split(" ")) for merge in _MERGES]
    types = [int(TokenType.NORMAL)] * len(tokens)
    specials = [_BOS, _IM_START, _IM_END]
    tokens += specials
    types += [int(TokenType.CONTROL)] * len(specials)
    return _Vocab(
        tokens=tokens,
        types=types,
        merges=list(_MERGES),
        bos_id=tokens.index(_BOS),
        # Generation should stop where the chat template closes a turn.
        eos_id=tokens.index(_IM_END),
    )


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters.

    Byte-level BPE vocabularies spell every token in these characters (a space is "Ġ"),
    and llama.cpp maps text to them before looking tokens up.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return dict(sorted(mapping.items()))


def _weights(
    rng: np.random.Generator, *, n_vocab: int
) -> Iterator[tuple[str, npt.NDArray[np.float32]]]:
    # numpy shapes are ggml's dimensions reversed: token_embd is {n_embd, n_vocab} in ggml.
    head_dim = _N_EMBD // _N_HEAD
    n_embd_kv = head_dim * _N_HEAD_KV
    yield "token_embd.weight", _random(rng, n_vocab, _N_EMBD)
    for i in range(_N_LAYERS):
        yield f"blk.{i}.attn_norm.weight", _ones(_N_EMBD)
        yield f"blk.{i}.attn_q.weight", _random(rng, _N_EMBD, _N_EMBD)
        yield f"blk.{i}.attn_k.weight", _random(rng, n_embd_kv, _N_EMBD)
        yield f"blk.{i}.attn_v.weight", _random(rng, n_embd_kv, _N_EMBD)
        yield f"blk.{i}.attn_output.weight", _random(rng, _N_EMBD, _N_EMBD)
        yield f"blk.{i}.ffn_norm.weight", _ones(_N_EMBD)
        yield f"blk.{i}.ffn_gate.weight", _random(rng, _N_FF, _N_EMBD)
        yield f"blk.{i}.ffn_up.weight", _random(rng, _N_FF, _N_EMBD)
        yield f"blk.{i}.ffn_down.weight", _random(rng, _N_EMBD, _N_FF)
    yield "output_norm.weight", _ones(_N_EMBD)
    yield "output.weight", _random(rng, n_vocab, _N_EMBD)


def _random(rng: np.random.Generator, rows: int, cols: int) -> npt.NDArray[np.float32]:
    # Scaled like a standard initialisation so activations stay finite through the blocks.
    scale = 1.0 / math.sqrt(cols)
    return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)


def _ones(n: int) -> npt.NDArray[np.float32]:
    return np.ones(n, dtype=np.float32)
