"""The `llamaherd` command line. Each subcommand is a small function; errors of ours end as one
line on stderr and a non-zero exit, never a traceback.

`serve` and `demo-model` work locally; `status`, `start`, `stop`, `restart`, `logs`, `models`,
`load` and `unload` talk to a running `llamaherd serve` over its REST API (client/remote.py).
The arguments are parser.py's, the handlers commands.py's, what they print render.py's. Only
what every command needs is imported here: `llamaherd --version` and `llamaherd status` do not
load the whole server first (bench/cli_startup.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from llamaherd.client.commands import EXIT_ERROR, EXIT_OK, discard_stdout
from llamaherd.client.parser import build_parser
from llamaherd.errors import LlamaherdError


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # httpx logs every probe at INFO, gguf every file it writes: noise next to our own lines.
    for chatty in ("httpx", "gguf"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_plain_uvicorn_name)


def _plain_uvicorn_name(record: logging.LogRecord) -> bool:
    # uvicorn logs its life cycle as "uvicorn.error", which reads like an error when it is not.
    if record.name == "uvicorn.error":
        record.name = "uvicorn"
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(getattr(args, "verbose", False))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        # A closed pipe (`llamaherd status | head -1`) shows here, not as a traceback at exit.
        sys.stdout.flush()
    except LlamaherdError as exc:
        print(f"llamaherd: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader stopped reading: it has what it wanted.
        discard_stdout()
        return EXIT_OK
    return code
