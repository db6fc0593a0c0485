"""The `llamaherd` command line. Each subcommand is a small function; errors of ours end as one
line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from llamaherd import __version__
from llamaherd.config import DEFAULT_CONFIG_NAME, load_config
from llamaherd.errors import LlamaherdError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="supervise llama-server in the foreground (Ctrl-C or SIGTERM stops it gracefully)",
        description=(
            "Start (or adopt) the configured llama-server, keep it alive, and serve the API "
            "and dashboard. Ctrl-C or SIGTERM stops llama-server (SIGTERM, then SIGKILL after "
            "stop_timeout_s) and exits 0."
        ),
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=Path(DEFAULT_CONFIG_NAME),
        help=f"JSON config file (default: ./{DEFAULT_CONFIG_NAME})",
    )
    serve.add_argument("--host", help="address of llamaherd's API (default: app_host)")
    serve.add_argument("--port", type=int, help="port of llamaherd's API (default: app_port)")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(handler=_serve)


def _add_demo_model(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo-model",
        help="write a tiny random-weight GGUF model (about 0.5 MB) for demos and tests",
        description=(
            "Write a valid llama-architecture GGUF with random weights: llama-server loads it "
            "in well under a second and generates noise quickly. No download needed."
        ),
    )
    demo.add_argument("path", type=Path, help="where to write the .gguf file")
    demo.add_argument("--seed", type=int, default=0, help="random seed for the weights")
    demo.set_defaults(handler=_demo_model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamaherd",
        description="Supervisor and gateway for llama.cpp's llama-server.",
    )
    parser.add_argument("--version", action="version", version=f"llamaherd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_serve, _add_demo_model):
        add(sub)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from llamaherd.serve import run_serve

    overrides = {}
    if args.host is not None:
        overrides["app_host"] = args.host
    if args.port is not None:
        overrides["app_port"] = args.port
    settings = load_config(args.config, overrides=overrides)
    return run_serve(settings)


def _demo_model(args: argparse.Namespace) -> int:
    from llamaherd.catalog.demo_model import write_demo_model

    path = write_demo_model(args.path, seed=args.seed)
    print(path)
    return EXIT_OK


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # httpx logs every probe at INFO; that is noise next to the supervisor's own lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(getattr(args, "verbose", False))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except LlamaherdError as exc:
        print(f"llamaherd: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
