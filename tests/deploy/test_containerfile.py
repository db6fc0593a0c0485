"""Containerfile: it builds llama-server from the same pinned llama.cpp source as
scripts/build-llama-server, and its runtime stage is what the Kubernetes manifests and
llamaherd expect: a non-root user, the default config (which loads) with its folders as
volumes, the port exposed, the health check on /healthz, `llamaherd serve` as the command.
(tests/deploy/test_image.py builds the image and runs it.)"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from llamaherd.config.settings import Settings, settings_from_mapping
from tests.deploy.manifests import CONTAINERFILE, KUBERNETES, ROOT, image_uid, variant, workloads

BUILD_SCRIPT = ROOT / "scripts" / "build-llama-server"


@dataclass(frozen=True)
class Instruction:
    stage: str  # the FROM line's AS name, or the base of the last stage
    keyword: str
    value: str


def instructions(text: str) -> list[Instruction]:
    """The Containerfile's instructions, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    found: list[Instruction] = []
    stage = ""
    for line in lines:
        keyword, _, value = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            parts = value.split()
            stage = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else parts[0]
        found.append(Instruction(stage, keyword.upper(), value.strip()))
    return found


INSTRUCTIONS = instructions(CONTAINERFILE.read_text())
RUNTIME = [i for i in INSTRUCTIONS if i.stage == INSTRUCTIONS[-1].stage]


def _one(keyword: str) -> str:
    (value,) = [i.value for i in RUNTIME if i.keyword == keyword]
    return value


def _script_pin() -> str:
    match = re.search(
        r'^PIN="\$\{LLAMA_CPP_SOURCE_PIN:-([^}]+)\}"$', BUILD_SCRIPT.read_text(), re.M
    )
    assert match, "scripts/build-llama-server no longer declares its pin as PIN=..."
    return match.group(1)


def default_config() -> dict[str, object]:
    """The config the image writes to /etc/llamaherd/config.json (its printf's lines)."""
    (run,) = [
        i.value for i in RUNTIME if i.keyword == "RUN" and "/etc/llamaherd/config.json" in i.value
    ]
    words = shlex.split(run.split(">", 1)[0])
    assert words[:2] == ["printf", "%s\\n"]
    config: dict[str, object] = json.loads("".join(words[2:]))
    return config


def test_the_image_builds_llama_server_from_the_pin_of_scripts_build_llama_server() -> None:
    args = [i.value for i in INSTRUCTIONS if i.keyword == "ARG"]
    assert f"LLAMA_CPP_SOURCE_PIN={_script_pin()}" in args
    (build,) = [i for i in INSTRUCTIONS if i.keyword == "RUN" and "build-llama-server" in i.value]
    # The script itself builds it (the pin passed on), or a binary it built is checked
    # against the same pin.
    assert 'LLAMA_CPP_SOURCE_PIN="$LLAMA_CPP_SOURCE_PIN"' in build.value
    assert '"$pin" != "$LLAMA_CPP_SOURCE_PIN"' in build.value
    copies = [i.value for i in INSTRUCTIONS if i.keyword == "COPY" and i.stage == build.stage]
    assert any("scripts/build-llama-server" in copy for copy in copies)


def test_scripts_build_image_passes_that_pin_to_the_build() -> None:
    script = (ROOT / "scripts" / "build-image").read_text()
    assert '--build-arg "LLAMA_CPP_SOURCE_PIN=$PIN"' in script
    assert "scripts/build-llama-server" in script


def test_the_runtime_runs_llamaherd_serve_as_the_user_the_manifests_name() -> None:
    assert _one("USER") == "10001:10001"
    assert image_uid() == 10001
    assert json.loads(_one("CMD")) == [
        "llamaherd",
        "serve",
        "--config",
        "/etc/llamaherd/config.json",
    ]
    assert json.loads(_one("ENTRYPOINT"))[0] == "/usr/bin/tini"
    for folder in (KUBERNETES / "base", KUBERNETES / "gpu"):
        for workload in workloads(variant(folder)):
            assert workload.pod["securityContext"]["runAsUser"] == 10001
            assert workload.container["args"] == json.loads(_one("CMD"))


def test_the_default_config_loads_and_its_folders_are_volumes() -> None:
    settings = settings_from_mapping(default_config(), source="Containerfile")
    assert settings.app_host == "0.0.0.0"
    assert _one("EXPOSE") == f"{settings.app_port}"
    assert settings.app_port == Settings().app_port
    volumes = json.loads(_one("VOLUME"))
    assert {str(settings.models_dir), str(settings.state_dir)} == set(volumes)


def test_the_health_check_asks_healthz_on_the_exposed_port() -> None:
    check = _one("HEALTHCHECK")
    assert re.search(r"--timeout=\d+s", check)
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[0] == "python3"
    assert f"http://127.0.0.1:{_one('EXPOSE')}/healthz" in command[-1]


def test_the_build_context_leaves_out_what_is_not_source() -> None:
    ignored = (ROOT / ".containerignore").read_text().splitlines()
    for entry in (".git", ".venv", "**/node_modules", "src/llamaherd/static"):
        assert entry in ignored
    # build/ is left out, but for the llama-server that scripts/build-image puts there.
    assert ignored.index("build") < ignored.index("!build/image/llama-server")


def test_the_instruction_reader_joins_continued_lines() -> None:
    text = "FROM a AS one\n# note\nRUN x \\\n && y\nFROM one\nUSER 1\n"
    assert instructions(text) == [
        Instruction("one", "FROM", "a AS one"),
        Instruction("one", "RUN", "x   && y"),
        Instruction("one", "FROM", "one"),
        Instruction("one", "USER", "1"),
    ]


def test_the_build_script_runs_as_a_script() -> None:
    mode = (ROOT / "scripts" / "build-image").stat().st_mode
    assert mode & 0o111
    assert Path(ROOT / "scripts" / "build-image").read_text().startswith("#!/usr/bin/env bash")
