"""Socket.IO and Engine.IO packets from clients, checked before Engine.IO reads them.

python-engineio and python-socketio let a packet they cannot handle escape as a traceback
(JSON nested too deeply for Python's parser, which recurses and raises RecursionError; a
packet type that is not a digit; an event that is not a list; a binary packet from a client
that is not connected), and Engine.IO answers the polling POST that carried it 200 all the
same. None of it needs a key: a client sends packets before Socket.IO asks for its key.

So `PacketCheck` decodes every packet a client sends, with the libraries' own classes, before
Engine.IO gets it: a polling POST that does not parse is answered 400 in OpenAI's error shape,
as every other route answers a body it cannot read; a websocket message that does not parse
closes that websocket (1008) and ends its session. llamaherd's events carry JSON only, so
binary packets are refused too.
"""

from __future__ import annotations

import logging
from typing import Any

import engineio.packet
import engineio.payload
import socketio.packet

from llamaherd.api.access import SOCKETIO_PREFIX
from llamaherd.gateway.asgi import (
    TOO_DEEP,
    BodyTooLarge,
    ClientDisconnected,
    Message,
    Receive,
    Scope,
    Send,
    read_body,
)
from llamaherd.gateway.replies import send_error

logger = logging.getLogger("llamaherd.api")

# Names python-socketio gives its own handlers: an event of that name from a client would
# call them with the wrong arguments.
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error"})
WEBSOCKET_CLOSE_REASON = "a packet does not parse"  # at most 123 bytes, as a close frame says


def _shape_problem(kind: object, data: object) -> str | None:
    """What is wrong with a decoded Socket.IO packet that python-socketio would choke on."""
    if kind in (socketio.packet.CONNECT, socketio.packet.DISCONNECT):
        return None if data is None or isinstance(data, dict) else "its payload is not an object"
    if kind == socketio.packet.EVENT:
        if not (isinstance(data, list) and data and isinstance(data[0], str)):
            return "an event must be a list that starts with the event's name"
        return f"{data[0]!r} is a reserved event name" if data[0] in RESERVED_EVENTS else None
    if kind == socketio.packet.ACK:
        return None if isinstance(data, list) else "an acknowledgement must be a list"
    return f"packet type {kind!r} is not accepted from a client"


def _check(packet: Any) -> None:
    """ValueError if an Engine.IO packet, or the Socket.IO packet it carries, breaks the
    protocol."""
    if packet.packet_type != engineio.packet.MESSAGE:
        return  # ping, pong, close, upgrade: Engine.IO answers a wrong one itself
    if not isinstance(packet.data, str):
        raise ValueError("binary data; llamaherd's events carry JSON only")
    inner = socketio.packet.Packet(encoded_packet=packet.data)
    if inner.attachment_count:
        raise ValueError("binary attachments; llamaherd's events carry JSON only")
    problem = _shape_problem(inner.packet_type, inner.data)
    if problem is not None:
        raise ValueError(problem)


def payload_problem(body: bytes) -> str | None:
    """What is wrong with a polling POST's payload (one or more packets), if anything."""
    try:
        for packet in engineio.payload.Payload(encoded_payload=body.decode("utf-8")).packets:
            _check(packet)
    except (ValueError, KeyError) as exc:  # UnicodeDecodeError and binascii.Error included
        return str(exc) or type(exc).__name__
    except RecursionError:
        return f"its JSON {TOO_DEEP}"
    return None


def message_problem(message: str | bytes) -> str | None:
    """What is wrong with a websocket message (one packet), if anything."""
    try:
        _check(engineio.packet.Packet(encoded_packet=message))
    except (ValueError, IndexError) as exc:  # IndexError: an empty message
        return str(exc) or type(exc).__name__
    except RecursionError:
        return f"its JSON {TOO_DEEP}"
    return None


class PacketCheck:
    """ASGI, in front of Socket.IO. `max_bytes`: Engine.IO's own limit on a payload (a
    larger websocket message is left to Engine.IO, which refuses it unread)."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or not scope["path"].startswith(SOCKETIO_PREFIX):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.app(scope, self._checked(receive, send), send)
        elif scope["type"] == "http" and scope["method"] == "POST":
            await self._polling_post(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _polling_post(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive, self.max_bytes)
        except BodyTooLarge:
            message = f"the Socket.IO payload is larger than {self.max_bytes} bytes"
            await send_error(send, 413, message, "invalid_request_error")
            return
        except ClientDisconnected:
            return
        problem = payload_problem(body)
        if problem is not None:
            message = f"the Socket.IO payload does not parse: {problem}"
            await send_error(send, 400, message, "invalid_request_error")
            return
        await self.app(scope, _replay(body, receive), send)

    def _checked(self, receive: Receive, send: Send) -> Receive:
        """receive() of a websocket whose messages that do not parse close it."""

        async def checked() -> Message:
            message = await receive()
            if message["type"] != "websocket.receive":
                return message
            data = message.get("text")
            data = message.get("bytes") if data is None else data
            if data is None or len(data) > self.max_bytes:
                return message
            problem = message_problem(data)
            if problem is None:
                return message
            # Debug only: a client could fill the log otherwise, one message at a time.
            logger.debug("closing a Socket.IO websocket: its packet %s", problem)
            await send({"type": "websocket.close", "code": 1008, "reason": WEBSOCKET_CLOSE_REASON})
            # Engine.IO takes the client for gone, and ends its session.
            return {"type": "websocket.disconnect", "code": 1008}

        return checked


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that gives `body` as the whole request, then whatever the client sends."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
