"""read_gguf_summary on the demo model, on small quantised files written
here, on truncated copies, and on files that are not GGUF."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType

from llamaherd.catalog import gguf as gguf_reader
from llamaherd.catalog.demo_model import DEMO_MODEL_NAME, write_demo_model
from llamaherd.catalog.gguf import quantisation_name, read_gguf_summary
from llamaherd.errors import ModelFileError

# One small tensor of each kind a real model mixes: K-quant, legacy quant, half, float.
_Q4_K_BYTES = np.arange(2 * 144, dtype=np.uint8).reshape(2, 144)  # 2 rows of 256 elements
_Q8_0_BYTES = np.arange(2 * 34, dtype=np.uint8).reshape(2, 34)  # 2 rows of 32 elements


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    file_type: int | None = LlamaFileType.MOSTLY_Q4_K_M,
    hparams: Mapping[str, int | Sequence[int]] | None = None,
    alignment: int | None = None,
    tensors: bool = True,
) -> Path:
    """Write a small GGUF file: `hparams` keys are under `<arch>.`, e.g. "block_count"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(path, arch)
    try:
        if file_type is not None:
            writer.add_file_type(file_type)
        if alignment is not None:
            writer.add_custom_alignment(alignment)
        for key, value in (hparams or {}).items():
            if isinstance(value, int):
                writer.add_uint32(f"{arch}.{key}", value)
            else:
                writer.add_array(f"{arch}.{key}", list(value))
        if tensors:
            writer.add_tensor("a.weight", _Q4_K_BYTES, raw_dtype=GGMLQuantizationType.Q4_K)
            writer.add_tensor("b.weight", _Q8_0_BYTES, raw_dtype=GGMLQuantizationType.Q8_0)
            writer.add_tensor("c.weight", np.ones((3, 5), dtype=np.float16))
            writer.add_tensor("d.weight", np.ones(7, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def tensor_data_end(path: Path) -> int:
    """Where the last tensor's bytes end, by the gguf package's own (slow, full) reader."""
    reader = gguf.GGUFReader(path)
    return max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_demo_model(tmp_path / "demo.gguf")


def test_summary_of_demo_model(model: Path) -> None:
    summary = read_gguf_summary(model)

    assert summary.architecture == "llama"
    assert summary.name == DEMO_MODEL_NAME
    assert summary.size_bytes == model.stat().st_size
    assert summary.context_length == 2048
    assert summary.parameter_count is not None
    # Most of the file is F32 weights, four bytes each.
    assert 0.8 < summary.parameter_count * 4 / summary.size_bytes < 1.0


def test_summary_accepts_a_str_path(model: Path) -> None:
    assert read_gguf_summary(str(model)).name == DEMO_MODEL_NAME


def test_text_file_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("hello world\n")

    with pytest.raises(ModelFileError, match="is not a GGUF file") as err:
        read_gguf_summary(path)
    assert str(path) in str(err.value)
    assert "b'hell'" in str(err.value)


def test_empty_file_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.touch()

    with pytest.raises(ModelFileError, match="is empty") as err:
        read_gguf_summary(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.gguf"

    with pytest.raises(ModelFileError, match="does not exist") as err:
        read_gguf_summary(path)
    assert str(path) in str(err.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="is a directory") as err:
        read_gguf_summary(tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("keep", [4, 10, 100, 2000])
def test_truncated_header(model: Path, tmp_path: Path, keep: int) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(model.read_bytes()[:keep])

    with pytest.raises(ModelFileError, match="truncated or corrupt") as err:
        read_gguf_summary(path)
    assert str(path) in str(err.value)


def test_unsupported_version(model: Path, tmp_path: Path) -> None:
    path = tmp_path / "v1.gguf"
    data = bytearray(model.read_bytes())
    data[4:8] = (1).to_bytes(4, "little")
    path.write_bytes(bytes(data))

    with pytest.raises(ModelFileError, match="GGUF version 1") as err:
        read_gguf_summary(path)
    assert str(path) in str(err.value)


def test_demo_model_hyperparameters(model: Path) -> None:
    summary = read_gguf_summary(model)

    assert summary.file_type == 0
    assert summary.quantisation == "F32"
    assert summary.block_count == 2
    assert summary.embedding_length == 64
    assert summary.head_count == 4
    assert summary.head_count_kv == 2
    assert summary.key_length is None
    assert summary.value_length is None


def test_quantised_file(tmp_path: Path) -> None:
    hparams = {
        "context_length": 32768,
        "block_count": 28,
        "embedding_length": 3584,
        "attention.head_count": 28,
        "attention.head_count_kv": 4,
        "attention.key_length": 128,
        "attention.value_length": 96,
    }
    path = write_gguf(tmp_path / "q.gguf", arch="qwen2", hparams=hparams)

    summary = read_gguf_summary(path)

    assert summary.architecture == "qwen2"
    assert summary.file_type == 15
    assert summary.quantisation == "Q4_K_M"
    assert summary.parameter_count == 2 * 256 + 2 * 32 + 15 + 7
    assert summary.size_bytes == path.stat().st_size
    assert (summary.context_length, summary.block_count, summary.embedding_length) == (
        32768,
        28,
        3584,
    )
    assert (summary.head_count, summary.head_count_kv) == (28, 4)
    assert (summary.key_length, summary.value_length) == (128, 96)


def test_missing_keys_are_none(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "bare.gguf", file_type=None, tensors=False)

    summary = read_gguf_summary(path)

    assert summary.architecture == "llama"
    assert summary.parameter_count is None
    assert summary.file_type is None
    assert summary.quantisation is None
    assert summary.context_length is None
    assert summary.head_count is None


def test_per_layer_head_counts_are_none(tmp_path: Path) -> None:
    # Some architectures give head counts per layer, as arrays; a single number would lie.
    path = write_gguf(
        tmp_path / "x.gguf",
        hparams={"attention.head_count": [4, 8], "attention.head_count_kv": [2, 0]},
    )

    summary = read_gguf_summary(path)

    assert summary.head_count is None
    assert summary.head_count_kv is None


@pytest.mark.parametrize(
    ("file_type", "name"),
    [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (7, "Q8_0"),
        (15, "Q4_K_M"),
        (17, "Q5_K_M"),
        (18, "Q6_K"),
        (30, "IQ4_XS"),
        (32, "BF16"),
        (1024 | 15, "Q4_K_M"),  # llama.cpp's "guessed" bit
        (999, None),
        (None, None),
    ],
)
def test_quantisation_name(file_type: int | None, name: str | None) -> None:
    assert quantisation_name(file_type) == name


def test_every_file_type_has_a_name() -> None:
    for member in LlamaFileType:
        if member is not LlamaFileType.GUESSED:
            assert quantisation_name(int(member)) in member.name


def test_whole_file_ends_where_its_last_tensor_ends(tmp_path: Path) -> None:
    # The writer pads after the last tensor; a copy without that padding is still whole.
    path = write_gguf(tmp_path / "q.gguf")
    end = tensor_data_end(path)
    assert end < path.stat().st_size
    exact = tmp_path / "exact.gguf"
    exact.write_bytes(path.read_bytes()[:end])

    assert read_gguf_summary(exact).size_bytes == end


@pytest.mark.parametrize("missing", [1, 30, 400])
def test_truncated_tensor_data(tmp_path: Path, missing: int) -> None:
    source = write_gguf(tmp_path / "q.gguf")
    end = tensor_data_end(source)
    path = tmp_path / "cut.gguf"
    path.write_bytes(source.read_bytes()[: end - missing])

    with pytest.raises(ModelFileError) as err:
        read_gguf_summary(path)
    assert str(err.value).startswith(
        f"Model file {path} is truncated: its tensors need {end} bytes, "
        f"the file has {end - missing}"
    )


def test_truncated_demo_model(model: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    data = model.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ModelFileError, match="is truncated: its tensors need"):
        read_gguf_summary(path)


def test_custom_alignment(tmp_path: Path) -> None:
    source = write_gguf(tmp_path / "a.gguf", alignment=256)
    end = tensor_data_end(source)
    exact = tmp_path / "exact.gguf"
    exact.write_bytes(source.read_bytes()[:end])
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(source.read_bytes()[: end - 1])

    assert read_gguf_summary(exact).quantisation == "Q4_K_M"
    with pytest.raises(ModelFileError, match=f"need {end} bytes"):
        read_gguf_summary(cut)


def test_alignment_not_a_power_of_two_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_uint32("general.alignment", 48)
    writer.add_tensor("d.weight", np.ones(7, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    with pytest.raises(ModelFileError, match=r"corrupt \(general.alignment is 48"):
        read_gguf_summary(path)


def test_unknown_tensor_type_skips_the_size_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A ggml type newer than the installed gguf package cannot be sized: no verdict, no error.
    source = write_gguf(tmp_path / "q.gguf")
    path = tmp_path / "cut.gguf"
    path.write_bytes(source.read_bytes()[: tensor_data_end(source) - 1])
    sizes = dict(gguf_reader._ggml_type_sizes())
    del sizes[int(GGMLQuantizationType.Q8_0)]
    monkeypatch.setattr(gguf_reader, "_ggml_type_sizes", lambda: sizes)

    assert read_gguf_summary(path).quantisation == "Q4_K_M"
