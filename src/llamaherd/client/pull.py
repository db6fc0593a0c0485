"""`llamaherd pull` and `llamaherd rm`: models from the Hugging Face Hub, on the command line.

Like the other commands, they talk to a running `llamaherd serve` (the address from --url, or
from the config file): a pull there is the server's (POST /api/models/pull), its progress
read from /api/events, and the model is served as soon as it is complete. When nothing answers
at that address (and no --url was given), or with --local, they work on the config's
models_dir directly: the download runs here, and the next `llamaherd serve` (or `llamaherd
reload`) serves the model.

Ctrl-C during a pull: a server's pull is cancelled (its partial file removed); a pull here
stops and keeps its partial file, so the same command resumes it.

Only argparse is imported at the top: `llamaherd --version` must not load httpx or the Hub.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llamaherd.client.options import remote_options
from llamaherd.config.defaults import client_api_key

if TYPE_CHECKING:
    from llamaherd.client.pulls_remote import PullClient

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
EXAMPLE = "bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
PULL_EVENT = "modelPull"  # api/event_names.py's MODEL_PULL_EVENT, without importing the API
FINISHED = ("done", "failed", "cancelled")
BAR_WIDTH = 30
_CONFIG_USE = "to take models_dir and the address from"
REDRAW_S = 0.1  # a terminal's bar is drawn at most this often


def add_pull_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`pull` and `rm`, for cli.build_parser."""
    pull = sub.add_parser(
        "pull",
        help="download a GGUF model from Hugging Face into models_dir, with a progress bar",
        description=(
            "Download a model from the Hugging Face Hub into the config's models_dir: "
            "OWNER/REPO:QUANT picks the file as llama.cpp's -hf does (a split model's parts "
            "and a vision model's mmproj come too), OWNER/REPO/FILE.gguf names it. A running "
            "llamaherd does the download and serves the model when it is complete; otherwise "
            "it is downloaded here. Resumes an interrupted download; checks the Hub's "
            "checksum; refuses when the disk has too little room. HF_TOKEN: a token for "
            "gated repositories; HF_ENDPOINT: another Hub (a mirror)."
        ),
        epilog=f"example: llamaherd pull {EXAMPLE}",
        parents=[remote_options(_CONFIG_USE)],
    )
    pull.add_argument("source", metavar="SOURCE", help="OWNER/REPO[:QUANT] or OWNER/REPO/FILE.gguf")
    _local_option(pull)
    pull.set_defaults(handler=_pull)
    rm = sub.add_parser(
        "rm",
        help="delete a pulled model's files from models_dir (once it is unloaded)",
        description="Delete a model's files (every part, and its mmproj) from models_dir. A "
        "running llamaherd refuses while the model is loaded ('llamaherd unload MODEL' first) "
        "and stops serving it; without one, the files are deleted here.",
        parents=[remote_options(_CONFIG_USE)],
    )
    rm.add_argument("model", metavar="MODEL", help="the model's id (llamaherd models)")
    _local_option(rm)
    rm.set_defaults(handler=_rm)


def _local_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local",
        action="store_true",
        help="work on models_dir here, even if a llamaherd is running",
    )


# ---- pull ------------------------------------------------------------------------------------


def _pull(args: argparse.Namespace) -> int:
    client = None if args.local else _running(args)
    if client is not None:
        with client:
            return _pull_remote(client, args.source)
    return _pull_local(args)


def _running(args: argparse.Namespace) -> PullClient | None:
    """A client of the llamaherd at the configured address, or None when nothing answers
    there (an explicit --url that does not answer is an error)."""
    from llamaherd.client.pulls_remote import PullClient
    from llamaherd.client.remote import service_url

    url = service_url(args.url, args.config)
    client = PullClient(url, api_key=client_api_key())
    if client.answers():
        return client
    client.close()
    if args.url:
        from llamaherd.errors import ServiceUnreachableError

        raise ServiceUnreachableError(f"cannot reach llamaherd at {url}; is it running?")
    print(f"llamaherd is not running at {url}: working on models_dir here", file=sys.stderr)
    return None


def _pull_remote(client: PullClient, source: str) -> int:
    bar = ProgressBar(sys.stderr)
    with client.events() as events:  # before the pull: none of its events is missed
        pull = client.start_pull(source)
        bar.show(pull)
        try:
            for name, payload in events:
                if pull["state"] in FINISHED:
                    break
                if name == PULL_EVENT and payload.get("id") == pull["id"]:
                    pull = payload
                    bar.show(pull)
                    if pull["state"] in FINISHED:
                        break
        except KeyboardInterrupt:
            cancelled = client.cancel_pull(pull["id"])
            bar.show(cancelled)
            print(f"{cancelled['model']}: pull cancelled", file=sys.stderr)
            return EXIT_INTERRUPTED
    return _outcome(pull, served=True)


def _pull_local(args: argparse.Namespace) -> int:
    import asyncio

    folder = _models_dir(args.config)
    bar = ProgressBar(sys.stderr)
    try:
        pull = asyncio.run(_download_here(folder, args.source, bar))
    except KeyboardInterrupt:
        print(
            "\npull interrupted: its partial file stays in models_dir/.pull; the same command "
            "resumes it",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return _outcome(pull, served=False)


async def _download_here(folder: Path, source: str, bar: ProgressBar) -> dict[str, Any]:
    from llamaherd.catalog.hub import Hub
    from llamaherd.catalog.pulls import PullManager
    from llamaherd.config.defaults import hub_endpoint, hub_token

    pulls = PullManager(lambda: folder, Hub(hub_endpoint(), hub_token()))
    pulls.on_change(bar.show)
    try:
        pull = await pulls.pull(source)
        await pulls.wait(pull)
        return pull.as_dict()
    finally:
        await pulls.aclose()  # Ctrl-C: the download stops, its partial file stays


def _outcome(pull: dict[str, Any], *, served: bool) -> int:
    from llamaherd.errors import LlamaherdError

    model = pull["model"]
    if pull["state"] == "downloading":  # the event stream ended first (llamaherd stopped?)
        raise LlamaherdError(
            f"llamaherd's event stream ended while {model} was still downloading; the same "
            "command shows the pull again (or resumes it)"
        )
    if pull["state"] == "failed":
        raise LlamaherdError(f"pull of {model} failed: {pull['error']}")
    if pull["state"] == "cancelled":
        print(f"{model}: pull cancelled", file=sys.stderr)
        return EXIT_ERROR
    where = (
        "llamaherd serves it now"
        if served
        else "'llamaherd serve' (or 'llamaherd reload') serves it"
    )
    print(f"{model}: pulled ({', '.join(pull['files'])}); {where} as model {model!r}")
    return EXIT_OK


def _models_dir(config: Path) -> Path:
    from llamaherd.config.settings import load_config
    from llamaherd.errors import ConfigError

    settings = load_config(config, check_files=False)
    if settings.models_dir is None:
        raise ConfigError(
            f'{config}: models_dir is not set; add "models_dir": "./models" (pulled models go '
            "there, and llamaherd serves every model in it)"
        )
    return settings.models_dir


# ---- rm --------------------------------------------------------------------------------------


def _rm(args: argparse.Namespace) -> int:
    client = None if args.local else _running(args)
    if client is not None:
        with client:
            removed = client.remove_model(args.model)
        reload = (
            "" if removed.get("reloaded") else f"; the config reload failed: {removed.get('error')}"
        )
        print(f"{removed['model']}: deleted {', '.join(removed['files'])}{reload}")
        return EXIT_OK if removed.get("reloaded") else EXIT_ERROR
    from llamaherd.catalog.library import scan_models_dir
    from llamaherd.catalog.pulls import delete_files, pulled_model_files
    from llamaherd.errors import LlamaherdError

    folder = _models_dir(args.config)
    found = {model.id: model for model in scan_models_dir(folder)}
    if args.model not in found:
        have = ", ".join(sorted(found)) or "none"
        raise LlamaherdError(
            f"models_dir ({folder}) has no model {args.model!r}; its models: {have}"
        )
    files = pulled_model_files(folder, args.model, found[args.model].path)
    delete_files(files)
    print(f"{args.model}: deleted {', '.join(f.name for f in files)}")
    return EXIT_OK


# ---- the client and the bar ------------------------------------------------------------------


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class ProgressBar:
    """A pull's progress on a terminal: one line, redrawn (`model [#####    ] 42% 1.2/2.9
    GiB 35.1 MiB/s`); not on a terminal (a log, a pipe), a line at each quarter."""

    def __init__(self, stream: IO[str], *, clock: Any = time.monotonic) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._clock = clock
        self._drawn_at = 0.0
        self._quarter = -1
        self._first: tuple[float, int] | None = None

    def show(self, pull: dict[str, Any]) -> None:
        now = self._clock()
        done, total = int(pull.get("bytes") or 0), int(pull.get("total") or 0)
        if self._first is None:
            self._first = (now, done)
        finished = pull.get("state") in FINISHED
        if self.tty:
            if not finished and now - self._drawn_at < REDRAW_S:
                return
            self._drawn_at = now
            self.stream.write(f"\r{self.line(pull, now)}\x1b[K" + ("\n" if finished else ""))
        else:
            quarter = 4 if finished else (4 * done // total if total else 0)
            if quarter == self._quarter:
                return
            self._quarter = quarter
            self.stream.write(self.line(pull, now) + "\n")
        self.stream.flush()

    def line(self, pull: dict[str, Any], now: float) -> str:
        done, total = int(pull.get("bytes") or 0), int(pull.get("total") or 0)
        share = done / total if total else 0.0
        filled = int(BAR_WIDTH * share)
        bar = "#" * filled + " " * (BAR_WIDTH - filled)
        speed = ""
        if self._first is not None and now > self._first[0] and done > self._first[1]:
            speed = f" {_size((done - self._first[1]) / (now - self._first[0]))}/s"
        state = pull.get("state")
        tail = "" if state == "downloading" else f" {state}"
        return f"{pull.get('model')} [{bar}] {share:4.0%} {_size(done)}/{_size(total)}{speed}{tail}"
