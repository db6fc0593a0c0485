"""deploy/systemd/llamaherd.service: systemd accepts it (`systemd-analyze verify`, which needs no
running systemd), and it says what llamaherd needs: notify, reload by SIGHUP, a stop longer
than the drain, the state folder, the hardening."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamaherd.client.parser import build_parser
from llamaherd.config.settings import Settings
from llamaherd.server.serve import DRAIN_MARGIN_S
from llamaherd.supervisor.policy import SupervisorPolicy

UNIT = Path(__file__).parent.parent.parent / "deploy" / "systemd" / "llamaherd.service"
INSTALLED_AT = "/opt/llamaherd/bin/llamaherd"  # where README's "Run as a service" puts it


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip(
            "systemd-analyze is not installed (Debian's systemd package; "
            "scripts/install --tests installs it)"
        )
    return found


def _verify(unit_text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of `unit_text` as llamaherd.service, with ExecStart pointing
    at an executable of this machine (verify checks that it exists)."""
    executable = Path(sys.executable).with_name("llamaherd")
    if not executable.is_file():
        executable = Path(sys.executable)
    assert INSTALLED_AT in unit_text
    path = folder / "llamaherd.service"
    path.write_text(unit_text.replace(INSTALLED_AT, str(executable)))
    return subprocess.run(
        [_systemd_analyze(), "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    done = _verify(UNIT.read_text(), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == ""


def test_verify_would_see_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key or a bad value is a warning of verify's."""
    broken = UNIT.read_text().replace("KillMode=mixed", "KilMode=mixed\nTimeoutStartSec=soon")
    done = _verify(broken, tmp_path)
    assert "Unknown key 'KilMode'" in done.stderr
    assert "soon" in done.stderr


def test_the_unit_runs_llamaherd_as_a_notify_service_reloaded_by_sighup() -> None:
    service = _service()
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["User"] == service["Group"] == "llamaherd"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED_AT
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert args.config == Path("/etc/llamaherd/config.json")


def test_the_stop_outlasts_the_drain_and_llama_servers_own_stop() -> None:
    service = _service()
    assert service["KillMode"] == "mixed"  # SIGTERM to llamaherd alone: it stops its servers
    timeout_s = float(service["TimeoutStopSec"])
    drain_s = Settings.model_fields["shutdown_drain_s"].default
    longest_s = drain_s + DRAIN_MARGIN_S + SupervisorPolicy().stop_timeout_s
    assert timeout_s > longest_s


def test_state_and_hardening() -> None:
    service = _service()
    assert service["StateDirectory"] == "llamaherd"
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
    }
    assert {key: service.get(key) for key in expected} == expected
    # llama.cpp's GPU back ends need executable memory they write, and the GPU's devices.
    assert "MemoryDenyWriteExecute" not in service
    assert "PrivateDevices" not in service
