"""The model registry: resolving names, the default model, every config mistake it refuses,
and merging configured with scanned models."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llamaherd.catalog.library import ModelMetadata, scan_models_dir
from llamaherd.errors import ConfigError, LlamaherdError
from llamaherd.gateway.registry import ModelRegistry, ModelSpec, UnknownModelError, merge_specs

MIB = 1024 * 1024


def spec(model_id: str, *aliases: str, **fields: object) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        path=Path(f"/models/{model_id}.gguf"),
        aliases=aliases,
        **fields,  # type: ignore[arg-type]
    )


CODER = spec("coder", "gpt-4o-mini", "qwen-coder")
EMBED = spec("embed", "text-embedding-3-small", pinned=True)
CHAT = spec("chat")


# --- resolving names --------------------------------------------------------------------


def test_resolve_by_id_and_alias() -> None:
    registry = ModelRegistry([CODER, EMBED, CHAT], default_model="chat")

    assert registry.resolve("coder") is CODER
    assert registry.resolve("gpt-4o-mini") is CODER
    assert registry.resolve("qwen-coder") is CODER
    assert registry.resolve("text-embedding-3-small") is EMBED
    assert registry.resolve(None) is CHAT
    assert registry.resolve("") is CHAT


def test_unknown_name() -> None:
    registry = ModelRegistry([CODER, EMBED], default_model="coder")

    with pytest.raises(UnknownModelError) as err:
        registry.resolve("gpt-5")
    assert isinstance(err.value, LlamaherdError)
    assert err.value.name == "gpt-5"
    assert err.value.available == ("coder", "embed")
    assert str(err.value) == "The model 'gpt-5' does not exist. Available models: coder, embed"


def test_names_are_case_sensitive() -> None:
    with pytest.raises(UnknownModelError):
        ModelRegistry([CODER]).resolve("Coder")


def test_no_name_and_no_default() -> None:
    registry = ModelRegistry([CODER, EMBED])

    assert registry.default is None
    for name in (None, ""):
        with pytest.raises(UnknownModelError) as err:
            registry.resolve(name)
        assert err.value.name == name
        assert str(err.value) == (
            'No model was named and there is no default model: set "model" to one of coder, embed'
        )


def test_the_only_model_is_the_default() -> None:
    registry = ModelRegistry([CODER])

    assert registry.default is CODER
    assert registry.resolve(None) is CODER


def test_default_model_may_be_an_alias() -> None:
    registry = ModelRegistry([CODER, EMBED], default_model="text-embedding-3-small")

    assert registry.default is EMBED


def test_empty_registry() -> None:
    registry = ModelRegistry([])

    assert len(registry) == 0
    assert registry.default is None
    with pytest.raises(UnknownModelError, match="Available models: none"):
        registry.resolve("anything")


def test_collection_methods() -> None:
    registry = ModelRegistry([EMBED, CODER, CHAT])

    assert registry.ids() == ("embed", "coder", "chat")
    assert list(registry) == [EMBED, CODER, CHAT]
    assert len(registry) == 3
    assert registry.get("coder") is CODER
    assert registry.get("gpt-4o-mini") is None  # get takes ids only
    assert "gpt-4o-mini" in registry
    assert "coder" in registry
    assert "nope" not in registry


def test_an_alias_equal_to_its_own_id_is_harmless() -> None:
    registry = ModelRegistry([spec("m", "m", "other")])

    assert registry.resolve("m").id == "m"
    assert registry.resolve("other").id == "m"


# --- config mistakes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("specs", "default", "message"),
    [
        (
            [spec("a"), ModelSpec(id="a", path=Path("/elsewhere/a.gguf"))],
            None,
            "models.a: two models have the id 'a' (/models/a.gguf and /elsewhere/a.gguf); "
            "give each its own id",
        ),
        (
            [spec("")],
            None,
            "models: a model id must not be empty: give every model a name",
        ),
        (
            [spec("a", "x"), spec("b", "y", "x")],
            None,
            "models.b.aliases: 'x' is already an alias of model 'a'; "
            "an alias names one model: remove it from one of them",
        ),
        (
            [spec("a", "b"), spec("b")],  # the model it shadows comes later
            None,
            "models.a.aliases: 'b' is the id of another model; "
            "an alias must not shadow a model: remove it or rename that model",
        ),
        (
            [spec("a", "x", "x")],
            None,
            "models.a.aliases: 'x' is listed twice",
        ),
        (
            [spec("a", "")],
            None,
            "models.a.aliases: an alias must not be empty",
        ),
        (
            [spec("a"), spec("b", "bee")],
            "c",
            "default_model: 'c' is not the id or an alias of any model (models: a, b)",
        ),
        (
            [],
            "a",
            "default_model: 'a' is not the id or an alias of any model (models: none)",
        ),
    ],
)
def test_config_mistakes(specs: list[ModelSpec], default: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ModelRegistry(specs, default_model=default)
    assert str(err.value) == message


# --- specs ------------------------------------------------------------------------------------


def test_memory_needs_metadata() -> None:
    meta = ModelMetadata(
        size_bytes=1000 * MIB,
        context_length=8192,
        block_count=32,
        embedding_length=4096,
        head_count=32,
        head_count_kv=8,
    )

    assert spec("a").memory_mb is None
    assert spec("a", metadata=meta).memory_mb == pytest.approx(1000 + 1024)
    assert spec("a", metadata=meta, args=("-c", "2048")).memory_mb == pytest.approx(1000 + 256)


def test_server_args_add_the_projector() -> None:
    mmproj = Path("/models/mmproj-a.gguf")

    assert spec("a", args=("-ngl", "99")).server_args == ("-ngl", "99")
    assert spec("a", args=("-ngl", "99"), mmproj=mmproj).server_args == (
        "-ngl",
        "99",
        "--mmproj",
        str(mmproj),
    )
    # A projector the args name already is the user's choice.
    own = ("--mmproj", "/x/mine.gguf")
    assert spec("a", args=own, mmproj=mmproj).server_args == own
    assert spec("a", args=("-mm", "/x/mine.gguf"), mmproj=mmproj).server_args[-1] == "/x/mine.gguf"


def test_spec_from_a_scanned_file(tmp_path: Path) -> None:
    for name in ("gemma-3-4b.gguf", "mmproj-F16.gguf"):
        (tmp_path / name).write_bytes(b"")
    (model,) = scan_models_dir(tmp_path)

    made = ModelSpec.from_model_file(model, args=("-c", "4096"), ttl_s=300.0)

    assert made == ModelSpec(
        id="gemma-3-4b",
        path=tmp_path / "gemma-3-4b.gguf",
        args=("-c", "4096"),
        ttl_s=300.0,
        mmproj=tmp_path / "mmproj-F16.gguf",
    )


# --- merging configured and scanned models ------------------------------------------------


def scanned(folder: Path, *names: str) -> list[ModelSpec]:
    for name in names:
        (folder / name).write_bytes(b"")
    return [ModelSpec.from_model_file(m) for m in scan_models_dir(folder)]


def test_configured_models_win_by_id(tmp_path: Path) -> None:
    found = scanned(tmp_path, "coder.gguf", "llama.gguf")
    coder = ModelSpec(id="coder", path=Path("/elsewhere/coder.gguf"), args=("-c", "8192"))

    merged = merge_specs([coder], found)

    assert merged == [coder, ModelSpec(id="llama", path=tmp_path / "llama.gguf")]
    assert ModelRegistry(merged).resolve("coder") is coder


def test_configured_file_is_not_served_twice(tmp_path: Path) -> None:
    (tmp_path / "latest.gguf").symlink_to(tmp_path / "qwen2.5-coder-7b-q4.gguf")
    found = scanned(tmp_path, "qwen2.5-coder-7b-q4.gguf", "other.gguf")
    coder = ModelSpec(id="coder", path=tmp_path / "qwen2.5-coder-7b-q4.gguf")

    merged = merge_specs([coder], found)

    assert [s.id for s in merged] == ["coder", "other"]


def test_configured_alias_wins_over_a_scanned_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llamaherd.gateway")
    found = scanned(tmp_path, "gpt-4o-mini.gguf", "kept.gguf")
    coder = ModelSpec(id="coder", path=Path("/elsewhere/c.gguf"), aliases=("gpt-4o-mini",))

    merged = merge_specs([coder], found)

    assert [s.id for s in merged] == ["coder", "kept"]
    assert ModelRegistry(merged, default_model="coder").resolve("gpt-4o-mini") is coder
    assert (
        f"{tmp_path / 'gpt-4o-mini.gguf'} is not served as 'gpt-4o-mini': the config's models "
        "already use that name"
    ) in caplog.text


def test_merge_keeps_orders() -> None:
    explicit = [spec("z"), spec("a")]
    found = [spec("b"), spec("y")]

    assert [s.id for s in merge_specs(explicit, found)] == ["z", "a", "b", "y"]
