"""What the command line prints: status lines and tables, model rows, sizes and durations, the
outcome of a control or a reload. Pure functions of the API's answers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llamaherd.client.waiting import ModelWait


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


def reload_lines(report: dict[str, Any]) -> str:
    changes = report.get("changes") or []
    lines = [
        "config reloaded: " + ("nothing changed" if not changes else f"{len(changes)} change(s)")
    ]
    lines += [f"  {change}" for change in changes]
    if report.get("needsRestart"):
        lines.append("needs a restart to apply: " + ", ".join(report["needsRestart"]))
    return "\n".join(lines)


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
