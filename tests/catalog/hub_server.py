"""A small Hugging Face Hub of the tests' own, on loopback, for `llamaherd pull`.

It answers the requests huggingface_hub makes for a pull (read from the library's source):

- `GET /api/models/{owner}/{name}` (and `.../revision/{rev}`) with `?blobs=True`: the
  repository's commit and its files, each with its size, git blob id and LFS oid (sha256);
- `HEAD` and `GET /{owner}/{name}/resolve/{rev}/{path}`: the file, with `ETag`,
  `X-Repo-Commit`, `X-Linked-Etag` (the sha256), `X-Linked-Size`, `Accept-Ranges`, and a
  `Range: bytes=N-` answered 206 with the rest.

A gated repository answers 401 (`X-Error-Code: GatedRepo`) to a file request without a token
and 403 with a token it does not accept, as the Hub does; an unknown repository 404
(`X-Error-Code: RepoNotFound`). Faults, per file: `cut[path] = n` sends the first n bytes of
the next download and drops the connection; `corrupt` serves other bytes of the right length;
`delay_s` paces every download (a pull still running for a test to join or cancel).
Every request is logged in `requests` as (method, path, Range header or None).

It runs in a thread with its own event loop, so a test, a `llamaherd serve` process and a
`llamaherd pull` process can all reach it.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Self

from aiohttp import web

CHUNK = 16 * 1024


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    commit: str = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubServer:
    repos: dict[str, Repo] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)  # accepted for gated repositories
    cut: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    delay_s: float = 0.0
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    # ---- what it serves ----------------------------------------------------------------------

    def add(self, repo: str, files: dict[str, bytes], *, gated: bool = False) -> None:
        self.repos[repo] = Repo(dict(files), gated=gated)

    def downloads(self, name: str) -> list[str | None]:
        """The Range header (or None) of every GET of a file whose path ends with `name`."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith(f"/{name}")]

    # ---- life ----------------------------------------------------------------------------------

    def start(self) -> Self:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="test-hub", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the test hub did not start"
        return self

    def close(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/api/models/{owner}/{name}", self._info)
        app.router.add_get("/api/models/{owner}/{name}/revision/{rev}", self._info)
        app.router.add_route("*", "/{owner}/{name}/resolve/{rev}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- the routes ----------------------------------------------------------------------------

    def _repo(self, request: web.Request) -> tuple[str, Repo]:
        name = f"{request.match_info['owner']}/{request.match_info['name']}"
        repo = self.repos.get(name)
        if repo is None:
            raise web.HTTPNotFound(
                headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
            )
        return name, repo

    async def _info(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, None))
        name, repo = self._repo(request)
        siblings = [
            {
                "rfilename": path,
                "size": len(data),
                "blobId": _git_oid(data),
                "lfs": {"size": len(data), "sha256": _sha256(data), "pointerSize": 134},
            }
            for path, data in repo.files.items()
        ]
        return web.json_response(
            {
                "id": name,
                "modelId": name,
                "sha": repo.commit,
                "gated": repo.gated and "auto",
                "private": False,
                "siblings": siblings,
            }
        )

    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        _, repo = self._repo(request)
        if repo.gated:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if token not in self.tokens:
                status = web.HTTPForbidden if token else web.HTTPUnauthorized
                raise status(
                    headers={"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"}
                )
        data = repo.files.get(path)
        if data is None:
            raise web.HTTPNotFound(
                headers={"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
            )
        digest = _sha256(data)
        headers = {
            "ETag": f'"{digest}"',
            "X-Linked-Etag": f'"{digest}"',
            "X-Linked-Size": str(len(data)),
            "X-Repo-Commit": repo.commit,
            "Accept-Ranges": "bytes",
        }
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(status=200, headers=headers)
        start = _range_start(request.headers.get("Range"))
        body = data if path not in self.corrupt else bytes(b ^ 0x5A for b in data)
        body = body[start:]
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        headers["Content-Length"] = str(len(body))
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        cut = self.cut.pop(path, None)
        sent = 0
        for chunk in _chunks(body):
            if cut is not None and sent + len(chunk) > cut:
                await response.write(chunk[: cut - sent])
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-file
                return response
            await response.write(chunk)
            sent += len(chunk)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        await response.write_eof()
        return response


def tiny_gguf(seed: int, size: int = 4096) -> bytes:
    """A valid GGUF (version 3, no tensors, no metadata) padded with bytes of `seed`: what the
    folder scan reads as a model, different for every seed."""
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    pattern = bytes((seed + i) % 251 for i in range(251))
    return (header + pattern * (size // 251 + 1))[:size]


TINY = "test-org/Tiny-GGUF"
AMBIGUOUS = "test-org/Mixed-GGUF"
SPLIT = "test-org/Big-GGUF"
VISION = "test-org/Eye-GGUF"
GATED = "test-org/Secret-GGUF"
LARGE = "test-org/Large-GGUF"  # larger than huggingface_hub's download chunk (10 MB)
TOKEN = "hf_test_token_of_the_right_account"


def standard_hub(demo: bytes) -> HubServer:
    """The repositories the tests pull from: `demo` is a model llama-server can run."""
    hub = HubServer()
    hub.tokens.add(TOKEN)
    hub.add(
        TINY,
        {
            "Tiny-Q8_0.gguf": demo,
            "Tiny-Q4_K_M.gguf": tiny_gguf(1, 300_000),
            "README.md": b"# Tiny\n",
        },
    )
    hub.add(AMBIGUOUS, {"Alpha-Q4_K_M.gguf": tiny_gguf(2), "Beta-Q4_K_M.gguf": tiny_gguf(3)})
    hub.add(
        SPLIT,
        {f"Q4_K_M/Big-Q4_K_M-0000{n}-of-00003.gguf": tiny_gguf(10 + n) for n in (1, 2, 3)}
        | {"Big-Q8_0.gguf": tiny_gguf(20)},
    )
    hub.add(
        VISION,
        {
            "Eye-Q4_K_M.gguf": tiny_gguf(30),
            "Eye-Q8_0.gguf": tiny_gguf(31),
            "mmproj-Eye-F16.gguf": tiny_gguf(32),
            "mmproj-Eye-Q8_0.gguf": tiny_gguf(33),
        },
    )
    hub.add(GATED, {"Secret-Q4_K_M.gguf": tiny_gguf(40)}, gated=True)
    hub.add(LARGE, {"Large-Q4_K_M.gguf": tiny_gguf(50, 12 * 1024 * 1024)})
    return hub


def _chunks(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


def _range_start(header: str | None) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    return int(header.removeprefix("bytes=").split("-")[0] or 0)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
