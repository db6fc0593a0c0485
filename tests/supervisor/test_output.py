from __future__ import annotations

import asyncio

from llamaherd.supervisor.output import MAX_LINE_CHARS, LogRing, pump_stream, telling_lines


async def feed(chunks: list[bytes]) -> list[str]:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    lines: list[str] = []
    await pump_stream(reader, lines.append)
    return lines


async def test_lines_split_across_chunks_and_crlf() -> None:
    assert await feed([b"hel", b"lo\r\nwor", b"ld\n", b"tail"]) == ["hello", "world", "tail"]


async def test_an_endless_line_is_cut_not_hoarded() -> None:
    lines = await feed([b"x" * (MAX_LINE_CHARS * 3 + 5)])
    assert [len(line) for line in lines] == [MAX_LINE_CHARS] * 3 + [5]


async def test_invalid_utf8_is_replaced() -> None:
    assert await feed([b"caf\xe9\n"]) == ["caf\ufffd"]


def test_ring_is_bounded_and_tells_listeners() -> None:
    ring = LogRing(capacity=3)
    heard: list[str] = []
    unsubscribe = ring.subscribe(heard.append)
    for n in range(5):
        ring.append(f"line {n}")
    unsubscribe()
    ring.append("unheard")
    assert ring.tail(10) == ["line 3", "line 4", "unheard"]
    assert ring.tail(1) == ["unheard"]
    assert ring.tail(0) == []
    assert heard == [f"line {n}" for n in range(5)]


def test_crash_evidence_prefers_the_servers_complaints() -> None:
    output = [
        "srv  load_model: loading model 'm.gguf'",
        "llama_model_load: error loading model: tensor 'x' has wrong shape",
        "srv  load_model: failed to load model, 'm.gguf'",
        "main: exiting due to model loading error",
        "srv    operator(): cleaning up before exit...",
    ]
    assert telling_lines(output) == output[1:4]
    quiet = [f"line {n}" for n in range(10)]
    assert telling_lines(quiet) == quiet[-5:]
