"""What each subcommand does, one function each (`args` from the parser). The server, the
config's validation and the REST client are imported by the handlers that use them, so
`llamaherd --version` and `llamaherd status` do not load the whole server first
(bench/cli_startup.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llamaherd.config.defaults import client_api_key
from llamaherd.errors import LlamaherdError

if TYPE_CHECKING:
    from llamaherd.client.remote import RemoteClient
from llamaherd.client.render import (
    control_line,
    model_outcome_line,
    reload_lines,
    render_models,
    render_status,
)

EXIT_OK = 0


EXIT_ERROR = 1


EXIT_USAGE = 2


def serve(args: argparse.Namespace) -> int:

    from llamaherd.config.settings import load_config
    from llamaherd.server.reload import ConfigSource
    from llamaherd.server.serve import run_serve

    overrides = {}
    if args.host is not None:
        overrides["app_host"] = args.host
    if args.port is not None:
        overrides["app_port"] = args.port
    if args.unsafe_expose_without_keys:
        overrides["unsafe_expose_without_keys"] = True
    settings = load_config(args.config, overrides=overrides)
    return run_serve(settings, ConfigSource(Path(args.config), overrides))


def demo_model(args: argparse.Namespace) -> int:
    from llamaherd.catalog.demo_model import write_demo_model

    path = write_demo_model(args.path, seed=args.seed, overwrite=args.force)
    print(path)
    return EXIT_OK


def remote_client(args: argparse.Namespace) -> RemoteClient:
    from llamaherd.client.remote import RemoteClient, service_url

    return RemoteClient(service_url(args.url, args.config), api_key=client_api_key())


def reload(args: argparse.Namespace) -> int:
    with remote_client(args) as client:
        report = client.reload_config()
    print(reload_lines(report))
    return EXIT_OK


def status(args: argparse.Namespace) -> int:
    with remote_client(args) as client:
        status = client.status(args.model)
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return EXIT_OK


def control(args: argparse.Namespace) -> int:
    from llamaherd.client.remote import REQUEST_TIMEOUT_S

    action, wait, model, host = args.action, args.wait, args.model, args.host
    if host is not None and model is None:
        raise LlamaherdError("--host names the peer of a model: name the MODEL too")
    with remote_client(args) as client:
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


def models(args: argparse.Namespace) -> int:
    with remote_client(args) as client:
        listing = client.gateway_listing()
    models, peers = listing["models"], listing.get("peers") or []
    peer_models = listing.get("peerModels") or []
    if args.json:  # one list: a front's own models (host "local"), then its peers'
        entries = [{**m, "host": "local"} for m in models] + peer_models if peers else models
        print(json.dumps(entries, indent=2))
    else:
        print(render_models(models, peers=peers, peer_models=peer_models))
    return EXIT_OK


def model_control(args: argparse.Namespace) -> int:
    from llamaherd.client.waiting import wait_for_model

    with remote_client(args) as client:
        entry = client.control_model(args.action, args.model, host=args.host)
        result = wait_for_model(client, args.action, entry, args.wait, host=args.host)
    print(model_outcome_line(args.action, result, wait=args.wait))
    if result.outcome == "done" or (result.outcome == "pending" and args.wait == 0):
        return EXIT_OK
    return EXIT_ERROR


def logs(args: argparse.Namespace) -> int:
    from llamaherd.client.follow import follow_logs

    try:
        with remote_client(args) as client:
            if not args.follow:
                write_lines(client.logs(args.lines, model=args.model))
                return EXIT_OK
            batches = follow_logs(client, args.lines, max_events=args.max_events, model=args.model)
            for batch in batches:
                write_lines(batch)
    except BrokenPipeError:
        # `llamaherd logs -f | head` closed the pipe: that is the reader saying "enough".
        discard_stdout()
    return EXIT_OK


def write_lines(lines: list[str]) -> None:
    # One write per batch, flushed at once: a pipe would otherwise hold followed lines back.
    if lines:
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        sys.stdout.flush()


def discard_stdout() -> None:
    # Python flushes stdout again at exit; into the closed pipe that would print an error.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
