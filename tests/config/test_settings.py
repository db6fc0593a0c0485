"""Config files: the seed's works unchanged; every mistake gets a message naming key and fix."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from llamaherd.config.binaries import locate_llama_server
from llamaherd.config.keys import api_key_secrets
from llamaherd.config.settings import Settings, load_config, settings_from_mapping
from llamaherd.errors import BinaryNotFoundError, ConfigError
from llamaherd.supervisor.policy import POLICY_BOUNDS, SupervisorPolicy
from tests.conftest import serve_once

pytestmark = pytest.mark.timeout(30)

# A valid GGUF header: version 3, no tensors, no metadata.
GGUF_HEADER = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "your-model.gguf"
    path.parent.mkdir()
    path.write_bytes(GGUF_HEADER)
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


def one_line_error(path: Path, binary: Path, *, check_files: bool = True) -> str:
    """The ConfigError of loading `path`; it must be a single line."""
    with pytest.raises(ConfigError) as caught:
        overrides = {"llama_server_binary": str(binary)}
        load_config(path, overrides=overrides, check_files=check_files)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# ---- hosts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["app_host", "llama_server_host"])
@pytest.mark.parametrize("value", ["", " ", "\t"])
def test_an_empty_host_is_refused(tmp_path: Path, binary: Path, key: str, value: str) -> None:
    path = write(tmp_path, {key: value})
    message = one_line_error(path, binary, check_files=False)
    assert message == (
        f"{path}: {key}: an empty host is a mistake (got {value!r}); use 127.0.0.1 for this "
        "machine only, or 0.0.0.0 to listen on every interface"
    )


def test_the_wildcard_host_is_still_accepted(tmp_path: Path, binary: Path) -> None:
    path = write(tmp_path, {"app_host": "0.0.0.0", "llama_server_host": "0.0.0.0"})
    settings = load_config(path, overrides={"llama_server_binary": str(binary)}, check_files=False)
    assert settings.app_host == settings.llama_server_host == "0.0.0.0"


# ---- the supervisor's numbers ---------------------------------------------------------------


def test_supervisor_keys_take_defaults_and_bounds_from_the_policy() -> None:
    policy = SupervisorPolicy()
    for name, (low, high) in POLICY_BOUNDS.items():
        field = Settings.model_fields[name]
        assert field.default == getattr(policy, name), name
        limits = {type(m).__name__: m for m in field.metadata}
        assert limits["Ge"].ge == low and limits["Le"].le == high, name
    assert Settings().supervisor_policy() == policy


@pytest.mark.parametrize("value", ["1e15", str(10**15), str(10**400)])
def test_huge_backoff_is_refused_naming_key_and_range(
    tmp_path: Path, binary: Path, value: str
) -> None:
    path = write(tmp_path, f'{{"backoff_initial_ms": {value}, "backoff_max_ms": {value}}}')
    message = one_line_error(path, binary, check_files=False)
    assert message.startswith(f"{path}: backoff_initial_ms: ")
    assert "use a whole number of milliseconds from 1 to 3600000 (1 hour)" in message
    assert "backoff_max_ms: " in message
    assert "from 1 to 86400000 (1 day)" in message
    assert len(message) < 600


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("stop_timeout_s", "0", "stop_timeout_s: input should be greater than or equal to 0.001"),
        ("stop_timeout_s", "1e300", "use a number of seconds from 0.001 to 3600 (1 hour)"),
        ("stop_timeout_s", "NaN", "use a number of seconds from 0.001 to 3600"),
        ("stable_after_s", "Infinity", "use a number of seconds from 0 to 604800 (7 days)"),
        ("stable_after_s", str(10**400), "use a number of seconds from 0 to 604800"),
        ("max_retries", "101", "max_retries: input should be less than or equal to 100"),
        ("log_lines", "5", "use a whole number from 10 to 1000000"),
        ("health_timeout_ms", "true", "input should be a valid integer"),
    ],
)
def test_every_policy_number_is_bounded(
    tmp_path: Path, binary: Path, key: str, value: str, expected: str
) -> None:
    path = write(tmp_path, f'{{"{key}": {value}}}')
    message = one_line_error(path, binary, check_files=False)
    assert message.startswith(f"{path}: {key}: ")
    assert expected in message


# ---- files that cannot be read as JSON ------------------------------------------------------


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path, binary: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"llama_server_host": "caf\u00e9"}'.encode("latin-1"))
    message = one_line_error(path, binary, check_files=False)
    assert message.startswith(f"{path} is not UTF-8 text: byte 0xe9 at position 26")
    assert "save it as UTF-8" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 100_000, "is nested too deeply"),
        ('{"llama_server_args": ' + "[" * 100_000 + "]" * 100_000 + "}", "is nested too deeply"),
        ('{"max_retries": ' + "9" * 5000 + "}", "is not valid JSON: "),
    ],
)
def test_hostile_json_is_one_line(tmp_path: Path, binary: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    message = one_line_error(path, binary, check_files=False)
    assert message.startswith(f"{path} ") and expected in message
    assert len(message) < 400


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe{}", b"[" * 100_000],
    ids=["not-utf8", "deeply-nested"],
)
def test_serve_reports_unreadable_json_in_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    result = serve_once(path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"llamaherd: error: {path} ")
    assert result.stderr.count("\n") == 1


# ---- the model file -------------------------------------------------------------------------


def _model_error(tmp_path: Path, binary: Path, model: Path) -> str:
    path = write(tmp_path, {"llama_model_path": str(model)})
    message = one_line_error(path, binary)
    assert message.startswith(f"{path}: llama_model_path: model file {model} ")
    assert "llamaherd demo-model" in message
    return message


def test_a_directory_is_not_a_model(tmp_path: Path, binary: Path) -> None:
    folder = tmp_path / "models.gguf"
    folder.mkdir()
    assert "is a directory, not a file" in _model_error(tmp_path, binary, folder)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is not a GGUF file (it is empty)"),
        (b"\x89PNG\r\n\x1a\n" + os.urandom(64), "is not a GGUF file (its first bytes are"),
        (GGUF_HEADER[:10], "header is truncated or corrupt"),
        (
            b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1000) + b"general.",
            "header is truncated or corrupt",
        ),
    ],
    ids=["empty", "random-bytes", "cut-in-counts", "cut-in-metadata"],
)
def test_a_file_that_is_not_gguf_is_refused(
    tmp_path: Path, binary: Path, content: bytes, expected: str
) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(content)
    assert expected in _model_error(tmp_path, binary, model)


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root reads a file whatever its mode, so chmod 000 cannot make it unreadable",
)
def test_an_unreadable_model_is_refused(tmp_path: Path, binary: Path, model: Path) -> None:
    model.chmod(0o000)
    try:
        message = _model_error(tmp_path, binary, model)
    finally:
        model.chmod(0o644)
    assert "cannot be read: Permission denied" in message


@pytest.mark.parametrize(
    "data",
    [
        {"llama_model_path": "./models/a\u0000b.gguf"},
        {"llama_server_binary": "/opt/llama\u0000server"},
        {"llama_server_args": ["--alias", "a\u0000b"]},
    ],
)
def test_a_nul_character_is_refused(tmp_path: Path, binary: Path, data: dict[str, object]) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    key = next(iter(data))
    assert str(caught.value).startswith(f"{path}: {key}: it contains a NUL character")


def test_a_huge_file_is_not_read_whole(tmp_path: Path, binary: Path) -> None:
    path = write(tmp_path, "{" + " " * (1024 * 1024) + "}")
    assert "too large to be a llamaherd config" in one_line_error(path, binary, check_files=False)


# ---- API keys ----------------------------------------------------------------------------------

SECRET = "s3cret-0123456789abcdef"


def test_api_keys_come_from_the_file_the_environment_and_llamaherd_api_key() -> None:
    settings = settings_from_mapping(
        {
            "api_keys": [
                {"name": "ops", "key": SECRET, "scopes": ["admin"]},
                {"name": "app", "key_env": "APP_KEY"},
            ]
        }
    )
    assert SECRET not in repr(settings)  # a key is a SecretStr: never in a repr or a log line
    found = api_key_secrets(
        settings, {"APP_KEY": "app-key-0123456789ab", "LLAMAHERD_API_KEY": "env-key-0123456789ab"}
    )
    assert found == [
        ("ops", SECRET, ("admin",)),
        ("app", "app-key-0123456789ab", ("inference",)),
        ("LLAMAHERD_API_KEY", "env-key-0123456789ab", ("admin",)),
    ]
    assert api_key_secrets(Settings(), {}) == []


@pytest.mark.parametrize(
    ("entries", "environ", "expected"),
    [
        (
            [{"name": "app", "key_env": "APP_KEY"}],
            {},
            "api_keys[0] (app): key_env: the environment variable APP_KEY is not set or empty",
        ),
        ([{"name": "a", "key": "x" * 15}], {}, "the key is 15 characters long; use at least 16"),
        ([{"name": "a", "key": "with space 0123456789"}], {}, "cannot carry"),
        (
            [{"name": "a", "key": SECRET}, {"name": "a", "key": SECRET + "x"}],
            {},
            "two keys are named 'a'",
        ),
        (
            [{"name": "a", "key": SECRET}, {"name": "b", "key": SECRET}],
            {},
            "two entries hold the same key",
        ),
        ([], {"LLAMAHERD_API_KEY": "short"}, "LLAMAHERD_API_KEY: the key is 5 characters long"),
    ],
)
def test_a_missing_or_weak_key_is_one_line_that_never_shows_it(
    entries: list[dict[str, object]], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        api_key_secrets(settings_from_mapping({"api_keys": entries}), environ)
    assert expected in str(raised.value)
    assert SECRET not in str(raised.value) and "with space" not in str(raised.value)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "a"}, "api_keys.0: give exactly one of key and key_env"),
        ({"name": "a", "key": SECRET, "key_env": "K"}, "give exactly one of key and key_env"),
        ({"name": "a", "key": SECRET, "scopes": ["root"]}, "'inference' or 'admin'"),
        ({"name": "a b", "key": SECRET}, "api_keys.0.name"),
        ({"name": "a", "key": SECRET, "role": "x"}, "api_keys.0.role: extra inputs"),
    ],
)
def test_a_malformed_key_entry_names_the_field_and_hides_the_key(
    entry: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from_mapping({"api_keys": [entry]})
    assert expected in str(raised.value)
    assert SECRET not in str(raised.value)
