"""The `llamaherd` command line. Each subcommand is a small function; errors of ours end as one
line on stderr and a non-zero exit, never a traceback.

`serve` and `demo-model` work locally; `status`, `start`, `stop`, `restart`, `logs`, `models`,
`load` and `unload` talk to a running `llamaherd serve` over its REST API (see llamaherd.remote).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only what every command needs: the server (llamaherd.serve), the config's validation and the
# REST client (httpx) are imported by the handlers that use them, so `llamaherd --version` and
# `llamaherd status` do not load the whole server first (bench/cli_startup.py).
from llamaherd import __version__
from llamaherd.cli_pull import add_pull_commands
from llamaherd.defaults import DEFAULT_CONFIG_NAME, DEFAULT_URL, client_api_key
from llamaherd.errors import LlamaherdError

if TYPE_CHECKING:
    from llamaherd.remote import ModelWait, RemoteClient

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

DEFAULT_WAIT_S = 60.0
MAX_WAIT_S = 600.0  # the API's own limit
DEFAULT_LOG_LINES = 50
MAX_LOG_LINES = 100_000  # the API's own limit
# The API's name for "never started, or stopped" reads oddly after `llamaherd stop`.
STATUS_NOTES = {"initial": "not running", "error": "gave up; 'llamaherd restart' tries again"}
# Right after a start or restart was accepted, `initial` is the moment before its first step.
REQUESTED_NOTES = STATUS_NOTES | {"initial": "about to start"}
# Right after a load was accepted, a model not yet loading waits for room: for another model to
# be unloaded, or for this one to finish unloading first.
LOAD_REQUESTED_NOTES = {
    "unloaded": "waiting for room",
    "failed": "its last load failed; the new one is waiting for room",
    "unloading": "it loads again once unloaded",
}


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
    demo.add_argument(
        "--force",
        action="store_true",
        help="replace a regular file already at PATH (never a directory, link, device, FIFO "
        "or socket)",
    )
    demo.set_defaults(handler=_demo_model)


def _remote_options() -> argparse.ArgumentParser:
    """--url and --config, shared by every command that talks to a running llamaherd."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help=f"llamaherd's address (default: http://app_host:app_port from --config, "
        f"or {DEFAULT_URL} without a config file)",
    )
    common.add_argument(
        "--config",
        type=Path,
        default=Path(DEFAULT_CONFIG_NAME),
        help=f"JSON config file to take the address from (default: ./{DEFAULT_CONFIG_NAME})",
    )
    return common


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
        parents=[_remote_options()],
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
    status.set_defaults(handler=_status)


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
            parents=[_remote_options()],
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
        control.set_defaults(handler=_control, action=action)


def _add_logs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    logs = sub.add_parser(
        "logs",
        parents=[_remote_options()],
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
    logs.set_defaults(handler=_logs)


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
        parents=[_remote_options()],
        help="list the gateway's models: state, requests, last use, size, port, pid",
        description="Ask a running llamaherd about every model it serves, loaded or not. * marks "
        "the default model (the one a request that names none gets); aliases, why a model "
        "waits and its last error follow on indented lines.",
    )
    models.add_argument(
        "--json", action="store_true", help="print the models list of /api/gateway/models"
    )
    models.set_defaults(handler=_models)
    helps = {
        "load": "load a model now (others are unloaded as max_loaded and the memory budget "
        "require) and wait until it is ready",
        "unload": "unload a model once its requests in flight have ended, and wait until it is "
        "unloaded",
    }
    for action, text in helps.items():
        control = sub.add_parser(
            action,
            parents=[_remote_options()],
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
        control.set_defaults(handler=_model_control, action=action)


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


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llamaherd.config import load_config
    from llamaherd.reload import ConfigSource
    from llamaherd.serve import run_serve

    overrides = {}
    if args.host is not None:
        overrides["app_host"] = args.host
    if args.port is not None:
        overrides["app_port"] = args.port
    if args.unsafe_expose_without_keys:
        overrides["unsafe_expose_without_keys"] = True
    settings = load_config(args.config, overrides=overrides)
    return run_serve(settings, ConfigSource(Path(args.config), overrides))


def _demo_model(args: argparse.Namespace) -> int:
    from llamaherd.catalog.demo_model import write_demo_model

    path = write_demo_model(args.path, seed=args.seed, overwrite=args.force)
    print(path)
    return EXIT_OK


def _client(args: argparse.Namespace) -> RemoteClient:
    from llamaherd.remote import RemoteClient, service_url

    return RemoteClient(service_url(args.url, args.config), api_key=client_api_key())


def _add_reload(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reload = sub.add_parser(
        "reload",
        parents=[_remote_options()],
        help="read the config file again and apply it without dropping a request",
        description="Ask a running llamaherd to read its config file again (as SIGHUP does). "
        "The whole file is checked first: if anything is wrong, nothing changes and the "
        "reason is printed (exit 1). Otherwise prints what changed and what needs a restart.",
    )
    reload.set_defaults(handler=_reload)


def _reload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        report = client.reload_config()
    print(reload_lines(report))
    return EXIT_OK


def reload_lines(report: dict[str, Any]) -> str:
    changes = report.get("changes") or []
    lines = [
        "config reloaded: " + ("nothing changed" if not changes else f"{len(changes)} change(s)")
    ]
    lines += [f"  {change}" for change in changes]
    if report.get("needsRestart"):
        lines.append("needs a restart to apply: " + ", ".join(report["needsRestart"]))
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.status(args.model)
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return EXIT_OK


def _control(args: argparse.Namespace) -> int:
    from llamaherd.remote import REQUEST_TIMEOUT_S

    action, wait, model, host = args.action, args.wait, args.model, args.host
    if host is not None and model is None:
        raise LlamaherdError("--host names the peer of a model: name the MODEL too")
    with _client(args) as client:
        # The stop's answer is the state after it, where `adopted` is already gone: ask first.
        before = (
            client.status(model, timeout=min(wait, REQUEST_TIMEOUT_S), host=host)
            if action == "stop"
            else None
        )
        status = client.control(action, wait, model=model, host=host)
        if action != "stop" and wait == 0 and status.get("status") == "initial":
            # Answered before the supervisor took its first step: ask once more where it is.
            status = client.status(model, host=host)
    print(control_line(action, status, before=before, wait=wait))
    return EXIT_ERROR if status.get("status") == "error" else EXIT_OK


def control_line(
    action: str,
    status: dict[str, Any],
    *,
    before: dict[str, Any] | None = None,
    wait: float | None = None,
) -> str:
    """The line start/stop/restart print: what the action did, then the state it left."""
    if action == "stop" and before and before.get("adopted") and status.get("status") == "initial":
        return (
            f"{_server(status)}: still running, pid {before.get('pid')}: it was adopted (not "
            "started by llamaherd), so llamaherd stopped supervising it and left it running"
        )
    if action != "stop" and wait == 0:
        return status_line(status, lead=f"{action} requested", notes=REQUESTED_NOTES)
    return status_line(status)


def _models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        listing = client.gateway_listing()
    models, peers = listing["models"], listing.get("peers") or []
    peer_models = listing.get("peerModels") or []
    if args.json:  # one list: a front's own models (host "local"), then its peers'
        entries = [{**m, "host": "local"} for m in models] + peer_models if peers else models
        print(json.dumps(entries, indent=2))
    else:
        print(render_models(models, peers=peers, peer_models=peer_models))
    return EXIT_OK


def _model_control(args: argparse.Namespace) -> int:
    from llamaherd.remote import wait_for_model

    with _client(args) as client:
        entry = client.control_model(args.action, args.model, host=args.host)
        result = wait_for_model(client, args.action, entry, args.wait, host=args.host)
    print(model_outcome_line(args.action, result, wait=args.wait))
    if result.outcome == "done" or (result.outcome == "pending" and args.wait == 0):
        return EXIT_OK
    return EXIT_ERROR


def model_outcome_line(action: str, result: ModelWait, *, wait: float) -> str:
    """The one line load and unload print: the outcome, or where the model is when the wait
    ended ("coder: ready on port 41234 (pid 4242)", "coder: failed: ...")."""
    entry = result.entry
    model = entry["id"]
    if result.outcome == "failed":
        return f"{model}: failed: {_one_line(entry.get('lastError') or 'its llama-server gave up')}"
    if result.outcome == "done" and action == "load":
        pid = f" (pid {entry['pid']})" if entry.get("pid") is not None else ""
        return f"{model}: ready on port {entry['port']}{pid}"
    if result.outcome == "done" and entry.get("phase") == "failed":
        why = f": {_one_line(entry['lastError'])}" if entry.get("lastError") else ""
        return f"{model}: not loaded (its last load failed{why})"
    if result.outcome == "done":
        return f"{model}: unloaded"
    # Why it cannot get a server yet, as the scheduler says it: "pinned models hold every slot".
    waiting = f"; {entry['waitingFor']}" if entry.get("waitingFor") else ""
    if wait == 0:
        notes = LOAD_REQUESTED_NOTES if action == "load" else {}
        return f"{model}: {action} requested; now {model_state(entry, notes)}{waiting}"
    goal = "ready" if action == "load" else "unloaded"
    return f"{model}: not {goal} after {wait:g} s, still {model_state(entry)}{waiting}"


def model_state(entry: dict[str, Any], notes: dict[str, str] | None = None) -> str:
    """The word for where a model is: the scheduler's phase, "draining" while it is to be
    unloaded once its requests end, and the retry while its llama-server restarts."""
    phase = str(entry.get("phase", "unknown"))
    if entry.get("stopped") and phase == "unloaded":
        return "stopped"
    if phase == "ready" and entry.get("draining"):
        return "draining"
    # In `error` the count is the last run's, until the new load's first step resets it.
    if phase == "loading" and entry.get("retries") and entry.get("state") != "error":
        return f"loading (retry {entry['retries']})"
    note = (notes or {}).get(phase)
    return f"{phase} ({note})" if note else phase


def _one_line(text: str) -> str:
    # lastError may quote several lines of llama-server's output.
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


def render_models(
    models: list[dict[str, Any]],
    *,
    now_ms: int | None = None,
    peers: list[dict[str, Any]] | None = None,
    peer_models: list[dict[str, Any]] | None = None,
) -> str:
    """The table of `llamaherd models`: a row per model, then its aliases, why it waits and
    its last error on indented lines. `now_ms` (unix ms) is when "last used" counts from.

    On a front (`peers`), a HOST column: `local` for its own models, then a row per model of
    each peer (`peer_models`), and a line per peer that has a problem."""
    front = bool(peers)
    entries = [*models, *(peer_models or [])] if front else models
    if not entries:
        return "no models" + "".join(f"\n{line}" for line in _peer_lines(peers or []))
    now = time.time() * 1000 if now_ms is None else now_ms
    header = ("MODEL", "STATE", "IN FLIGHT", "QUEUED", "LAST USED", "TTL LEFT", "SIZE", "QUANT",
              "PORT", "PID")  # fmt: skip
    rows = [header, *(_model_row(entry, now) for entry in entries)]
    if front:
        hosts = ["HOST", *("local" for _ in models), *(str(m["host"]) for m in peer_models or [])]
        rows = [(row[0], host, *row[1:]) for row, host in zip(rows, hosts, strict=True)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    own = len(models)  # the default mark is the front's own: a peer's default is not its
    marks = [" ", *("*" if i < own and e.get("default") else " " for i, e in enumerate(entries))]
    lines: list[str] = []
    for index, (mark, row) in enumerate(zip(marks, rows, strict=True)):
        cells = "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=True))
        lines.append(f"{mark} {cells}".rstrip())
        if index:
            lines += [f"    {label}: {text}" for label, text in _model_notes(entries[index - 1])]
    return "\n".join([*lines, *_peer_lines(peers or [])])


def _peer_lines(peers: list[dict[str, Any]]) -> list[str]:
    """A line per peer of a front that is unreachable or has a problem."""
    lines = []
    for peer in peers:
        if peer.get("reachable") and not peer.get("problem"):
            continue
        state = "reachable" if peer.get("reachable") else "unreachable"
        why = f": {_one_line(peer['problem'])}" if peer.get("problem") else ""
        lines.append(f"peer {peer.get('name')} ({peer.get('url')}): {state}{why}")
    return lines


def _model_row(entry: dict[str, Any], now_ms: float) -> tuple[str, ...]:
    last_used = entry.get("lastUsed")
    ago = "-" if last_used is None else f"{human_duration(int((now_ms - last_used) / 1000))} ago"
    ttl_left = entry.get("ttlLeft")
    size = entry.get("size")
    return (
        str(entry["id"]),
        model_state(entry),
        f"{entry.get('inFlight', 0)}/{entry.get('maxConcurrency', '?')}",
        str(entry.get("queued", 0)),
        ago,
        "-" if ttl_left is None else human_duration(round(ttl_left)),
        "-" if size is None else human_size(int(size)),
        str(entry.get("quantisation") or "-"),
        str(entry.get("port", "-")),
        "-" if entry.get("pid") is None else str(entry["pid"]),
    )


def _model_notes(entry: dict[str, Any]) -> list[tuple[str, str]]:
    notes = []
    if entry.get("reachable") is False:  # a peer's model, on a peer the front cannot reach
        notes.append(("host", f"{entry.get('host')} is unreachable: not routed there now"))
    if entry.get("aliases"):
        notes.append(("aliases", ", ".join(entry["aliases"])))
    if entry.get("waitingFor"):
        notes.append(("waiting", str(entry["waitingFor"])))
    if entry.get("stopped"):
        notes.append(("stopped", f"{entry['stopped']}; 'llamaherd load {entry['id']}' starts it"))
    if entry.get("retryIn") is not None:
        notes.append(("failed", f"tried again by the first request in {entry['retryIn']:g} s"))
    if entry.get("lastError"):
        notes.append(("last error", _one_line(entry["lastError"])))
    return notes


def _logs(args: argparse.Namespace) -> int:
    from llamaherd.remote import follow_logs

    try:
        with _client(args) as client:
            if not args.follow:
                _write_lines(client.logs(args.lines, model=args.model))
                return EXIT_OK
            batches = follow_logs(client, args.lines, max_events=args.max_events, model=args.model)
            for batch in batches:
                _write_lines(batch)
    except BrokenPipeError:
        # `llamaherd logs -f | head` closed the pipe: that is the reader saying "enough".
        _discard_stdout()
    return EXIT_OK


def _write_lines(lines: list[str]) -> None:
    # One write per batch, flushed at once: a pipe would otherwise hold followed lines back.
    if lines:
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        sys.stdout.flush()


def _discard_stdout() -> None:
    # Python flushes stdout again at exit; into the closed pipe that would print an error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def human_size(size: int) -> str:
    """Bytes in binary units: 512 B, 512.0 KiB, 1.5 GiB."""
    if size < 1024:
        return f"{size} B"
    units = ("KiB", "MiB", "GiB", "TiB")
    value, index = size / 1024, 0
    # round() first, so 1023.99 KiB shows as 1.0 MiB rather than 1024.0 KiB.
    while round(value, 1) >= 1024 and index < len(units) - 1:
        value, index = value / 1024, index + 1
    return f"{value:.1f} {units[index]}"


def human_duration(seconds: int) -> str:
    """3s, 2m 03s, 1h 02m 03s, 2d 01h 02m 03s."""
    minutes, secs = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m {secs:02d}s"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _status_word(status: dict[str, Any], notes: dict[str, str] = STATUS_NOTES) -> str:
    word = str(status.get("status", "unknown"))
    note = notes.get(word)
    return f"{word} ({note})" if note else word


def _uptime(status: dict[str, Any]) -> str:
    # uptime counts from startedAt; without a start it is meaningless, not zero.
    return human_duration(int(status.get("uptime") or 0)) if status.get("startedAt") else "-"


def status_line(
    status: dict[str, Any], *, lead: str | None = None, notes: dict[str, str] = STATUS_NOTES
) -> str:
    """One line for start/stop/restart: the state, and what matters about it; with `lead`,
    what was just done comes first ("restart requested; now starting, pid 42")."""
    word = _status_word(status, notes)
    name = _server(status)
    parts = [f"{name}: {lead}; now {word}" if lead else f"{name}: {word}"]
    if status.get("pid") is not None:
        adopted = " (adopted)" if status.get("adopted") else ""
        parts.append(f"pid {status['pid']}{adopted}")
    if status.get("startedAt"):
        parts.append(f"uptime {_uptime(status)}")
    if status.get("retries"):
        parts.append(f"retries {status['retries']}/{status.get('maxRetries', '?')}")
    if status.get("lastError"):
        parts.append(f"last error: {status['lastError']}")
    return ", ".join(parts)


def _server(status: dict[str, Any]) -> str:
    """Whose server a status is: the model's id (the per-model routes name it), else the seed's
    "llama-server"."""
    return str(status.get("model") or "llama-server")


def _status_rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("model", str(status["model"]))] if status.get("model") else []
    rows += [
        ("status", _status_word(status)),
        ("pid", str(status["pid"]) if status.get("pid") is not None else "-"),
        ("adopted", "yes" if status.get("adopted") else "no"),
        ("uptime", _uptime(status)),
        ("retries", f"{status.get('retries', 0)}/{status.get('maxRetries', '?')}"),
        ("restarts", str(status.get("restarts", 0))),
        ("last error", str(status.get("lastError") or "-")),
    ]
    # Only worth a row while they say something.
    if status.get("nextRetryAt"):
        rows.append(("next retry", str(status["nextRetryAt"])))
    last_exit = status.get("lastExit")
    if isinstance(last_exit, dict):
        how = last_exit.get("signal") or f"code {last_exit.get('code')}"
        rows.append(("last exit", str(how)))
    return rows


def _models_table(models: list[dict[str, Any]]) -> list[str]:
    if not models:
        return ["models      none (llama-server lists them once it is ready)"]
    rows = [("NAME", "TYPE", "SIZE")]
    rows += [
        (str(m.get("name", "?")), str(m.get("type", "?")), human_size(int(m.get("size", 0))))
        for m in models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    table = [f"  {name:<{widths[0]}}  {kind:<{widths[1]}}  {size}" for name, kind, size in rows]
    return ["models", *table]


def render_status(status: dict[str, Any]) -> str:
    """The human table of `llamaherd status`."""
    lines = [f"{label:<11} {value}" for label, value in _status_rows(status)]
    lines += _models_table(list(status.get("models") or []))
    return "\n".join(lines)


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
        _discard_stdout()
        return EXIT_OK
    return code
