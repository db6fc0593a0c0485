"""The command line's arguments: one `_add_*` per subcommand, each naming its handler
(commands.py), with bounds that match the API's own."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llamaherd.client import commands
from llamaherd.client.options import remote_options
from llamaherd.client.pull import add_pull_commands
from llamaherd.config.defaults import DEFAULT_CONFIG_NAME
from llamaherd.version import __version__

DEFAULT_WAIT_S = 60.0


MAX_WAIT_S = 600.0  # the API's own limit


DEFAULT_LOG_LINES = 50


MAX_LOG_LINES = 100_000  # the API's own limit


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
    serve.add_argument(
        "--unsafe-expose-without-keys",
        action="store_true",
        help="allow a non-loopback --host without API keys (only behind a firewall or a proxy "
        "that controls access)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(handler=commands.serve)


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
    demo.add_argument(
        "--force",
        action="store_true",
        help="replace a regular file already at PATH (never a directory, link, device, FIFO "
        "or socket)",
    )
    demo.set_defaults(handler=commands.demo_model)


def _bounded(kind: type[float] | type[int], low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: a number from `low` to `high`, with a usage error otherwise."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"use a number from {low:g} to {high:g}")
        return value

    return parse


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser(
        "status",
        parents=[remote_options()],
        help="show llama-server's state, pid, uptime, retries and models",
        description="Ask a running llamaherd what a model's llama-server is doing (the "
        "primary model's, unless MODEL is given).",
    )
    status.add_argument("model", nargs="?", type=_model_name, metavar="MODEL", help=_MODEL_HELP)
    status.add_argument(
        "--json",
        action="store_true",
        help="print the JSON of /api/status (/api/models/MODEL/status)",
    )
    status.set_defaults(handler=commands.status)


_MODEL_HELP = "a model id or alias (default: the primary model, the one of /api/llama/*)"


def _add_control(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    helps = {
        "start": "start (or adopt) a model's llama-server in its turn (within max_loaded and "
        "the memory budget) and wait until it is ready",
        "stop": "stop a model once its requests in flight have finished; it then refuses "
        "requests until started again (an adopted server is left running)",
        "restart": "stop a model once its requests have finished, then start it with a fresh "
        "retry count (the way out of error)",
    }
    for action, text in helps.items():
        control = sub.add_parser(
            action,
            parents=[remote_options()],
            help=text,
            description=f"{text[0].upper()}{text[1:]}. Prints the resulting status; exits 1 "
            "if it is error.",
        )
        control.add_argument(
            "model", nargs="?", type=_model_name, metavar="MODEL", help=_MODEL_HELP
        )
        _add_host(control)
        if action == "stop":  # the API's stop answers once drained and stopped
            control.add_argument(
                "--wait",
                type=_bounded(float, 1, MAX_WAIT_S),
                default=DEFAULT_WAIT_S,
                metavar="SECONDS",
                help="wait up to this long for requests in flight to finish and llama-server "
                f"to stop (default: {DEFAULT_WAIT_S:g})",
            )
        else:
            control.add_argument(
                "--wait",
                type=_bounded(float, 0, MAX_WAIT_S),
                default=DEFAULT_WAIT_S,
                metavar="SECONDS",
                help=f"wait up to this long for ready or error; 0 answers at once "
                f"(default: {DEFAULT_WAIT_S:g})",
            )
        control.set_defaults(handler=commands.control, action=action)


def _add_logs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logs = sub.add_parser(
        "logs",
        parents=[remote_options()],
        help="print the tail of llama-server's output; -f follows it",
        description="Print the last lines a model's llama-server wrote (stdout and stderr; the "
        "primary model's, unless MODEL is given). With -f, keep printing new lines as they "
        "come until Ctrl-C.",
    )
    logs.add_argument("model", nargs="?", type=_model_name, metavar="MODEL", help=_MODEL_HELP)
    logs.add_argument(
        "-n",
        "--lines",
        type=_bounded(int, 1, MAX_LOG_LINES),
        default=DEFAULT_LOG_LINES,
        help=f"how many lines of the tail (default: {DEFAULT_LOG_LINES})",
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="then print new lines until Ctrl-C"
    )
    # For tests: stop following after this many batches of new lines.
    logs.add_argument("--max-events", type=int, default=None, help=argparse.SUPPRESS)
    logs.set_defaults(handler=commands.logs)


def _add_host(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        type=_model_name,
        metavar="NAME",
        help="on a front: the peer whose model it is (the HOST of 'llamaherd models'); "
        "without it, the front's own model",
    )


def _model_name(text: str) -> str:
    """An argparse type: a model id or alias, which is never empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("name a model: an id or alias from 'llamaherd models'")
    return text


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser(
        "models",
        parents=[remote_options()],
        help="list the gateway's models: state, requests, last use, size, port, pid",
        description="Ask a running llamaherd about every model it serves, loaded or not. * marks "
        "the default model (the one a request that names none gets); aliases, why a model "
        "waits and its last error follow on indented lines.",
    )
    models.add_argument(
        "--json", action="store_true", help="print the models list of /api/gateway/models"
    )
    models.set_defaults(handler=commands.models)
    helps = {
        "load": "load a model now (others are unloaded as max_loaded and the memory budget "
        "require) and wait until it is ready",
        "unload": "unload a model once its requests in flight have ended, and wait until it is "
        "unloaded",
    }
    for action, text in helps.items():
        control = sub.add_parser(
            action,
            parents=[remote_options()],
            help=text,
            description=f"{text[0].upper()}{text[1:]}. Prints one line with the outcome; exits "
            "1 if the model is unknown, failed, or did not get there within --wait.",
        )
        control.add_argument("model", type=_model_name, metavar="MODEL", help="a model id or alias")
        _add_host(control)
        control.add_argument(
            "--wait",
            type=_bounded(float, 0, MAX_WAIT_S),
            default=DEFAULT_WAIT_S,
            metavar="SECONDS",
            help=f"wait up to this long for it; 0 answers at once (default: {DEFAULT_WAIT_S:g})",
        )
        control.set_defaults(handler=commands.model_control, action=action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamaherd",
        description="Supervisor and gateway for llama.cpp's llama-server.",
    )
    parser.add_argument("--version", action="version", version=f"llamaherd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_serve,
        _add_demo_model,
        _add_status,
        _add_control,
        _add_logs,
        _add_models,
        _add_reload,
        add_pull_commands,
    ):
        add(sub)
    return parser


def _add_reload(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reload = sub.add_parser(
        "reload",
        parents=[remote_options()],
        help="read the config file again and apply it without dropping a request",
        description="Ask a running llamaherd to read its config file again (as SIGHUP does). "
        "The whole file is checked first: if anything is wrong, nothing changes and the "
        "reason is printed (exit 1). Otherwise prints what changed and what needs a restart.",
    )
    reload.set_defaults(handler=commands.reload)
