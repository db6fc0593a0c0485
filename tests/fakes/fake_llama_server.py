#!/usr/bin/env python3
"""A fake ``llama-server`` for fault-injection tests of the llamaherd supervisor.

The supervisor under test launches this script as a child process exactly as it launches the
real binary, so it uses the standard library only (fast start, no virtual environment). It
speaks enough of llama-server's command line, HTTP API and stderr log format for the supervisor
to treat it as the real thing, and lets a test inject the faults that are hard to provoke with
a real model.

llama-server arguments it understands:
  -m, --model PATH          model file; /v1/models reports its basename and its size in bytes
                            (1024 when the file does not exist). Default: llama-server's own
                            default, models/7B/ggml-model-f16.gguf.
  -a, --alias NAME          model id to report instead of the basename.
  --host H                  address to bind (default 127.0.0.1; an address with ':' is IPv6).
  --port P                  port to bind (default 8080).
  Any other argument (``--threads 4``, ``-c 2048``, ``--metrics``, ``-ngl 99``, ...) is
  accepted and ignored.

Fault switches (all prefixed ``--fake-``):
  --fake-load-s S           after binding, /health answers 503 "Loading model" for S seconds,
                            then 200 {"status":"ok"} (default 0.2).
  --fake-bind-delay-s S     wait S seconds before binding the port, so connections are refused
                            meanwhile (default 0).
  --fake-exit-at-start CODE log a failed model load to stderr and exit with CODE before binding.
  --fake-fail-first N       with --fake-state-file: the first N launches (counted in that file)
                            behave like --fake-exit-at-start 1; later launches start normally.
  --fake-state-file PATH    launch counter for --fake-fail-first (created when absent).
  --fake-crash-after-s S    S seconds after becoming ready, log a GGML_ASSERT failure and exit 1.
  --fake-crash-signal SIG   crash by killing itself with signal SIG (SIGSEGV, SEGV, 11, ...)
                            instead of exiting 1; without --fake-crash-after-s, it crashes as
                            soon as it is ready. Core dumps are disabled first.
  --fake-hang-after-s S     S seconds after becoming ready, every HTTP request (/health too, and
                            completions already streaming) blocks forever; the process stays
                            alive and still obeys signals: a deadlocked server.
  --fake-ignore-sigterm     ignore SIGTERM, so a supervisor has to SIGKILL it.
  --fake-slow-sigterm-s S   on SIGTERM, log the clean-up line and exit 0 only S seconds later
                            (HTTP keeps being answered meanwhile).
  --fake-503-forever        never finish loading: every request answers 503 "Loading model".
  --fake-health-delay-ms MS delay every /health answer by MS milliseconds.
  --fake-spew-lines N       at start, write N lines of 100 bytes to stdout and N to stderr,
                            interleaved and as fast as possible, to check that the reader drains
                            both pipes.
  --fake-wrong-service      be some other program on the port: every request gets a 404 HTML
                            page from "nginx", and nothing llama-like is logged.
  --fake-gen-ms MS          milliseconds per generated token (default 5).
  --fake-pid-file PATH      write this process's pid to PATH at start (before anything can fail).

Signals, as in llama-server: SIGTERM and SIGINT log
``srv    operator(): operator(): cleaning up before exit...`` and exit 0; a second one while a
slow shutdown is pending logs ``Received second interrupt, terminating immediately.`` and
exits 1.

Endpoints (503 ``Loading model`` on all of them until ready):
  GET  /health, /v1/health            503 while loading, then 200 {"status":"ok"}; not logged.
  GET  /v1/models, /models            the model list, OpenAI and Ollama shapes.
  POST /v1/chat/completions, /chat/completions
                                      OpenAI chat completion with usage and timings; with
                                      "stream": true, SSE chunks, the last carrying usage and
                                      timings, then ``data: [DONE]``.
  POST /v1/completions                OpenAI text completion, same streaming rules.
  POST /completion, /completions      llama-server's native completion (content, stop,
                                      tokens_predicted, tokens_evaluated, timings); streaming
                                      ends with a "stop": true chunk and, like the real server,
                                      no [DONE].
  GET  /slots                         one slot: {"id": 0, "is_processing": ...}.
  GET  /props                         {"total_slots": 1, "model_path": ...}.
  anything else                       404 {"error": {"code": 404, "message": "File Not Found"}}.
Token counts: ``max_tokens``, ``max_completion_tokens`` or ``n_predict`` (default 16; a negative
value means the default) tokens are generated, each taking --fake-gen-ms. Prompt tokens are
counted as whitespace-separated words. Requests are not queued behind the single slot: several
completions run at once, and /slots reports the slot busy while any is running.

The port is bound with SO_REUSEADDR only, so a port another program listens on makes it exit 1
with ``main: couldn't bind HTTP server socket, hostname: H, port: P``, like the real binary.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit

# llama-server's default for -m when none is given.
DEFAULT_MODEL = "models/7B/ggml-model-f16.gguf"
DEFAULT_N_PREDICT = 16
N_CTX = 2048
BUILD_NUMBER = 9999
BUILD_COMMIT = "fa4e5e4f"
FINGERPRINT = f"b{BUILD_NUMBER}-{BUILD_COMMIT}"
# Generated text cycles through these "tokens"; their content does not matter to a supervisor.
WORDS = (" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".")
HEALTH_PATHS = frozenset({"/health", "/v1/health"})
CLEANUP_LINE = "srv    operator(): operator(): cleaning up before exit..."
WRONG_SERVICE_HTML = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx/1.24.0 (Ubuntu)</center>\r\n"
    "</body>\r\n</html>\r\n"
)

_log_lock = threading.Lock()


def log(line: str) -> None:
    """Write one llama-server-style line to stderr, whole, and make it visible at once."""
    # Handler threads log concurrently; the lock keeps their lines from interleaving. The flush
    # matters because the supervisor reads the pipe live, as it does the real server's stderr.
    with _log_lock, contextlib.suppress(OSError, ValueError):
        # OSError/ValueError: the reading end is gone; a log line is not worth dying for.
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def flush_stdio() -> None:
    """Flush stdout and stderr before leaving by a way that does not flush them itself."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def exit_now(code: int) -> NoReturn:
    """Leave at once with `code`, without waiting for (possibly hung) handler threads."""
    # os._exit skips interpreter shutdown, which could otherwise wait on threads blocked in a
    # simulated hang; it also skips stdio flushing, hence flush_stdio.
    flush_stdio()
    os._exit(code)


def block_forever() -> NoReturn:
    """Block the calling thread for good, as a deadlocked server thread would."""
    while True:
        time.sleep(3600)


def sleep_until(deadline: float) -> None:
    """Sleep until time.monotonic() reaches `deadline`."""
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(remaining)


def parse_signal(text: str) -> signal.Signals:
    """Signal from a name (SIGSEGV, segv) or a number (11), for --fake-crash-signal."""
    name = text.strip().upper()
    if name.isdigit():
        try:
            return signal.Signals(int(name))
        except ValueError:
            raise argparse.ArgumentTypeError(f"unknown signal: {text}") from None
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown signal: {text}") from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse llama-server's arguments that matter here plus the --fake-* switches."""
    parser = argparse.ArgumentParser(
        prog="llama-server",
        description="Fake llama-server for fault-injection tests.",
        # Abbreviations would let an unknown real flag be taken for one of ours.
        allow_abbrev=False,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--alias", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fake-load-s", type=float, default=0.2)
    parser.add_argument("--fake-bind-delay-s", type=float, default=0.0)
    parser.add_argument("--fake-exit-at-start", type=int, default=None)
    parser.add_argument("--fake-fail-first", type=int, default=0)
    parser.add_argument("--fake-state-file", default=None)
    parser.add_argument("--fake-crash-after-s", type=float, default=None)
    parser.add_argument("--fake-crash-signal", type=parse_signal, default=None)
    parser.add_argument("--fake-hang-after-s", type=float, default=None)
    parser.add_argument("--fake-ignore-sigterm", action="store_true")
    parser.add_argument("--fake-slow-sigterm-s", type=float, default=0.0)
    parser.add_argument("--fake-503-forever", action="store_true")
    parser.add_argument("--fake-health-delay-ms", type=float, default=0.0)
    parser.add_argument("--fake-spew-lines", type=int, default=0)
    parser.add_argument("--fake-wrong-service", action="store_true")
    parser.add_argument("--fake-gen-ms", type=float, default=5.0)
    parser.add_argument("--fake-pid-file", default=None)
    # The short forms are not registered with argparse: it would read llama-server's other
    # short flags that start with the same letter (-mg 0, -md PATH, -mu URL, -as) as "-m g",
    # "-a s" and so on. Only the exact tokens are translated.
    short = {"-m": "--model", "-a": "--alias"}
    args, _ignored = parser.parse_known_args([short.get(arg, arg) for arg in argv])
    if args.fake_fail_first > 0 and not args.fake_state_file:
        parser.error("--fake-fail-first needs --fake-state-file to count launches")
    return args


class FakeState:
    """What the HTTP threads and the main thread share."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model_path: str = args.model
        basename = os.path.basename(self.model_path.rstrip("/")) or self.model_path
        self.model_id: str = args.alias or basename
        try:
            self.model_size = os.path.getsize(self.model_path)
        except OSError:
            self.model_size = 1024
        self.created = int(time.time())
        self.ready = threading.Event()
        self.hung = threading.Event()
        self.terminating = threading.Event()
        self._lock = threading.Lock()
        self._active = 0
        self._next_task = 0

    def begin_task(self) -> int:
        """Count a completion as running; returns its task id for the log."""
        with self._lock:
            self._active += 1
            self._next_task += 1
            return self._next_task - 1

    def end_task(self) -> bool:
        """Count a completion as finished; True when the slot is idle again."""
        with self._lock:
            self._active -= 1
            return self._active == 0

    @property
    def processing(self) -> bool:
        with self._lock:
            return self._active > 0

    def check_hang(self) -> None:
        """Block the calling handler thread for good once the hang fault has fired."""
        if self.hung.is_set():
            block_forever()


def error_body(code: int, message: str, kind: str) -> dict[str, Any]:
    """llama-server's error JSON."""
    return {"error": {"code": code, "message": message, "type": kind}}


def timings(
    prompt_n: int, prompt_ms: float, predicted_n: int, predicted_ms: float
) -> dict[str, Any]:
    """llama-server's "timings" object."""

    def per_token(n: int, ms: float) -> float:
        return ms / n if n else 0.0

    def per_second(n: int, ms: float) -> float:
        return n / ms * 1000.0 if ms > 0 else 0.0

    return {
        "cache_n": 0,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": per_token(prompt_n, prompt_ms),
        "prompt_per_second": per_second(prompt_n, prompt_ms),
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": per_token(predicted_n, predicted_ms),
        "predicted_per_second": per_second(predicted_n, predicted_ms),
    }


def requested_tokens(body: dict[str, Any]) -> int:
    """How many tokens a request asks for, under any of the names llama-server accepts."""
    for key in ("max_tokens", "max_completion_tokens", "n_predict"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            # -1 means "until end of generation" to llama-server; a fake has no EOS, so it
            # falls back to the default rather than generating forever.
            return value if value >= 0 else DEFAULT_N_PREDICT
    return DEFAULT_N_PREDICT


def text_of(value: Any) -> str:
    """The text in a prompt or message content: a string, or a list of strings/text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(text_of(item) for item in value)
    if isinstance(value, dict):
        return text_of(value.get("text", value.get("content", "")))
    return ""


class FakeHandler(BaseHTTPRequestHandler):
    """The HTTP side: llama-server's endpoints, or nginx's 404 for --fake-wrong-service."""

    # Keep-alive, like cpp-httplib: a pooled client reuses connections, and a hang must then
    # show up on a reused connection too.
    protocol_version = "HTTP/1.1"
    server: FakeHTTPServer

    @property
    def state(self) -> FakeState:
        return self.server.state

    def version_string(self) -> str:
        return "nginx/1.24.0 (Ubuntu)" if self.state.args.fake_wrong_service else "llama.cpp"

    def log_message(self, format: str, *args: Any) -> None:
        # BaseHTTPRequestHandler's Apache-style lines look nothing like llama-server's; the
        # access log is written by handle_request instead.
        return

    def do_GET(self) -> None:
        self.handle_request("GET")

    def do_POST(self) -> None:
        self.handle_request("POST")

    def handle_request(self, method: str) -> None:
        """Answer one request, unless the server is hung."""
        st = self.state
        # Read the body whatever the answer, so the next request on a kept-alive connection
        # starts where it should.
        raw = self.read_body()
        st.check_hang()
        path = urlsplit(self.path).path
        if st.args.fake_wrong_service:
            self.send_bytes(404, WRONG_SERVICE_HTML.encode(), "text/html")
            return
        if method == "GET" and path in HEALTH_PATHS:
            # Not logged: the supervisor polls /health constantly, and so does the real server
            # leave it out of its access log.
            self.health()
            return
        try:
            status = self.route(method, path, raw)
        except (BrokenPipeError, ConnectionResetError):
            # The client went away mid-answer (a cancelled stream): drop the connection.
            self.close_connection = True
            log(f"srv  log_server_r: request: {method} {path} {self.client_address[0]} aborted")
            return
        log(f"srv  log_server_r: request: {method} {path} {self.client_address[0]} {status}")

    def read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def health(self) -> None:
        st = self.state
        delay_ms = st.args.fake_health_delay_ms
        if delay_ms > 0:
            time.sleep(delay_ms / 1000.0)
            # The hang may have started while this answer was being delayed.
            st.check_hang()
        if st.ready.is_set():
            self.send_json(200, {"status": "ok"})
        else:
            self.send_json(503, error_body(503, "Loading model", "unavailable_error"))

    def route(self, method: str, path: str, raw: bytes) -> int:
        """Dispatch a non-health request; returns the HTTP status sent, for the access log."""
        st = self.state
        if not st.ready.is_set():
            # While loading, llama-server answers every endpoint this way, not just /health.
            return self.send_json(503, error_body(503, "Loading model", "unavailable_error"))
        if method == "GET":
            if path in ("/v1/models", "/models"):
                return self.send_json(200, self.models())
            if path == "/slots":
                return self.send_json(200, self.slots())
            if path == "/props":
                return self.send_json(200, self.props())
        elif method == "POST":
            kinds = {
                "/v1/chat/completions": "chat",
                "/chat/completions": "chat",
                "/v1/completions": "text",
                "/completion": "native",
                "/completions": "native",
            }
            if path in kinds:
                return self.completion(kinds[path], raw)
        return self.send_json(404, error_body(404, "File Not Found", "not_found_error"))

    def models(self) -> dict[str, Any]:
        st = self.state
        return {
            "object": "list",
            "data": [
                {
                    "id": st.model_id,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "llamacpp",
                    "meta": {
                        "vocab_type": 2,
                        "n_vocab": 258,
                        "n_ctx_train": N_CTX,
                        "n_embd": 64,
                        "n_params": 123456,
                        "size": st.model_size,
                    },
                }
            ],
            "models": [
                {
                    "name": st.model_id,
                    "model": st.model_id,
                    "modified_at": "",
                    "size": "",
                    "digest": "",
                    "type": "model",
                    "description": "",
                    "tags": [""],
                    "capabilities": ["completion"],
                    "parameters": "",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "",
                        "families": [""],
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
            ],
        }

    def slots(self) -> list[dict[str, Any]]:
        return [
            {
                "id": 0,
                "n_ctx": N_CTX,
                "speculative": False,
                "is_processing": self.state.processing,
            }
        ]

    def props(self) -> dict[str, Any]:
        return {
            "default_generation_settings": {"n_ctx": N_CTX, "params": {"n_predict": -1}},
            "total_slots": 1,
            "model_path": self.state.model_path,
            "chat_template": "",
            "build_info": FINGERPRINT,
        }

    def completion(self, kind: str, raw: bytes) -> int:
        """Serve a chat ("chat"), OpenAI text ("text") or native ("native") completion."""
        st = self.state
        try:
            body = json.loads(raw)
        except ValueError as exc:
            # UnicodeDecodeError and json.JSONDecodeError are both ValueErrors.
            message = f"[json.exception.parse_error.101] parse error: {exc}"
            return self.send_json(400, error_body(400, message, "invalid_request_error"))
        if not isinstance(body, dict):
            message = "[json.exception.type_error.302] type must be object"
            return self.send_json(400, error_body(400, message, "invalid_request_error"))
        if kind == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list):
                message = "'messages' is required"
                return self.send_json(400, error_body(400, message, "invalid_request_error"))
            prompt = " ".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
        else:
            if "prompt" not in body:
                message = '"prompt" must be provided'
                return self.send_json(400, error_body(400, message, "invalid_request_error"))
            prompt = text_of(body["prompt"])
        n_predict = requested_tokens(body)
        # A word per token is close enough for usage accounting in tests.
        prompt_n = max(1, len(prompt.split()))
        # Nominal prompt-processing speed: the fake does not spend time on the prompt.
        prompt_ms = prompt_n * 0.05
        model = str(body.get("model") or st.model_id)
        task = st.begin_task()
        log(f"slot launch_slot_: id  0 | task {task} | processing task")
        try:
            if body.get("stream") is True:
                self.stream(kind, model, prompt_n, prompt_ms, n_predict)
                return 200
            started = time.monotonic()
            content = "".join(self.generate(n_predict))
            predicted_ms = (time.monotonic() - started) * 1000.0
            t = timings(prompt_n, prompt_ms, n_predict, predicted_ms)
            return self.send_json(200, self.full_answer(kind, model, content, prompt_n, t))
        finally:
            idle = st.end_task()
            n_past = prompt_n + n_predict
            log(f"slot      release: id  0 | task {task} | stop processing: n_past = {n_past}")
            if idle:
                log("srv  update_slots: all slots are idle")

    def generate(self, n_predict: int) -> Iterator[str]:
        """Yield `n_predict` tokens at --fake-gen-ms each; stalls for good if the server hangs."""
        gen_s = self.state.args.fake_gen_ms / 1000.0
        for i in range(n_predict):
            if gen_s > 0:
                time.sleep(gen_s)
            self.state.check_hang()
            yield WORDS[i % len(WORDS)]

    def full_answer(
        self, kind: str, model: str, content: str, prompt_n: int, t: dict[str, Any]
    ) -> dict[str, Any]:
        """The non-streaming answer body for `kind`."""
        n_predict = t["predicted_n"]
        usage = {
            "completion_tokens": n_predict,
            "prompt_tokens": prompt_n,
            "total_tokens": prompt_n + n_predict,
        }
        common = {
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "usage": usage,
            "timings": t,
        }
        if kind == "chat":
            choice = {
                "finish_reason": "length",
                "index": 0,
                "message": {"role": "assistant", "content": content},
            }
            return {
                "choices": [choice],
                "object": "chat.completion",
                "id": "chatcmpl-" + os.urandom(12).hex(),
                **common,
            }
        if kind == "text":
            choice = {"text": content, "index": 0, "logprobs": None, "finish_reason": "length"}
            return {
                "choices": [choice],
                "object": "text_completion",
                "id": "cmpl-" + os.urandom(12).hex(),
                **common,
            }
        return self.native_chunk(content, prompt_n, n_predict, stop=True, t=t)

    def native_chunk(
        self, content: str, prompt_n: int, predicted_n: int, stop: bool, t: dict[str, Any] | None
    ) -> dict[str, Any]:
        """A native /completion answer (or streamed chunk when `stop` is false)."""
        chunk: dict[str, Any] = {
            "index": 0,
            "content": content,
            "tokens": [],
            "stop": stop,
            "id_slot": 0,
            "tokens_predicted": predicted_n,
            "tokens_evaluated": prompt_n,
        }
        if stop:
            chunk.update(
                model=self.state.model_id,
                generation_settings={"n_predict": predicted_n, "n_ctx": N_CTX},
                has_new_line=False,
                truncated=False,
                stop_type="limit",
                stopping_word="",
                tokens_cached=prompt_n + predicted_n,
                timings=t,
            )
        return chunk

    def stream(self, kind: str, model: str, prompt_n: int, prompt_ms: float, n: int) -> None:
        """Stream a completion as SSE over chunked transfer encoding, as llama-server does."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        created = int(time.time())
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + os.urandom(12).hex()
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def oai_chunk(piece: dict[str, Any], finish: str | None) -> dict[str, Any]:
            if kind == "chat":
                choice = {"finish_reason": finish, "index": 0, "delta": piece}
            else:
                choice = {"text": piece.get("content", ""), "index": 0, "logprobs": None}
                choice["finish_reason"] = finish
            return {
                "choices": [choice],
                "created": created,
                "id": rid,
                "model": model,
                "system_fingerprint": FINGERPRINT,
                "object": obj,
            }

        if kind == "chat":
            # llama-server's first chat chunk announces the role with no content.
            self.write_event(oai_chunk({"role": "assistant", "content": None}, None))
        started = time.monotonic()
        for i, token in enumerate(self.generate(n)):
            if kind == "native":
                self.write_event(self.native_chunk(token, prompt_n, i + 1, stop=False, t=None))
            else:
                self.write_event(oai_chunk({"content": token}, None))
        t = timings(prompt_n, prompt_ms, n, (time.monotonic() - started) * 1000.0)
        if kind == "native":
            self.write_event(self.native_chunk("", prompt_n, n, stop=True, t=t))
        else:
            last = oai_chunk({}, "length")
            last["usage"] = {
                "completion_tokens": n,
                "prompt_tokens": prompt_n,
                "total_tokens": prompt_n + n,
            }
            last["timings"] = t
            self.write_event(last)
            # Only the OpenAI-compatible endpoints end with [DONE] in llama-server.
            self.write_chunk(b"data: [DONE]\n\n")
        self.write_chunk(b"")

    def write_event(self, payload: dict[str, Any]) -> None:
        self.write_chunk(f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode())

    def write_chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk; empty `data` is the terminating chunk."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def send_json(self, status: int, payload: Any) -> int:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_bytes(status, body, "application/json; charset=utf-8")
        return status

    def send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeHTTPServer(ThreadingHTTPServer):
    """A threaded server, so a long completion (or a hung request) never holds up /health."""

    # Daemon threads: exiting must never wait for a handler stuck in a simulated hang.
    daemon_threads = True
    # SO_REUSEADDR (as cpp-httplib sets) lets a port in TIME_WAIT be reused but still refuses a
    # port that another socket listens on, which is what --port-in-use tests rely on.
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: FakeState) -> None:
        self.state = state
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, FakeHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up with socket.getfqdn(), a DNS query that can
        # stall startup for seconds; the fake has to start fast and stay off the network.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # One line instead of socketserver's traceback dump, in llama-server's style.
        exc = sys.exc_info()[1]
        log(f"srv  log_server_r: error handling request from {client_address}: {exc!r}")


def write_pid_file(path: str) -> None:
    """Write our pid to `path` atomically, so a reader never sees a half-written number."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def count_launch(path: str) -> int:
    """Add one to the launch counter in `path`; returns the number of launches before this one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+", encoding="ascii") as f:
        # A supervisor may relaunch quickly; the lock keeps two launches from reading the same
        # count.
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            before = int(f.read().strip() or 0)
        except ValueError:
            before = 0
        f.seek(0)
        f.truncate()
        f.write(f"{before + 1}\n")
        f.flush()
    return before


def start_failure_code(args: argparse.Namespace) -> int | None:
    """The exit code to fail model loading with, or None to start normally."""
    if args.fake_fail_first > 0 and count_launch(args.fake_state_file) < args.fake_fail_first:
        return 1
    code: int | None = args.fake_exit_at_start
    return code


def log_banner() -> None:
    """The first lines llama-server prints."""
    threads = os.cpu_count() or 1
    log(
        f"build: {BUILD_NUMBER} ({BUILD_COMMIT}) with fake_llama_server.py "
        f"(Python {platform.python_version()}) for {platform.machine()}-linux-gnu"
    )
    log(
        f"system info: n_threads = {threads}, n_threads_batch = {threads}, "
        f"total_threads = {threads}"
    )
    log("")


def fail_model_load(args: argparse.Namespace, code: int) -> NoReturn:
    """Log a failed model load the way llama-server does and exit with `code`."""
    path = args.model
    log("main: loading model")
    log(f"srv    load_model: loading model '{path}'")
    log(f"gguf_init_from_file_impl: failed to read magic from '{path}'")
    log(f"llama_model_load: error loading model: failed to load model from {path}")
    log("llama_model_load_from_file_impl: failed to load model")
    log(f"common_init_from_params: failed to load model '{path}'")
    log(f"srv    load_model: failed to load model, '{path}'")
    log(f"error: failed to load model '{path}'")
    log("main: exiting due to model loading error")
    exit_now(code)


def spew(n: int) -> None:
    """Write `n` 100-byte lines to stdout and to stderr, interleaved, as fast as possible."""
    # Interleaving fills both pipes together: a reader that drains only one of them, or one
    # after the other, leaves this child blocked on the other.
    pad = "x" * 78
    with contextlib.suppress(OSError, ValueError):
        for i in range(n):
            sys.stdout.write(f"spew stdout {i:08d} {pad}\n")
            sys.stderr.write(f"spew stderr {i:08d} {pad}\n")
        sys.stdout.flush()
        sys.stderr.flush()


def install_signal_handlers(state: FakeState) -> None:
    """SIGTERM/SIGINT as llama-server handles them, or SIGTERM ignored for --fake-ignore-sigterm."""

    def exit_later(delay_s: float) -> None:
        time.sleep(delay_s)
        exit_now(0)

    def on_terminate(signum: int, frame: FrameType | None) -> None:
        if state.terminating.is_set():
            # llama-server's escape hatch: a second Ctrl+C / SIGTERM ends it at once.
            log("Received second interrupt, terminating immediately.")
            exit_now(1)
        state.terminating.set()
        log(CLEANUP_LINE)
        slow_s = state.args.fake_slow_sigterm_s
        if slow_s > 0:
            # A thread does the waiting so this handler returns and a second signal can still
            # be handled on the main thread.
            threading.Thread(target=exit_later, args=(slow_s,), daemon=True).start()
            return
        exit_now(0)

    signal.signal(signal.SIGINT, on_terminate)
    if state.args.fake_ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_terminate)


def crash(state: FakeState) -> NoReturn:
    """Die like a failed GGML_ASSERT: exit 1, or by --fake-crash-signal."""
    log("/llama.cpp/ggml/src/ggml-cpu/ops.cpp:4242: GGML_ASSERT(ne00 == ne10) failed")
    sig: signal.Signals | None = state.args.fake_crash_signal
    if sig is None:
        exit_now(1)
    with contextlib.suppress(OSError, ValueError):
        # A SIGSEGV/SIGABRT default action may dump core into the test's working directory.
        _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    with contextlib.suppress(OSError, ValueError):
        # Our own handler (SIGTERM, SIGINT) or SIG_IGN would otherwise stop the signal; SIGKILL
        # and SIGSTOP cannot be changed and need no change.
        signal.signal(sig, signal.SIG_DFL)
    # Like os._exit, death by signal flushes nothing.
    flush_stdio()
    os.kill(os.getpid(), sig)
    # Reached only for a signal whose default action is not to terminate (SIGCHLD, ...).
    time.sleep(1.0)
    exit_now(1)


def run_faults(state: FakeState) -> None:
    """Fire the crash and hang faults at their times, counted from readiness."""
    args = state.args
    events: list[tuple[float, str]] = []
    if args.fake_crash_after_s is not None or args.fake_crash_signal is not None:
        events.append((args.fake_crash_after_s or 0.0, "crash"))
    if args.fake_hang_after_s is not None:
        events.append((args.fake_hang_after_s, "hang"))
    ready_at = time.monotonic()
    for after_s, what in sorted(events):
        sleep_until(ready_at + after_s)
        if state.terminating.is_set():
            # Shutting down slowly already: a crash now would hide the exit code under test.
            return
        if what == "hang":
            # Silent, as a deadlock is: no log line marks it.
            state.hung.set()
        else:
            crash(state)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    state = FakeState(args)
    install_signal_handlers(state)
    if args.fake_pid_file:
        # First, so a test can find this process even when it fails at start.
        write_pid_file(args.fake_pid_file)
    if not args.fake_wrong_service:
        log_banner()
    if args.fake_spew_lines > 0:
        spew(args.fake_spew_lines)
    code = start_failure_code(args)
    if code is not None:
        fail_model_load(args, code)
    if args.fake_bind_delay_s > 0:
        time.sleep(args.fake_bind_delay_s)
    host, port = args.host, args.port
    log("main: binding port with default address family")
    try:
        server = FakeHTTPServer((host, port), state)
    except OSError:
        log(f"main: couldn't bind HTTP server socket, hostname: {host}, port: {port}")
        exit_now(1)
    # The HTTP server runs on a thread so the main thread stays free for the lifecycle and,
    # above all, for signal handlers, which Python only runs on the main thread.
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    if args.fake_wrong_service:
        block_forever()
    log(f"main: HTTP server is listening, hostname: {host}, port: {port}, http threads: 15")
    log("main: loading model")
    log(f"srv    load_model: loading model '{args.model}'")
    if args.fake_503_forever:
        block_forever()
    sleep_until(time.monotonic() + args.fake_load_s)
    if state.terminating.is_set():
        block_forever()  # a slow shutdown is under way; its thread exits the process
    log("srv          init: initializing slots, n_slots = 1")
    log(f"slot         init: id  0 | task -1 | new slot n_ctx_slot = {N_CTX}")
    log("main: model loaded")
    # Ready before the lines a supervisor may watch for, so /health agrees with them.
    state.ready.set()
    log(f"main: server is listening on http://{host}:{port} - starting the main loop")
    log("srv  update_slots: all slots are idle")
    run_faults(state)
    block_forever()


if __name__ == "__main__":
    sys.exit(main())
