"""Which headers cross the proxy, each way (RFC 9110's hop-by-hop rules), and what a
response's headers say about its body.
"""

from __future__ import annotations

from collections.abc import Iterable

from llamaherd.gateway.asgi import RawHeaders

# RFC 9110 section 7.6.1: these describe one connection, not the message, so a proxy drops
# them (with every "proxy-*" header and any header the Connection header names).
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# Also not forwarded upstream: aiohttp writes Host for the upstream and a Content-Length for
# the body it sends; the client's Expect: 100-continue was already answered by our server.
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names that a Connection header marks as hop-by-hop (lowercased)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    return tokens


def upstream_headers(client_headers: RawHeaders) -> list[tuple[str, str]]:
    """The client's headers as they go upstream: without hop-by-hop ones, Host and
    Content-Length (aiohttp writes both for the upstream request)."""
    drop = _connection_tokens(client_headers)
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in client_headers
        if (lower := name.lower()) not in NOT_FORWARDED
        and lower not in drop
        and not lower.startswith(b"proxy-")
    ]


def downstream_headers(upstream: RawHeaders, *, event_stream: bool) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as the client gets them: lowercased names (as ASGI
    asks), without hop-by-hop ones, and `x-accel-buffering: no` on an event stream so that a
    reverse proxy in front of us (nginx) does not hold its events back."""
    drop = _connection_tokens(upstream)
    headers = [
        (lower, value)
        for name, value in upstream
        if (lower := name.lower()) not in HOP_BY_HOP
        and lower not in drop
        and not lower.startswith(b"proxy-")
    ]
    if event_stream and all(name != b"x-accel-buffering" for name, _ in headers):
        headers.append((b"x-accel-buffering", b"no"))
    return headers


def is_event_stream(content_type: str | None) -> bool:
    return content_type is not None and content_type.lower().startswith("text/event-stream")
