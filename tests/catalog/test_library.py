"""The models folder: which files are models, split sets, projectors, symlinks; metadata of
whole models; the memory estimate."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from llamaherd.catalog.demo_model import write_demo_model
from llamaherd.catalog.library import (
    ModelFile,
    ModelMetadata,
    context_size_from_args,
    estimate_memory_mb,
    is_mmproj_name,
    model_file,
    read_metadata,
    scan_models_dir,
    split_part_file_name,
    split_part_name,
)
from llamaherd.errors import ModelFileError
from tests.catalog.test_gguf import tensor_data_end, write_gguf

MIB = 1024 * 1024


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="llamaherd.catalog")
    return caplog


def touch(folder: Path, *names: str) -> None:
    """Scanning reads names only, so empty files stand in for models."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def ids(models: list[ModelFile]) -> list[str]:
    return [m.id for m in models]


def by_id(models: list[ModelFile]) -> dict[str, ModelFile]:
    return {m.id: m for m in models}


# --- the folder itself ---------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as err:
        scan_models_dir(tmp_path / "nope")
    assert str(err.value) == f"Models folder {tmp_path / 'nope'} does not exist"


def test_file_instead_of_folder(tmp_path: Path) -> None:
    touch(tmp_path, "model.gguf")

    with pytest.raises(ModelFileError) as err:
        scan_models_dir(tmp_path / "model.gguf")
    assert str(err.value) == f"Models folder {tmp_path / 'model.gguf'} is not a folder"


def test_empty_folder(tmp_path: Path) -> None:
    assert scan_models_dir(tmp_path) == []


# --- plain files and subfolders --------------------------------------------------------


def test_plain_models_sorted_by_id(tmp_path: Path) -> None:
    touch(tmp_path, "zeta.gguf", "Alpha.gguf", "mid.q4.gguf", "notes.txt", "x.gguf.part")
    touch(tmp_path, ".hidden.gguf", ".cache/cached.gguf")

    models = scan_models_dir(tmp_path)

    assert ids(models) == ["Alpha", "mid.q4", "zeta"]
    assert models[1] == ModelFile("mid.q4", tmp_path / "mid.q4.gguf", (tmp_path / "mid.q4.gguf",))


def test_scan_is_deterministic(tmp_path: Path) -> None:
    touch(tmp_path, *(f"m{i}.gguf" for i in (5, 3, 9, 1)), "sub/m0.gguf", "sub/m7.gguf")

    assert scan_models_dir(tmp_path) == scan_models_dir(tmp_path)
    assert ids(scan_models_dir(tmp_path)) == ["m0", "m1", "m3", "m5", "m7", "m9"]


def test_subfolders_one_level_deep(tmp_path: Path) -> None:
    touch(tmp_path, "top.gguf", "gemma3/gemma-3-4b.gguf", "a/b/too-deep.gguf")
    (tmp_path / "dir.gguf").mkdir()
    touch(tmp_path, "dir.gguf/inside.gguf")

    models = by_id(scan_models_dir(tmp_path))

    assert sorted(models) == ["gemma-3-4b", "inside", "top"]
    assert models["gemma-3-4b"].path == tmp_path / "gemma3" / "gemma-3-4b.gguf"


def test_same_id_top_level_wins_then_first_path(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    touch(tmp_path, "b/model.gguf", "model.gguf", "b/other.gguf", "a/other.gguf")

    models = by_id(scan_models_dir(tmp_path))

    assert models["model"].path == tmp_path / "model.gguf"
    assert models["other"].path == tmp_path / "a" / "other.gguf"
    assert f"skipping {tmp_path / 'b' / 'model.gguf'}: {tmp_path / 'model.gguf'}" in warnings.text
    assert "already has the id 'other'" in warnings.text


# --- symlinks --------------------------------------------------------------------------


def test_symlink_inside_the_folder_is_a_model(tmp_path: Path) -> None:
    touch(tmp_path, "real.gguf", "sub/deep.gguf")
    (tmp_path / "latest.gguf").symlink_to("real.gguf")
    (tmp_path / "shortcut.gguf").symlink_to(tmp_path / "sub" / "deep.gguf")

    models = by_id(scan_models_dir(tmp_path))

    assert sorted(models) == ["deep", "latest", "real", "shortcut"]
    assert models["latest"].path == tmp_path / "latest.gguf"


def test_symlink_out_of_the_folder_is_skipped(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    models_dir = tmp_path / "models"
    touch(tmp_path, "elsewhere/secret.gguf", "elsewhere/nested/other.gguf", "models/kept.gguf")
    (models_dir / "secret.gguf").symlink_to(tmp_path / "elsewhere" / "secret.gguf")
    (models_dir / "escape").symlink_to(tmp_path / "elsewhere" / "nested")
    touch(models_dir, "sub/x.gguf")
    (models_dir / "sub" / "up.gguf").symlink_to("../../elsewhere/secret.gguf")

    assert ids(scan_models_dir(models_dir)) == ["kept", "x"]
    for link in ("secret.gguf", "escape", "sub/up.gguf"):
        assert f"skipping {models_dir / link}: it is a symlink to" in warnings.text
    assert f"outside the models folder {models_dir}" in warnings.text


def test_dangling_symlink_is_skipped(tmp_path: Path, warnings: pytest.LogCaptureFixture) -> None:
    (tmp_path / "gone.gguf").symlink_to(tmp_path / "missing.gguf")
    touch(tmp_path, "here.gguf")

    assert ids(scan_models_dir(tmp_path)) == ["here"]
    assert f"skipping {tmp_path / 'gone.gguf'}: it is a symlink to nothing" in warnings.text


def test_models_folder_may_itself_be_a_symlink(tmp_path: Path) -> None:
    touch(tmp_path, "real/m.gguf")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "n.gguf").symlink_to(tmp_path / "real" / "m.gguf")

    models = scan_models_dir(tmp_path / "link")

    assert ids(models) == ["m", "n"]
    assert models[0].path == tmp_path / "link" / "m.gguf"


# --- split models ------------------------------------------------------------------------


def test_split_part_names() -> None:
    assert split_part_name("big-00002-of-00003.gguf") == split_part_name("big-00002-of-00003.gguf")
    part = split_part_name("Qwen-72B-Q4_K_M-00002-of-00012.gguf")
    assert part is not None
    assert (part.model_id, part.number, part.count) == ("Qwen-72B-Q4_K_M", 2, 12)
    assert split_part_name("big.gguf") is None
    assert split_part_name("big-2-of-3.gguf") is None
    assert split_part_name("big-00001-of-00003.bin") is None
    assert split_part_file_name("big", 2, 3) == "big-00002-of-00003.gguf"


def test_complete_split_set_is_one_model(tmp_path: Path) -> None:
    names = [split_part_file_name("big", n, 3) for n in (3, 1, 2)]
    touch(tmp_path, *names, "small.gguf")

    models = by_id(scan_models_dir(tmp_path))

    assert sorted(models) == ["big", "small"]
    big = models["big"]
    assert big.path == tmp_path / "big-00001-of-00003.gguf"
    assert big.parts == tuple(tmp_path / f"big-0000{n}-of-00003.gguf" for n in (1, 2, 3))


def test_incomplete_split_set_is_skipped(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    touch(tmp_path, "big-00001-of-00003.gguf", "big-00003-of-00003.gguf", "ok.gguf")
    touch(tmp_path, "huge-00002-of-00004.gguf", "huge-00003-of-00004.gguf")

    assert ids(scan_models_dir(tmp_path)) == ["ok"]
    assert "skipping split model big (3 parts): part big-00002-of-00003.gguf is missing" in (
        warnings.text
    )
    assert (
        "skipping split model huge (4 parts): parts huge-00001-of-00004.gguf, "
        "huge-00004-of-00004.gguf are missing"
    ) in warnings.text


def test_split_part_out_of_range_is_skipped(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    touch(tmp_path, "a-00000-of-00001.gguf", "a-00001-of-00001.gguf", "b-00003-of-00002.gguf")

    models = scan_models_dir(tmp_path)

    assert ids(models) == ["a"]
    assert models[0].parts == (tmp_path / "a-00001-of-00001.gguf",)
    assert "b-00003-of-00002.gguf: part 3 of 2 is not a part of a split model" in warnings.text


def test_split_model_in_a_subfolder_with_its_mmproj(tmp_path: Path) -> None:
    touch(tmp_path, "vl/qwen-vl-00001-of-00002.gguf", "vl/qwen-vl-00002-of-00002.gguf")
    touch(tmp_path, "vl/mmproj-qwen-vl-f16.gguf")

    (model,) = scan_models_dir(tmp_path)

    assert model.id == "qwen-vl"
    assert len(model.parts) == 2
    assert model.mmproj == tmp_path / "vl" / "mmproj-qwen-vl-f16.gguf"


# --- projectors ------------------------------------------------------------------------


def test_mmproj_names() -> None:
    assert is_mmproj_name("mmproj-F16.gguf")
    assert is_mmproj_name("MMPROJ_model.gguf")
    assert not is_mmproj_name("model-mmproj.gguf")


def test_mmproj_goes_to_the_only_model_of_its_folder(tmp_path: Path) -> None:
    touch(tmp_path, "gemma3/gemma-3-4b.gguf", "gemma3/mmproj-F16.gguf", "plain.gguf")

    models = by_id(scan_models_dir(tmp_path))

    assert sorted(models) == ["gemma-3-4b", "plain"]  # the projector is not a model
    assert models["gemma-3-4b"].mmproj == tmp_path / "gemma3" / "mmproj-F16.gguf"
    assert models["plain"].mmproj is None  # not a model of that folder


@pytest.mark.parametrize(
    "mmproj", ["mmproj-llava.gguf", "mmproj-llava-f16.gguf", "MMPROJ_Llava.Q8_0.gguf"]
)
def test_mmproj_that_names_its_model(tmp_path: Path, mmproj: str) -> None:
    touch(tmp_path, "llava.gguf", "other.gguf", mmproj)

    models = by_id(scan_models_dir(tmp_path))

    assert models["llava"].mmproj == tmp_path / mmproj
    assert models["other"].mmproj is None


def test_mmproj_names_the_longest_matching_model(tmp_path: Path) -> None:
    touch(tmp_path, "qwen.gguf", "qwen-vl.gguf", "mmproj-qwen-vl-f16.gguf", "mmproj-qwen.gguf")

    models = by_id(scan_models_dir(tmp_path))

    assert models["qwen-vl"].mmproj == tmp_path / "mmproj-qwen-vl-f16.gguf"
    assert models["qwen"].mmproj == tmp_path / "mmproj-qwen.gguf"


def test_mmproj_naming_no_model_of_a_shared_folder(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    touch(tmp_path, "a.gguf", "b.gguf", "mmproj-F16.gguf", "mmproj-abc.gguf")

    models = scan_models_dir(tmp_path)

    assert [m.mmproj for m in models] == [None, None]
    assert (
        f"{tmp_path / 'mmproj-F16.gguf'} is not attached: its folder holds 2 models and its "
        "name names none of them (name it mmproj-<model id>.gguf)"
    ) in warnings.text
    assert f"{tmp_path / 'mmproj-abc.gguf'} is not attached" in warnings.text


def test_mmproj_without_a_model(tmp_path: Path, warnings: pytest.LogCaptureFixture) -> None:
    touch(tmp_path, "vision/mmproj-F16.gguf")

    assert scan_models_dir(tmp_path) == []
    assert "mmproj-F16.gguf is not attached: there is no model beside it" in warnings.text


def test_several_mmproj_for_one_model(tmp_path: Path, warnings: pytest.LogCaptureFixture) -> None:
    touch(tmp_path, "g/model.gguf", "g/mmproj-F16.gguf", "g/mmproj-BF16.gguf")

    (model,) = scan_models_dir(tmp_path)

    assert model.mmproj == tmp_path / "g" / "mmproj-BF16.gguf"
    assert "model model has several mmproj files (mmproj-BF16.gguf, mmproj-F16.gguf); using" in (
        warnings.text
    )


def test_named_mmproj_wins_over_a_generic_one(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    touch(tmp_path, "g/model.gguf", "g/mmproj-F16.gguf", "g/mmproj-model.gguf")

    (model,) = scan_models_dir(tmp_path)

    assert model.mmproj == tmp_path / "g" / "mmproj-model.gguf"
    assert warnings.text == ""


# --- a configured file ------------------------------------------------------------------


def test_model_file_for_a_plain_path(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"

    assert model_file(path) == ModelFile("m", path, (path,))
    assert model_file(path, model_id="coder", mmproj=tmp_path / "p.gguf") == ModelFile(
        "coder", path, (path,), tmp_path / "p.gguf"
    )


def test_model_file_for_a_split_path(tmp_path: Path) -> None:
    touch(tmp_path, *(split_part_file_name("big", n, 2) for n in (1, 2)))

    model = model_file(tmp_path / "big-00001-of-00002.gguf")

    assert model.id == "big"
    assert model.parts == (
        tmp_path / "big-00001-of-00002.gguf",
        tmp_path / "big-00002-of-00002.gguf",
    )


def test_model_file_names_a_missing_part(tmp_path: Path) -> None:
    touch(tmp_path, "big-00001-of-00002.gguf")

    with pytest.raises(ModelFileError) as err:
        model_file(tmp_path / "big-00001-of-00002.gguf")
    assert str(err.value) == (
        f"Model file {tmp_path / 'big-00001-of-00002.gguf'} is part 1 of 2 of a split model, "
        "but part big-00002-of-00002.gguf is missing"
    )


def test_model_file_wants_the_first_part(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as err:
        model_file(tmp_path / "big-00002-of-00002.gguf")
    assert "is part 2 of 2 of a split model: name its first part" in str(err.value)
    assert str(tmp_path / "big-00001-of-00002.gguf") in str(err.value)


# --- metadata -----------------------------------------------------------------------------

HPARAMS = {
    "context_length": 4096,
    "block_count": 4,
    "embedding_length": 256,
    "attention.head_count": 8,
    "attention.head_count_kv": 2,
}


def test_metadata_of_a_plain_model_with_mmproj(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", hparams=HPARAMS)
    mmproj = write_gguf(tmp_path / "mmproj-m.gguf", arch="clip", file_type=1)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    (model,) = scan_models_dir(tmp_path)

    meta = read_metadata(model)

    assert meta == ModelMetadata(
        architecture="llama",
        parameter_count=2 * 256 + 2 * 32 + 15 + 7,
        quantisation="Q4_K_M",
        file_type=15,
        context_length=4096,
        size_bytes=path.stat().st_size,
        modified_at=1_700_000_000,
        block_count=4,
        embedding_length=256,
        head_count=8,
        head_count_kv=2,
        mmproj_bytes=mmproj.stat().st_size,
    )


def test_metadata_of_a_split_model(tmp_path: Path) -> None:
    # As llama-gguf-split writes them: the header facts in the first part, tensors in each.
    parts = [
        write_gguf(tmp_path / split_part_file_name("big", 1, 3), hparams=HPARAMS),
        write_gguf(tmp_path / split_part_file_name("big", 2, 3), file_type=None),
        write_gguf(tmp_path / split_part_file_name("big", 3, 3), file_type=None),
    ]
    for n, part in enumerate(parts):
        os.utime(part, (1_700_000_000 + n, 1_700_000_000 + 10 * n))
    (model,) = scan_models_dir(tmp_path)

    meta = read_metadata(model)

    assert meta.size_bytes == sum(p.stat().st_size for p in parts)
    assert meta.parameter_count == 3 * (2 * 256 + 2 * 32 + 15 + 7)
    assert meta.quantisation == "Q4_K_M"
    assert meta.context_length == 4096
    assert meta.modified_at == 1_700_000_020
    assert meta.mmproj_bytes == 0


def test_metadata_of_a_truncated_part_names_it(tmp_path: Path) -> None:
    first = write_gguf(tmp_path / split_part_file_name("big", 1, 2), hparams=HPARAMS)
    second = write_gguf(tmp_path / split_part_file_name("big", 2, 2), file_type=None)
    second.write_bytes(second.read_bytes()[: tensor_data_end(second) - 10])
    model = model_file(first)

    with pytest.raises(ModelFileError) as err:
        read_metadata(model)
    assert str(err.value).startswith(f"Model file {second} is truncated")


def test_metadata_with_a_missing_mmproj(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")

    with pytest.raises(ModelFileError, match="does not exist"):
        read_metadata(model_file(path, mmproj=tmp_path / "mmproj-gone.gguf"))


# --- the memory estimate --------------------------------------------------------------------

# Llama-3-8B's shape: 32 layers, 4096 wide, 32 heads, 8 KV heads, trained on 8192 tokens.
# Its f16 KV cache at the full context is 2 x 32 x 8192 x 1024 x 2 bytes = 1024 MiB.
LLAMA3_8B = ModelMetadata(
    architecture="llama",
    context_length=8192,
    size_bytes=4_920 * MIB,
    block_count=32,
    embedding_length=4096,
    head_count=32,
    head_count_kv=8,
)


@pytest.mark.parametrize(
    ("args", "kv_mib"),
    [
        ([], 1024),
        (["-c", "0"], 1024),  # llama-server's default: the trained context
        (["-c", "4096"], 512),
        (["--ctx-size", "2048"], 256),
        (["--ctx_size", "2048"], 256),  # llama.cpp reads "_" as "-" in long flags
        (["-c", "16384"], 2048),  # beyond training is still allocated
        (["-c", "1024", "-ngl", "99", "-c", "4096"], 512),  # the last one wins
        (["-np", "4", "-c", "4096"], 512),  # slots share the context
        (["--parallel", "8"], 1024),
        (["-c", "many"], 1024),
        (["-ngl", "99", "-c"], 1024),  # a flag without a value
        (["-ctk", "q8_0", "-ctv", "q8_0"], 1024 * 34 / 32 / 2),
        (["--cache-type-k", "q4_0"], 512 * 18 / 32 / 2 + 512),
        (["-ctk", "f32", "-ctv", "F32"], 2048),
        (["-ctk", "nonsense"], 1024),
    ],
)
def test_estimate_from_args(args: list[str], kv_mib: float) -> None:
    assert estimate_memory_mb(LLAMA3_8B, args) == pytest.approx(4_920 + kv_mib)


def test_estimate_uses_key_and_value_lengths() -> None:
    # DeepSeek-V2-Lite's attention: 16 heads, keys of 192, values of 128, 27 layers.
    meta = ModelMetadata(
        context_length=4096,
        block_count=27,
        embedding_length=2048,
        head_count=16,
        head_count_kv=16,
        key_length=192,
        value_length=128,
    )
    kv_bytes = 27 * 4096 * (192 * 16 + 128 * 16) * 2

    assert estimate_memory_mb(meta, []) == pytest.approx(kv_bytes / MIB)


def test_estimate_without_kv_heads_takes_all_heads() -> None:
    meta = ModelMetadata(context_length=1024, block_count=2, embedding_length=64, head_count=4)

    assert estimate_memory_mb(meta, []) == pytest.approx(2 * 2 * 1024 * 64 * 2 / MIB)


def test_estimate_counts_the_projector() -> None:
    meta = ModelMetadata(size_bytes=100 * MIB, mmproj_bytes=50 * MIB)

    assert estimate_memory_mb(meta, ["-c", "4096"]) == pytest.approx(150)


@pytest.mark.parametrize(
    "missing", ["block_count", "head_count", "embedding_length", "context_length"]
)
def test_estimate_without_the_shape_is_the_file_size(missing: str) -> None:
    fields = {
        "size_bytes": 10 * MIB,
        "context_length": 4096,
        "block_count": 32,
        "embedding_length": 4096,
        "head_count": 32,
    }
    del fields[missing]

    assert estimate_memory_mb(ModelMetadata(**fields), []) == pytest.approx(10)  # type: ignore[arg-type]


def test_estimate_of_the_demo_model(tmp_path: Path) -> None:
    path = write_demo_model(tmp_path / "demo.gguf")
    meta = read_metadata(model_file(path))
    # 2 layers, 2048 context, 64 wide with 4 heads of which 2 for K/V: 32 values per position.
    kv_bytes = 2 * 2 * 2048 * 32 * 2

    assert estimate_memory_mb(meta, []) == pytest.approx((path.stat().st_size + kv_bytes) / MIB)
    assert estimate_memory_mb(meta, ["-c", "512"]) == pytest.approx(
        (path.stat().st_size + kv_bytes / 4) / MIB
    )


def test_context_size_from_args() -> None:
    assert context_size_from_args([]) is None
    assert context_size_from_args(["-c", "0"]) == 0
    assert context_size_from_args(["--ctx-size", "8192"]) == 8192
    assert context_size_from_args(["-c", "-5"]) is None
    assert context_size_from_args(["--ctx-size=8192"]) is None  # not a form llama.cpp reads
