"""Config files: the seed's works unchanged; every mistake gets a message naming key and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamaherd.config import load_config, locate_llama_server
from llamaherd.errors import BinaryNotFoundError, ConfigError
from tests.conftest import serve_once

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "your-model.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "llama-server"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / ".llama-proxy-config.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_the_seed_config_works_unchanged(tmp_path: Path, model: Path, binary: Path) -> None:
    seed = {
        "llama_server_host": "localhost",
        "llama_server_port": 8134,
        "llama_model_path": "./models/your-model.gguf",
    }
    path = write(tmp_path, seed)
    settings = load_config(path, overrides={"llama_server_binary": str(binary)})
    assert settings.llama_server_host == "localhost"
    assert settings.llama_server_port == 8134
    assert settings.llama_model_path == model  # relative to the config file's folder
    assert settings.app_host == "127.0.0.1" and settings.app_port == 3000
    assert settings.max_retries == 5


def test_extended_keys(tmp_path: Path, model: Path, binary: Path) -> None:
    path = write(
        tmp_path,
        {
            "llama_model_path": str(model),
            "llama_server_binary": str(binary),
            "llama_server_args": ["--threads", "4"],
            "max_retries": 3,
            "stable_after_s": 10,
            "app_port": 3100,
        },
    )
    settings = load_config(path)
    assert settings.llama_server_args == ("--threads", "4")
    policy = settings.supervisor_policy()
    assert policy.max_retries == 3 and policy.stable_after_s == 10.0
    assert settings.app_port == 3100


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"llama_server_prot": 8134},
            "unknown key 'llama_server_prot': did you mean 'llama_server_port'?",
        ),
        ({"llama_server_port": "8134"}, "llama_server_port: input should be a valid integer"),
        (
            {"llama_server_port": 70000},
            "llama_server_port: input should be less than or equal to 65535",
        ),
        ({"llama_server_port": 0}, "use a whole number from 1 to 65535"),
        ({"llama_server_args": "--threads 4"}, "llama_server_args: input should be a valid tuple"),
        ({"max_retries": -1}, "max_retries: input should be greater than or equal to 0"),
        (
            "{not json",
            "is not valid JSON: Expecting property name enclosed in double quotes at line 1",
        ),
        ("[1, 2]", "must hold a JSON object"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, binary: Path, data: object, expected: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides={"llama_server_binary": str(binary)}, check_files=False)
    assert expected in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found\. Create it"):
        load_config(tmp_path / "nope.json")


def test_missing_model_file(tmp_path: Path, binary: Path) -> None:
    path = write(tmp_path, {"llama_model_path": "./models/gone.gguf"})
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides={"llama_server_binary": str(binary)})
    message = str(caught.value)
    assert "llama_model_path" in message and "gone.gguf does not exist" in message
    assert "llamaherd demo-model" in message


def test_missing_and_non_executable_binary(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, {"llama_model_path": str(model), "llama_server_binary": "./nope"})
    with pytest.raises(ConfigError, match=r"llama_server_binary: .*nope does not exist"):
        load_config(path)
    plain = tmp_path / "plain"
    plain.write_text("")
    path = write(tmp_path, {"llama_model_path": str(model), "llama_server_binary": str(plain)})
    with pytest.raises(ConfigError, match="is not an executable file"):
        load_config(path)


def test_binary_lookup_order(tmp_path: Path, binary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAHERD_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.delenv("LLAMA_SERVER", raising=False)
    with pytest.raises(BinaryNotFoundError, match="scripts/build-llama-server"):
        locate_llama_server()
    monkeypatch.setenv("LLAMA_SERVER", str(binary))
    assert locate_llama_server() == binary
    other = tmp_path / "other"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert locate_llama_server(other) == other  # the config wins over the environment


def test_cli_reports_a_bad_config_in_one_line_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, {"llama_server_port": "eighty"})
    result = serve_once(path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "llamaherd: error:" in result.stderr
    assert "llama_server_port" in result.stderr
