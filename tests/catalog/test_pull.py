"""Pulling models from a Hugging Face Hub of the test's own (tests/catalog/hub_server.py), with
the huggingface_hub library: which file a tag picks, every way a pull is refused before a
byte is written, and downloads that are cut, corrupted, joined and cancelled."""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from llamaherd.catalog.hub import Hub, Source, best_mmproj, parse_source, pick_model
from llamaherd.catalog.library import scan_models_dir
from llamaherd.catalog.pulls import PARTIAL_DIR, Pull, PullManager
from llamaherd.errors import PullError
from tests.catalog.hub_server import (
    AMBIGUOUS,
    GATED,
    LARGE,
    SPLIT,
    TINY,
    TOKEN,
    VISION,
    HubServer,
    standard_hub,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def hub(demo_model: Path) -> Iterator[HubServer]:
    with standard_hub(demo_model.read_bytes()) as server:
        yield server


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def manager(
    hub: HubServer, models: Path, *, token: str | bool = False, **kw: object
) -> PullManager:
    return PullManager(lambda: models, Hub(hub.url, token), **kw)  # type: ignore[arg-type]


async def pulled(pulls: PullManager, source: str) -> Pull:
    return await pulls.wait(await pulls.pull(source))


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ---- which file: pure ---------------------------------------------------------------------


def test_a_tag_matches_the_file_name_as_llama_cpp_does() -> None:
    paths = ["m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-q8_0.gguf", "mmproj-m-Q4_K_M.gguf", "x.md"]
    assert pick_model("o/r", paths, "Q4_K_M") == "m-Q4_K_M.gguf"
    assert pick_model("o/r", paths, "q8_0") == "m-q8_0.gguf"  # any case
    assert pick_model("o/r", paths, None) == "m-Q4_K_M.gguf"  # llama.cpp's default tag
    assert pick_model("o/r", ["only-F16.gguf"], None) == "only-F16.gguf"
    # A split model counts by its first part; the tag may be followed by "-".
    split = ["m-Q4_K_M-00002-of-00002.gguf", "m-Q4_K_M-00001-of-00002.gguf"]
    assert pick_model("o/r", split, "Q4_K_M") == "m-Q4_K_M-00001-of-00002.gguf"
    with pytest.raises(PullError, match=r"matches no|no model file .* Q4_K_M, Q4_K_S, Q8_0"):
        pick_model("o/r", paths, "Q5_K_M")


def test_the_projector_is_the_closest_one_in_the_models_folder() -> None:
    paths = ["a/m-Q8_0.gguf", "mmproj-F16.gguf", "a/mmproj-F16.gguf", "a/mmproj-Q8_0.gguf"]
    assert best_mmproj(paths, "a/m-Q8_0.gguf") == "a/mmproj-Q8_0.gguf"
    assert best_mmproj(paths, "m-Q8_0.gguf") == "mmproj-F16.gguf"
    assert best_mmproj(["m.gguf"], "m.gguf") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
         Source("bartowski/Qwen2.5-0.5B-Instruct-GGUF", quant="Q4_K_M")),
        ("hf.co/o/r", Source("o/r")),
        ("https://huggingface.co/o/r/sub/f.gguf", Source("o/r", file="sub/f.gguf")),
    ],
)  # fmt: skip
def test_a_source_names_a_repository_and_a_tag_or_a_file(text: str, expected: Source) -> None:
    assert parse_source(text) == expected


@pytest.mark.parametrize("text", ["", "justaname", "o/r/x", "o/r:Q4 K", "o/r/../../etc.gguf", 7])
def test_a_wrong_source_is_a_400_naming_the_forms(text: object) -> None:
    with pytest.raises(PullError, match="OWNER/REPO") as caught:
        parse_source(text)
    assert caught.value.status == 400


# ---- pulls against the test's hub -----------------------------------------------------------


async def test_a_quantisation_tag_pulls_its_file_into_models_dir(
    hub: HubServer, models: Path
) -> None:
    pulls = manager(hub, models)
    pull = await pulled(pulls, f"{TINY}:Q4_K_M")
    assert pull.state == "done", pull.error
    assert pull.as_dict() | {"id": "-", "startedAt": 0} == {
        "id": "-", "source": f"{TINY}:Q4_K_M", "repo": TINY, "files": ["Tiny-Q4_K_M.gguf"],
        "model": "Tiny-Q4_K_M", "state": "done", "bytes": 300_000, "total": 300_000,
        "error": None, "startedAt": 0,
    }  # fmt: skip
    assert (models / "Tiny-Q4_K_M.gguf").read_bytes() == hub.repos[TINY].files["Tiny-Q4_K_M.gguf"]
    assert files_in(models) == ["Tiny-Q4_K_M.gguf"]  # no partial file left
    assert [m.id for m in scan_models_dir(models)] == ["Tiny-Q4_K_M"]


async def test_an_ambiguous_tag_is_refused_listing_the_matches(
    hub: HubServer, models: Path
) -> None:
    with pytest.raises(PullError) as caught:
        await manager(hub, models).pull(f"{AMBIGUOUS}:q4_k_m")
    assert caught.value.status == 409
    assert "Alpha-Q4_K_M.gguf, Beta-Q4_K_M.gguf" in str(caught.value)
    assert files_in(models) == []


async def test_a_missing_repository_or_file_is_a_404(hub: HubServer, models: Path) -> None:
    pulls = manager(hub, models)
    with pytest.raises(PullError, match="no repository test-org/Nothing-GGUF") as caught:
        await pulls.pull("test-org/Nothing-GGUF:Q4_K_M")
    assert caught.value.status == 404
    with pytest.raises(PullError, match="its quantisations: Q4_K_M, Q8_0") as caught:
        await pulls.pull(f"{TINY}:Q5_K_M")
    assert caught.value.status == 404
    with pytest.raises(PullError, match=r"has no file nope\.gguf"):
        await pulls.pull(f"{TINY}/nope.gguf")
    assert files_in(models) == []


async def test_a_gated_repository_needs_a_token_with_access(hub: HubServer, models: Path) -> None:
    for token, status in ((False, 401), ("hf_someone_elses_token", 403)):
        with pytest.raises(PullError, match="gated") as caught:
            await manager(hub, models, token=token).pull(GATED)
        assert caught.value.status == status
        assert "hf_someone" not in str(caught.value)  # a token is never echoed
    assert not hub.downloads("Secret-Q4_K_M.gguf")
    pull = await pulled(manager(hub, models, token=TOKEN), GATED)
    assert pull.state == "done", pull.error
    assert files_in(models) == ["Secret-Q4_K_M.gguf"]


async def test_a_split_model_and_a_projector_come_whole(hub: HubServer, models: Path) -> None:
    pulls = manager(hub, models)
    split = await pulled(pulls, f"{SPLIT}:Q4_K_M")
    vision = await pulled(pulls, VISION)  # no tag: Q4_K_M, llama.cpp's default
    assert (split.state, vision.state) == ("done", "done")
    assert split.resolution.targets == tuple(f"Big-Q4_K_M-0000{n}-of-00003.gguf" for n in (1, 2, 3))
    found = {m.id: m for m in scan_models_dir(models)}
    assert sorted(found) == ["Big-Q4_K_M", "Eye-Q4_K_M"]
    assert len(found["Big-Q4_K_M"].parts) == 3
    # Closest to the model's Q4 of the two projectors: Q8_0 (8 bits) rather than F16.
    mmproj = found["Eye-Q4_K_M"].mmproj
    assert mmproj is not None and mmproj.name == "mmproj-Eye-Q4_K_M.gguf"
    assert mmproj.read_bytes() == hub.repos[VISION].files["mmproj-Eye-Q8_0.gguf"]


async def test_an_interrupted_download_resumes_where_it_stopped(
    hub: HubServer, models: Path
) -> None:
    name = "Large-Q4_K_M.gguf"
    expected = hub.repos[LARGE].files[name]
    # The connection drops after 11 MiB: huggingface_hub has written its first chunk (10 MB)
    # and asks for the rest.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    hub.cut[name] = chunk + 1024 * 1024
    pull = await pulled(manager(hub, models), LARGE)
    assert pull.state == "done", pull.error
    assert hub.downloads(name) == [None, f"bytes={chunk}-"]
    assert (models / name).read_bytes() == expected
    # A pull that stopped before (llamaherd killed) left its partial file: the next resumes it.
    (models / name).unlink()
    (models / PARTIAL_DIR).mkdir()
    (models / PARTIAL_DIR / f"{name}.part").write_bytes(expected[:123_456])
    hub.requests.clear()
    pull = await pulled(manager(hub, models), f"{LARGE}/{name}")
    assert pull.state == "done", pull.error
    assert pull.bytes == len(expected)
    assert hub.downloads(name) == ["bytes=123456-"]
    assert (models / name).read_bytes() == expected
    assert files_in(models) == [name]


async def test_a_corrupted_download_is_refused_and_removed(hub: HubServer, models: Path) -> None:
    hub.corrupt.add("Tiny-Q4_K_M.gguf")
    pull = await pulled(manager(hub, models), f"{TINY}:Q4_K_M")
    assert pull.state == "failed"
    assert pull.error is not None and "corrupt" in pull.error and "sha256" in pull.error
    assert files_in(models) == []  # neither the model nor a partial file
    hub.corrupt.clear()
    assert (await pulled(manager(hub, models), f"{TINY}:Q4_K_M")).state == "done"


async def test_too_little_disk_space_is_refused_before_anything_is_written(
    hub: HubServer, models: Path
) -> None:
    pulls = manager(hub, models, free_space=lambda folder: 200_000)
    with pytest.raises(
        PullError, match=r"not enough disk space .* 293.0 KiB more, .* has 195.3 KiB free"
    ) as caught:
        await pulls.pull(f"{TINY}:Q4_K_M")
    assert caught.value.status == 507
    assert files_in(models) == [] and not (models / PARTIAL_DIR).exists()
    assert not hub.downloads("Tiny-Q4_K_M.gguf")


async def test_two_pulls_of_one_file_download_it_once(hub: HubServer, models: Path) -> None:
    hub.delay_s = 0.01  # still downloading when the second pull comes
    pulls = manager(hub, models)
    first, second = await asyncio.gather(
        pulls.pull(f"{TINY}:Q4_K_M"), pulls.pull(f"{TINY}/Tiny-Q4_K_M.gguf")
    )
    assert first is second
    await pulls.wait(first)
    assert first.state == "done"
    assert len(hub.downloads("Tiny-Q4_K_M.gguf")) == 1
    assert [p["id"] for p in pulls.pulls()] == [first.id]


async def test_a_cancelled_pull_stops_and_leaves_nothing(hub: HubServer, models: Path) -> None:
    hub.delay_s = 0.02
    pulls = manager(hub, models)
    told: list[dict[str, object]] = []
    pulls.on_change(told.append)
    pull = await pulls.pull(f"{TINY}:Q4_K_M")
    async with asyncio.timeout(10):
        while not hub.downloads("Tiny-Q4_K_M.gguf"):
            await asyncio.sleep(0.01)
    cancelled = await pulls.cancel(pull.id)
    assert cancelled.state == "cancelled"
    assert pull.task is not None and pull.task.done()
    assert files_in(models) == []
    assert [event["state"] for event in told] == ["downloading", "cancelled", "cancelled"]
    with pytest.raises(PullError) as caught:
        await pulls.cancel("nope")
    assert caught.value.status == 404


async def test_several_pulls_run_at_once(hub: HubServer, models: Path) -> None:
    hub.delay_s = 0.005
    pulls = manager(hub, models)
    started = await asyncio.gather(pulls.pull(f"{TINY}:Q4_K_M"), pulls.pull(VISION))
    assert [p.state for p in started] == ["downloading", "downloading"]
    finished = await asyncio.gather(*(pulls.wait(p) for p in started))
    assert [p.state for p in finished] == ["done", "done"]
    assert sorted(m.id for m in scan_models_dir(models)) == ["Eye-Q4_K_M", "Tiny-Q4_K_M"]


async def test_progress_is_told_at_most_four_times_a_second(hub: HubServer, models: Path) -> None:
    hub.delay_s = 0.05  # the pull stays "downloading" while the test feeds it progress
    pulls = manager(hub, models)
    told: list[dict[str, object]] = []
    pulls.on_change(told.append)
    pull = await pulls.pull(f"{TINY}:Q4_K_M")
    told.clear()
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < 1.0:
        pulls._add_bytes(pull, 0)  # what the download thread sends, chunk by chunk
        await asyncio.sleep(0.002)
    assert 2 <= len(told) <= 5, len(told)
    await pulls.cancel(pull.id)


async def test_a_file_another_llamaherd_downloads_is_left_to_it(
    hub: HubServer, models: Path
) -> None:
    partial = models / PARTIAL_DIR / "Tiny-Q4_K_M.gguf.part"
    partial.parent.mkdir()
    with partial.open("ab") as held:  # as `llamaherd serve` holds it while it downloads
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        pull = await pulled(manager(hub, models), f"{TINY}:Q4_K_M")
    assert pull.state == "failed"
    assert pull.error is not None and "being downloaded by another llamaherd" in pull.error
    assert not hub.downloads("Tiny-Q4_K_M.gguf")
    assert (await pulled(manager(hub, models), f"{TINY}:Q4_K_M")).state == "done"
