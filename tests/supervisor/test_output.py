from __future__ import annotations

import os

from llamaherd.supervisor.output import (
    GATHER_S,
    MAX_LINE_CHARS,
    LogRing,
    PipeReader,
    main_complaint,
    read_pipe,
    telling_lines,
)


async def feed(chunks: list[bytes]) -> list[str]:
    """What a pipe reader hands on when the pipe's reads bring `chunks`, then it closes."""
    lines: list[str] = []
    reader = PipeReader(lines.extend, lambda: 0.0)
    for chunk in chunks:
        reader.data_received(chunk)
    reader.connection_lost(None)
    assert reader.drained.done()
    return lines


async def test_a_real_pipe_is_read_to_its_end_in_batches() -> None:
    batches: list[list[str]] = []
    read_end, write_end = os.pipe()
    reader = await read_pipe(read_end, batches.append, lambda: GATHER_S)
    os.write(write_end, b"one\n")
    os.write(write_end, b"two\nthree\nunfinished")
    os.close(write_end)
    await reader.drained
    assert [line for batch in batches for line in batch] == ["one", "two", "three", "unfinished"]


def test_output_gathers_only_while_nobody_waits_for_single_lines() -> None:
    ring = LogRing()
    unsubscribe_batches = ring.subscribe_batches(lambda lines: None)
    assert ring.gather_s() == GATHER_S
    unsubscribe = ring.subscribe(lambda line: None)  # the readiness wait, say
    assert ring.gather_s() == 0.0
    unsubscribe()
    unsubscribe()  # twice is harmless
    assert ring.gather_s() == GATHER_S
    unsubscribe_batches()


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


async def test_a_character_split_across_two_reads_is_decoded_whole() -> None:
    """Issue "Supervisor correctness" #6: a read boundary falls inside "é"."""
    head = (b"a" * 99 + b"\n") * 655
    tail = b"b" * 35 + "é".encode() + b"\n"
    lines = await feed([head + tail[:36], tail[36:]])  # the first byte of "é" ends a read
    assert lines[-1] == "b" * 35 + "é"


LOAD_FAILURE = [
    "llama_model_loader: loaded meta data with 0 key-value pairs",
    "gguf_init_from_file_impl: invalid magic characters: 'xxxx', expected 'GGUF'",
    "llama_model_load: error loading model: llama_model_loader: failed to load model from m",
    "llama_model_load_from_file_impl: failed to load model",
    "common_init_from_params: failed to load model 'm'",
    "srv    load_model: failed to load model, 'm'",
    "srv    operator(): operator(): cleaning up before exit...",
    "main: exiting due to model loading error",
]


def test_the_cause_outranks_the_generic_failure_lines() -> None:
    telling = telling_lines(LOAD_FAILURE, limit=2)
    assert telling == [LOAD_FAILURE[1], LOAD_FAILURE[-1]]  # the cause, then the latest word
    assert main_complaint(LOAD_FAILURE) == LOAD_FAILURE[1]
    assert len(telling_lines(LOAD_FAILURE)) == 5


def test_routine_output_has_no_complaint() -> None:
    routine = ["main: model loaded", "srv  update_slots: all slots are idle"]
    assert main_complaint(routine) is None
    assert telling_lines(routine) == routine


def test_routine_lines_that_mention_truncation_are_no_complaint() -> None:
    """llama-server logs "truncated = 0" for every finished request: no cause of a crash."""
    routine = [
        "srv  log_server_r: request: POST /v1/chat/completions 127.0.0.1 200",
        "slot release: id  3 | task 35 | stop processing: n_tokens = 30, truncated = 0",
    ]
    assert main_complaint(routine) is None
