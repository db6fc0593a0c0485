#!/usr/bin/env python3
"""The load side of bench/gateway.py: wrk for plain requests, an aiohttp client for streams and
for model switching.

The load generator runs in a process of its own, never in the benchmark's or the server's, so
its work does not share an event loop with what it measures:

- plain requests: `wrk` (C, one thread, keep-alive connections) with a small Lua script that
  sets the POST body; `--latency` gives the percentiles, parsed here from its output;
- streams and switching: this file run as a script,

      python bench/gateway_load.py stream --url URL --streams 32 --tokens 256
      python bench/gateway_load.py switch --url URL --models a b --count 20

  which prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHAT_PATH = "/v1/chat/completions"
PROMPT = "Hello"


def chat_body(
    model: str | None, max_tokens: int, *, stream: bool = False, ignore_eos: bool = True
) -> dict[str, Any]:
    """The fixed request every part sends. `ignore_eos` makes each answer exactly `max_tokens`
    tokens long, so every request costs llama-server the same work (a random-weight model
    would otherwise stop at a random end-of-text token)."""
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "ignore_eos": ignore_eos,
    }
    if model is not None:
        body["model"] = model
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# ---- wrk ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx answers plus socket errors (connect, read, write, timeout)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """The figures of `wrk --latency` output; ValueError if one is missing."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output has no match for {pattern!r}:\n{text}")
        return match

    p50 = find(rf"^\s*50%\s+{_TIME}")
    p99 = find(rf"^\s*99%\s+{_TIME}")
    total = find(rf"^\s*(\d+) requests in {_TIME}")
    rps = find(r"^Requests/sec:\s+([\d.]+)")
    errors = 0
    if socket_errors := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        errors += sum(int(n) for n in socket_errors.groups())
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors += int(non_2xx.group(1))
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        errors=errors,
    )


def write_wrk_script(
    path: Path, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Path:
    """A Lua script that makes every wrk request the same POST with a JSON body (and
    `headers`)."""
    payload = json.dumps(body, separators=(",", ":"))
    assert "]==]" not in payload
    extra = "".join(
        f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n"
        for name, value in (headers or {}).items()
    )
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{payload}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + extra
    )
    return path


def run_wrk(
    url: str, script: Path, connections: int, duration_s: float, *, timeout_s: float = 30
) -> WrkResult:
    """`wrk` with one thread and `connections` keep-alive connections for `duration_s`."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={round(timeout_s)}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


# ---- the aiohttp client (this file run as a script) ----------------------------------------


@dataclass
class Stream:
    began: float
    first_token: float | None = None
    ended: float | None = None
    tokens: int = 0
    error: str | None = None


async def one_stream(session: Any, url: str, body: dict[str, Any]) -> Stream:
    """One streamed chat completion, read as the SSE chunks arrive. Tokens: the final chunk's
    `usage.completion_tokens` (llama-server sends it), else the number of content chunks."""
    stream = Stream(began=time.perf_counter())
    content_chunks = 0
    usage: int | None = None
    try:
        async with session.post(url, json=body) as answer:
            if answer.status != 200:
                stream.error = f"HTTP {answer.status}: {(await answer.text())[:200]}"
                return stream
            async for line in answer.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                # Only the chunks that matter are decoded: the first with content, the last.
                if stream.first_token is not None and b'"usage"' not in line:
                    content_chunks += 1
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    stream.error = str(chunk["error"])[:200]
                    return stream
                choices = chunk.get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    content_chunks += 1
                    if stream.first_token is None:
                        stream.first_token = time.perf_counter()
                if isinstance(chunk.get("usage"), dict):
                    usage = int(chunk["usage"].get("completion_tokens", 0))
    except Exception as exc:  # reported in the results, not raised: one failure is a figure
        stream.error = f"{type(exc).__name__}: {exc}"
    stream.ended = time.perf_counter()
    stream.tokens = usage if usage is not None else content_chunks
    return stream


async def stream_main(url: str, model: str | None, streams: int, tokens: int) -> dict[str, Any]:
    import aiohttp

    body = chat_body(model, tokens, stream=True)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        began = time.perf_counter()
        results = await asyncio.gather(
            *(one_stream(session, url + CHAT_PATH, body) for _ in range(streams))
        )
    ends = [r.ended for r in results if r.ended is not None]
    wall = (max(ends) if ends else time.perf_counter()) - began
    ttft = [(r.first_token - r.began) * 1000 for r in results if r.first_token is not None]
    total = sum(r.tokens for r in results if r.error is None)
    return {
        "streams": streams,
        "wall_s": wall,
        "tokens": total,
        "tokens_per_s": total / wall if wall > 0 else 0.0,
        "ttft_ms": sorted(ttft),
        "ttft_median_ms": statistics.median(ttft) if ttft else None,
        "short": sum(1 for r in results if r.error is None and r.tokens != tokens),
        "errors": [r.error for r in results if r.error is not None],
    }


async def switch_main(
    url: str, models: Sequence[str], count: int, max_tokens: int
) -> dict[str, Any]:
    """`count` requests one after the other, cycling through `models` (a, b, a, b...)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=300)
    latencies: list[float] = []
    errors: list[str] = []
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i in range(count):
            model = models[i % len(models)]
            began = time.perf_counter()
            async with session.post(url + CHAT_PATH, json=chat_body(model, max_tokens)) as answer:
                text = await answer.read()
            latencies.append((time.perf_counter() - began) * 1000)
            if answer.status != 200:
                errors.append(f"{model}: HTTP {answer.status}: {text[:200]!r}")
    return {"latencies_ms": latencies, "errors": errors}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="load generator of bench/gateway.py")
    sub = parser.add_subparsers(dest="mode", required=True)
    stream = sub.add_parser("stream", help="N concurrent streams; prints JSON")
    stream.add_argument("--url", required=True)
    stream.add_argument("--model")
    stream.add_argument("--streams", type=int, default=32)
    stream.add_argument("--tokens", type=int, default=256)
    switch = sub.add_parser("switch", help="sequential requests alternating models; prints JSON")
    switch.add_argument("--url", required=True)
    switch.add_argument("--models", nargs="+", required=True)
    switch.add_argument("--count", type=int, default=20)
    switch.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    if args.mode == "stream":
        result = asyncio.run(stream_main(args.url, args.model, args.streams, args.tokens))
    else:
        result = asyncio.run(switch_main(args.url, args.models, args.count, args.max_tokens))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
