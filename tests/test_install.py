"""The wheel, built from this checkout, installed into a fresh virtual environment outside it,
serves as a user would run it: `llamaherd serve` from that environment, llama-server found on
PATH, a chat request answered and the dashboard served from the files in the wheel.

It reaches PyPI for the build backend (hatchling) and llamaherd's dependencies, through pip's
own cache: the first run on a machine takes a minute or two, later ones less.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil
import pytest

from llamaherd import __version__
from tests.conftest import free_port
from tests.serving import ServedLlamaherd, write_config

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(900)]

ROOT = Path(__file__).parent.parent
PIP_TIMEOUT_S = 600


def _run(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
        env=env,
        cwd=cwd,
    )
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def _outside_env(tmp_path: Path, path: list[Path]) -> dict[str, str | None]:
    """Changes to this environment (None: removed) that keep the checkout out (PYTHONPATH, a
    virtual environment) and leave llamaherd only PATH to find llama-server (no LLAMA_SERVER,
    an empty cache folder)."""
    changes: dict[str, str | None] = dict.fromkeys(
        ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LLAMA_SERVER")
    )
    changes["PATH"] = os.pathsep.join(str(folder) for folder in path)
    changes["LLAMAHERD_CACHE"] = str(tmp_path / "empty-cache")
    return changes


def _environment(changes: dict[str, str | None]) -> dict[str, str]:
    env = {**os.environ, **changes}
    return {name: value for name, value in env.items() if value is not None}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the checkout, as `pip wheel` (an isolated build) makes it."""
    if not (ROOT / "src" / "llamaherd" / "static" / "index.html").is_file():
        pytest.fail(
            "the dashboard is not built (src/llamaherd/static): run scripts/install, or "
            "npm ci --prefix web && npm run --prefix web build"
        )
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)])
    (built,) = dist.glob("llamaherd-*.whl")
    return built


def test_the_wheel_holds_the_built_dashboard(wheel: Path) -> None:
    assert wheel.name.startswith(f"llamaherd-{__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "llamaherd/static/index.html" in names
    assert any(re.fullmatch(r"llamaherd/static/assets/.+\.js", name) for name in names)
    assert not any(name.startswith(("tests/", "web/", "src/")) for name in names)


async def test_installed_wheel_serves_a_chat_and_the_dashboard(
    wheel: Path, tmp_path: Path, real_binary: Path
) -> None:
    home = tmp_path / "outside"  # neither the checkout nor beneath it
    home.mkdir()
    venv = home / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)])
    # llama-server only on PATH: no llama_server_binary, no LLAMA_SERVER, an empty cache.
    tools = home / "bin"
    tools.mkdir()
    (tools / "llama-server").symlink_to(real_binary)
    changes = _outside_env(tmp_path, [venv / "bin", tools, Path("/usr/bin"), Path("/bin")])
    env = _environment(changes)

    where = _run(
        [str(venv / "bin" / "python"), "-c", "import llamaherd; print(llamaherd.__file__)"],
        env=env,
        cwd=home,
    )
    assert Path(where.strip()).is_relative_to(venv), where
    version = _run([str(venv / "bin" / "llamaherd"), "--version"], env=env, cwd=home)
    assert version.strip() == f"llamaherd {__version__}"
    model = home / "models" / "demo.gguf"
    _run([str(venv / "bin" / "llamaherd"), "demo-model", str(model)], env=env, cwd=home)

    config = write_config(
        home,
        {
            "llama_server_host": "127.0.0.1",
            "llama_server_port": free_port(),
            "llama_model_path": str(model),
            "app_port": free_port(),
            "state_dir": str(home / "state"),
        },
    )
    served = ServedLlamaherd(
        config, command=[str(venv / "bin" / "llamaherd")], cwd=home, env=changes
    )
    async with served:
        await served.wait_healthy()
        async with served.http(timeout=60) as http:
            chat = await http.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8},
            )
            assert chat.status_code == 200, chat.text
            assert chat.json()["choices"][0]["message"]["role"] == "assistant"
            status = (await http.get("/api/status")).json()
            assert status["status"] == "ready"
            # The llama-server it runs is the one on PATH.
            assert Path(psutil.Process(status["pid"]).exe()) == real_binary.resolve()
            served.remember_servers()

            page = await http.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert '<div id="root">' in page.text
            script = re.search(r'src="(/assets/[^"]+\.js)"', page.text)
            assert script is not None, page.text
            asset = await http.get(script.group(1))
            assert asset.status_code == 200
            assert asset.headers["content-type"].split(";")[0] in (
                "text/javascript",
                "application/javascript",
            )
            assert len(asset.content) > 1000
