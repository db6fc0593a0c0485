"""The ASGI shapes the gateway speaks, and reading a client's request: its body within a limit,
and the moment the client leaves. No web framework: the gateway's routes take `scope, receive,
send` and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from llamaherd.errors import LlamaherdError

# The ASGI shapes, written out here so the gateway depends on no web framework.
Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = Sequence[tuple[bytes, bytes]]

# Why a client's JSON was not read: Python's parser recurses, and raises RecursionError (not
# the ValueError of other bad JSON) for a document nested about a thousand levels deep.
TOO_DEEP = "nests arrays or objects too deeply to be read"


class BodyTooLarge(LlamaherdError):
    """The request body is larger than the route accepts (answer 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


class ClientDisconnected(LlamaherdError):
    """The client left before its request body was read; there is nobody to answer."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, at most `limit` bytes (else BodyTooLarge, read no further);
    ClientDisconnected if the client leaves first."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected("the client left before sending its request body")
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise BodyTooLarge(limit)
    if not message.get("more_body", False):
        return body  # the usual case: one message, no copy
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client left while sending its request body")
        part: bytes = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def until_disconnect(receive: Receive) -> None:
    """Return when the client disconnects. Only valid once the request body has been read:
    after that, an ASGI server's receive() has nothing else to say."""
    while (await receive())["type"] != "http.disconnect":
        pass
