"""`llamaherd --version` and `llamaherd status` stay quick because they import little: what each
loads, in a fresh interpreter. (bench/cli_startup.py measures the time; this keeps the cause.)"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import free_port

# The server and what only it needs: none of it is for the command line's quick commands.
SERVER = {
    "aiohttp",
    "fastapi",
    "gguf",
    "numpy",
    "prometheus_client",
    "socketio",
    "starlette",
    "uvicorn",
    "llamaherd.api.app",
    "llamaherd.api.payloads",
    "llamaherd.gateway",
    "llamaherd.server.serve",
    "llamaherd.supervisor",
    "llamaherd.wiring.build",
}


def modules_after(argv: list[str]) -> set[str]:
    """The modules loaded once `llamaherd ARGV` has run, in an interpreter of its own."""
    code = (
        "import json, sys\n"
        "from llamaherd.client.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stdout.flush()\n"
        "sys.__stderr__.write(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return set(json.loads(done.stderr.splitlines()[-1]))


def test_version_loads_no_library_and_no_server() -> None:
    modules = modules_after(["--version"])
    assert "llamaherd.client.cli" in modules
    assert not modules & (
        SERVER | {"httpx", "pydantic", "llamaherd.config.settings", "llamaherd.client.remote"}
    )


def test_status_loads_the_client_and_no_server() -> None:
    modules = modules_after(["status", "--url", f"http://127.0.0.1:{free_port()}"])
    assert {"httpx", "llamaherd.client.remote"} <= modules
    assert not modules & SERVER
    # --url: no config file to validate.
    assert "llamaherd.config.settings" not in modules
