"""What a wrong config says: one line per wrong key, with what it got and how to fix it."""

from __future__ import annotations

import difflib
import reprlib
from pathlib import Path

from pydantic import ValidationError

from llamaherd.supervisor.policy import POLICY_BOUNDS


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _duration(seconds: float) -> str:
    """3600 -> "1 hour", 604800 -> "7 days": a bound as a person reads it."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{_number(seconds)} s"


def _policy_fix(name: str) -> str:
    low, high = POLICY_BOUNDS[name]
    if name.endswith("_ms"):
        return (
            f"use a whole number of milliseconds from {_number(low)} to {_number(high)} "
            f"({_duration(high / 1000)})"
        )
    if name.endswith("_s"):
        return f"use a number of seconds from {_number(low)} to {_number(high)} ({_duration(high)})"
    return f"use a whole number from {_number(low)} to {_number(high)}"


_HOST_FIX = "use 127.0.0.1 for this machine only, or 0.0.0.0 to listen on every interface"
_FIXES = {
    "llama_server_host": _HOST_FIX,
    "app_host": _HOST_FIX,
    "llama_server_port": "use a whole number from 1 to 65535, e.g. 8134",
    "app_port": "use a whole number from 1 to 65535, e.g. 3000",
    "llama_server_args": 'use a list of strings, e.g. ["--threads", "4"]',
    "llama_model_path": 'use a path to a .gguf file, e.g. "./models/model.gguf"',
    "llama_server_binary": 'use the path of an executable llama-server, e.g. "/opt/llama-server"',
    "models": 'use an object of model ids, e.g. {"coder": {"path": "./models/coder.gguf"}}',
    "models_dir": 'use the path of a folder of .gguf files, e.g. "./models"',
    "max_loaded": "use a whole number of models from 1 to 256",
    "queue_depth": "use a whole number of waiting requests per model, e.g. 64",
    "queue_timeout_s": "use a number of seconds from 0.001 to 86400, e.g. 120",
    "failure_cooldown_s": "use a number of seconds from 0 to 86400, e.g. 30",
    "preload": 'use a list of model ids, loaded at start in this order, e.g. ["coder"]',
    "watch_config": "use true to reload the config whenever its file changes, or false",
    "shutdown_drain_s": "use a number of seconds from 0 to 3600, e.g. 30",
    "peers": 'use a list of llamaherds, e.g. [{"name": "gpu1", "url": "http://10.0.0.5:3000", '
    '"key_env": "GPU1_KEY"}]',
    "peers_dns": "use a DNS SRV name, e.g. _http._tcp.llamaherd-workers.llm.svc.cluster.local",
    "peers_dns_interval_s": "use a number of seconds from 1 to 3600, e.g. 10",
    "peers_dns_key_env": "use the name of an environment variable that holds the workers' key",
    "peers_dns_server": "use a name server's address, e.g. 10.96.0.10 or 127.0.0.1:5353",
    "memory_budget_mb": "use a number of MiB, e.g. 24000, or null for no budget",
    "api_keys": 'use a list of keys, e.g. [{"name": "app", "key_env": "APP_KEY", '
    '"scopes": ["inference"]}]; scopes are "inference" and "admin"',
    "cors_allowed_origins": 'use a list of origins, e.g. ["https://app.example.com"]',
    "max_body_mb": "use a number of MiB, e.g. 16",
    "body_timeout_s": "use a number of seconds, e.g. 60",
    "header_timeout_s": "use a number of seconds, e.g. 10",
    "idle_timeout_s": "use a whole number of seconds, e.g. 5",
    "max_connections": "use a whole number of connections, e.g. 1024",
    "max_connections_per_client": "use a whole number of connections, e.g. 256",
    "max_socketio_pending": "use a whole number of sessions, e.g. 256",
    "max_socketio_pending_per_client": "use a whole number of sessions, e.g. 32",
    "socketio_connect_timeout_s": "use a number of seconds, e.g. 10",
} | {name: _policy_fix(name) for name in POLICY_BOUNDS}

# What a wrong value looked like, kept short: the value may be a megabyte of nested lists.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 40, 40, 40


def unknown_key_message(key: str, source: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "remove it"
    return f"{source}: unknown key {key!r}: {hint} (known keys: {', '.join(known)})"


def validation_message(exc: ValidationError, source: str) -> str:
    """One line: the source once, then each wrong key with what it got and the fix."""
    problems = []
    for error in exc.errors():
        # models.<id>.<key>, alerts.crash_loop.<key>: the nested key, not just its parent.
        depth = {"models": 3, "api_keys": 3, "alerts": len(error["loc"])}.get(
            str(error["loc"][:1][0]) if error["loc"] else "", 1
        )
        key = ".".join(str(part) for part in error["loc"][:depth]) or "config"
        value = error.get("input")
        got = _SHORT.repr(str(value) if isinstance(value, Path) else value)
        if key.startswith("api_keys") and not {"name", "key_env", "scopes"} & set(error["loc"]):
            got = "a value not shown here"  # it may be a key: keys are never echoed
        msg = error["msg"][:1].lower() + error["msg"][1:]
        fix = _FIXES.get(key, _FIXES.get(key.split(".")[0], "") if depth == 1 else "")
        problems.append(f"{key}: {msg} (got {got})" + (f"; {fix}" if fix else ""))
    return f"{source}: " + "; ".join(problems)
