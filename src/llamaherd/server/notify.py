"""systemd's notify protocol (sd_notify(3)), without libsystemd: how a `Type=notify` service
tells systemd that it is ready, and that it is stopping.

systemd starts the service with `$NOTIFY_SOCKET` naming a Unix datagram socket: a path, or an
abstract socket written with a leading `@`. Each message is one datagram of newline-separated
`KEY=VALUE` assignments: `READY=1` once llamaherd serves (systemd then counts the start as done,
and `systemctl start` returns), `STOPPING=1` when it begins to stop, `STATUS=...` a line that
`systemctl status` shows.

Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent. A message that cannot be sent
is a warning in the log, never an error: the server goes on serving either way (systemd then
counts the start as failed after its TimeoutStartSec, which says more than a crash here would).
"""

from __future__ import annotations

import logging
import socket

logger = logging.getLogger("llamaherd.notify")


def socket_address(name: str) -> str | None:
    """The address to send to for `$NOTIFY_SOCKET`'s value: a path as it is, `@name` as the
    abstract socket `\\0name`; None for a kind this module does not speak (`vsock:...`)."""
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    return None


class Notifier:
    """Sends notify messages to `address` (`$NOTIFY_SOCKET`'s value; None: sends nothing)."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None

    def ready(self, status: str | None = None) -> bool:
        """llamaherd serves: it listens and answers."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        """llamaherd has begun to stop (it drains, then stops every llama-server)."""
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def send(self, *assignments: str) -> bool:
        """One datagram of `KEY=VALUE` lines; True if it was sent. Never raises."""
        if self.address is None:
            return False
        target = socket_address(self.address)
        if target is None:
            logger.warning(
                "NOTIFY_SOCKET=%s: not a socket path or @name; not notifying", self.address
            )
            return False
        # One assignment a line: a value may not hold a line break of its own.
        message = "\n".join(" ".join(line.splitlines()) for line in assignments)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), target)
        except OSError as exc:
            logger.warning(
                "cannot tell systemd %s through NOTIFY_SOCKET=%s: %s",
                ", ".join(line.partition("=")[0] for line in assignments),
                self.address,
                exc.strerror or exc,
            )
            return False
        return True
