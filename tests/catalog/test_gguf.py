"""read_gguf_summary and is_gguf_file on the demo model and on files that are not GGUF."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaherd.catalog.demo_model import DEMO_MODEL_NAME, write_demo_model
from llamaherd.catalog.gguf import is_gguf_file, read_gguf_summary
from llamaherd.errors import ModelFileError


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


def test_is_gguf_file(model: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello world\n")

    assert is_gguf_file(model)
    assert not is_gguf_file(text)
    assert not is_gguf_file(tmp_path / "missing.gguf")
    assert not is_gguf_file(tmp_path)


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
