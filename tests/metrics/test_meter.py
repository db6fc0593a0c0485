"""RequestMeter: what one request's answer says about it, read from the chunks as they passed.

The answers are shaped like the real llama-server's, cut into pieces at awkward
places the way a socket delivers them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llamaherd.gateway.records import RequestRecord
from llamaherd.metrics.meter import BODY_LIMIT_BYTES, STREAM_TAIL_BYTES, RequestMeter
from tests.clock import FakeClock

pytestmark = pytest.mark.timeout(10)

TIMINGS = {
    "cache_n": 19,
    "prompt_n": 1,
    "prompt_ms": 0.25,
    "prompt_per_token_ms": 0.25,
    "prompt_per_second": 4000.0,
    "predicted_n": 4,
    "predicted_ms": 0.5,
    "predicted_per_token_ms": 0.125,
    "predicted_per_second": 8000.0,
}


class Meter:
    """A meter with a hand-moved clock and the records it produced."""

    def __init__(self, *, stream: bool, endpoint: str = "/v1/chat/completions") -> None:
        self.clock = FakeClock(100.0)
        self.records: list[RequestRecord] = []
        self.meter = RequestMeter(
            self.records.append, "coder", endpoint, stream=stream, clock=self.clock
        )

    def answer(self, chunks: list[bytes], *, status: int = 200, error: str | None = None) -> None:
        self.clock.now += 0.5
        self.meter.dispatched()
        self.meter.on_start(status, [(b"content-type", b"application/json")])
        for chunk in chunks:
            self.clock.now += 0.1
            self.meter.on_chunk(chunk)
        self.clock.now += 0.1
        self.meter.on_end(error)

    @property
    def record(self) -> RequestRecord:
        assert len(self.records) == 1
        return self.records[0]


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chat_chunk(content: str | None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "choices": [{"finish_reason": None if content else "length", "index": 0, "delta": delta}],
        "object": "chat.completion.chunk",
        **extra,
    }


def test_a_plain_openai_answer_gives_usage_and_timings() -> None:
    body = json.dumps(
        {
            "choices": [{"message": {"role": "assistant", "content": "Hi there"}}],
            "object": "chat.completion",
            "usage": {"completion_tokens": 4, "prompt_tokens": 20, "total_tokens": 24},
            "timings": TIMINGS,
        }
    ).encode()
    m = Meter(stream=False)
    m.answer(pieces(body, 7))

    record = m.record
    assert (record.model, record.endpoint, record.status) == ("coder", "/v1/chat/completions", 200)
    assert (record.prompt_tokens, record.completion_tokens) == (20, 4)
    assert (record.prompt_tps, record.generation_tps) == (4000.0, 8000.0)
    assert record.stream is False and record.ttft_s is None
    assert record.queue_wait_s == pytest.approx(0.5)
    assert record.latency_s == pytest.approx(0.5 + 0.1 * len(pieces(body, 7)) + 0.1)
    assert record.error is None and not record.client_disconnected


def test_a_native_completion_answer_counts_tokens_evaluated_and_predicted() -> None:
    body = json.dumps(
        {
            "content": "1XW",
            "stop": True,
            "tokens_predicted": 3,
            "tokens_evaluated": 7,
            "timings": {**TIMINGS, "cache_n": 6, "prompt_n": 1, "predicted_n": 3},
        }
    ).encode()
    m = Meter(stream=False, endpoint="/completion")
    m.answer([body])
    assert (m.record.prompt_tokens, m.record.completion_tokens) == (7, 3)
    assert m.record.generation_tps == 8000.0


def test_without_usage_the_prompt_counts_cached_tokens_too() -> None:
    # llama-server's stream without include_usage: timings only; prompt_n excludes the cache.
    m = Meter(stream=True)
    m.answer([sse(chat_chunk("a"), chat_chunk(None, timings=TIMINGS))])
    assert (m.record.prompt_tokens, m.record.completion_tokens) == (20, 4)


@pytest.mark.parametrize("size", [1, 5, 64, 1000])
def test_a_stream_whose_last_report_is_split_across_chunks(size: int) -> None:
    # Long enough that the kept tail is trimmed while it flows.
    tokens = [chat_chunk(f"token {i} " + "x" * 40) for i in range(400)]
    body = sse(*tokens, chat_chunk(None, timings=TIMINGS))
    assert len(body) > 2 * STREAM_TAIL_BYTES
    m = Meter(stream=True)
    m.answer(pieces(body, size))

    record = m.record
    assert record.stream is True
    assert (record.prompt_tokens, record.completion_tokens) == (20, 4)
    assert (record.prompt_tps, record.generation_tps) == (4000.0, 8000.0)
    # The first body byte came 0.5 s (queue) + 0.1 s (first chunk) after arrival.
    assert record.ttft_s == pytest.approx(0.6)


def test_usage_in_a_chunk_of_its_own_after_the_timings() -> None:
    usage = {"completion_tokens": 4, "prompt_tokens": 21, "total_tokens": 25}
    body = sse(chat_chunk("a"), chat_chunk(None, timings=TIMINGS), {"choices": [], "usage": usage})
    m = Meter(stream=True)
    m.answer(pieces(body, 13))
    assert (m.record.prompt_tokens, m.record.completion_tokens) == (21, 4)
    assert m.record.generation_tps == 8000.0


def test_a_native_stream_ends_with_its_report_and_no_done() -> None:
    events = [
        {"content": "a", "stop": False, "tokens_predicted": 1, "tokens_evaluated": 7},
        {"content": "b", "stop": False, "tokens_predicted": 2, "tokens_evaluated": 7},
        {"content": "", "stop": True, "tokens_predicted": 2, "tokens_evaluated": 7, "timings": {}},
    ]
    m = Meter(stream=True, endpoint="/completion")
    m.answer(pieces(sse(*events, done=False).replace(b"\n", b"\r\n"), 9))
    assert (m.record.prompt_tokens, m.record.completion_tokens) == (7, 2)
    assert m.record.generation_tps is None


def test_a_stream_without_timings_has_no_counts() -> None:
    m = Meter(stream=True)
    m.answer([sse(chat_chunk("a"), chat_chunk("b"), chat_chunk(None))])
    record = m.record
    assert record.status == 200 and record.error is None
    assert record.prompt_tokens is None and record.completion_tokens is None
    assert record.prompt_tps is None and record.generation_tps is None
    assert record.ttft_s is not None


def test_a_huge_plain_body_is_not_kept_and_stays_a_plain_answer() -> None:
    body = json.dumps({"data": [{"embedding": [0.125] * 200_000}], "usage": {}}).encode()
    assert len(body) > BODY_LIMIT_BYTES
    m = Meter(stream=False, endpoint="/v1/embeddings")
    m.answer(pieces(body, 65536))
    record = m.record
    assert record.status == 200 and record.stream is False and record.ttft_s is None
    assert record.prompt_tokens is None and record.completion_tokens is None
    assert len(m.meter._body) <= 2 * STREAM_TAIL_BYTES  # nothing like the whole body is held


def test_an_upstream_error_answer_is_recorded_with_its_status() -> None:
    body = b'{"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}}'
    m = Meter(stream=False)
    m.answer([body], status=400)
    assert m.record.status == 400 and m.record.prompt_tokens is None


def test_a_client_that_leaves_mid_answer_is_a_disconnect_not_an_error() -> None:
    m = Meter(stream=True)
    m.answer([sse(chat_chunk("a"), done=False)], error="client disconnected")
    assert m.record.client_disconnected is True and m.record.error is None


def test_a_cut_answer_keeps_its_error() -> None:
    m = Meter(stream=True)
    m.answer([sse(chat_chunk("a"), done=False)], error="llama-server closed the connection")
    assert m.record.error == "llama-server closed the connection"
    assert m.record.client_disconnected is False


def test_a_refused_request_records_the_whole_wait() -> None:
    m = Meter(stream=True)
    m.clock.now += 2.0
    m.meter.refused(503, "timed out waiting for model coder")
    record = m.record
    assert record.status == 503 and record.error == "timed out waiting for model coder"
    assert record.queue_wait_s == pytest.approx(2.0) and record.latency_s == pytest.approx(2.0)
    assert record.ttft_s is None and record.prompt_tokens is None


def test_an_abandoned_request_has_no_status() -> None:
    m = Meter(stream=False)
    m.clock.now += 1.5
    m.meter.abandoned()
    record = m.record
    assert record.status is None and record.client_disconnected is True and record.error is None
    assert record.queue_wait_s == pytest.approx(1.5)
