"""The container image, built and run. scripts/build-image builds it with podman from a Debian
base made here with mmdebstrap (`--local-base`), and the image's own llamaherd and llama-server
run from its exported file system in a chroot, as the image's user: their versions, then
`llamaherd serve` with the image's default config and a demo model, through tini as the image
starts it: /healthz, the image's own HEALTHCHECK command, a chat completion answered by the
image's llama-server, and SIGTERM ending it all with exit 0. (`podman run` itself is refused on
machines whose limits forbid containers; a chroot of the same files is not.)

It needs root (chroot, and a mount namespace for /proc), podman and mmdebstrap (scripts/install
--tests installs both), the package registries, and about 5 minutes on 2 cores the first time
(the Debian base, its packages, the node packages, the wheel); podman caches the layers, so a
later build only redoes what changed. It runs with the rest of the suite (CI included);
LLAMAHERD_IMAGE_TEST=0 leaves it out:

    LLAMAHERD_IMAGE_TEST=0 scripts/test          everything but this
    scripts/test tests/deploy/test_image.py      this alone
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from llamaherd import __version__
from tests.conftest import free_port, pid_alive, wait_until_dead
from tests.deploy.manifests import ROOT

IMAGE = "localhost/llamaherd:test"
KEY = "image-test-key-0123456789abcdef"
USER = "10001:10001"
BUILD_TIMEOUT_S = 1800

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 300)


def _prerequisites() -> None:
    if os.environ.get("LLAMAHERD_IMAGE_TEST") == "0":
        pytest.skip("LLAMAHERD_IMAGE_TEST=0 leaves out the build of the container image")
    if os.geteuid() != 0:
        pytest.skip(
            "the image test runs the image in a chroot, which needs root: run it as root "
            "(CI does), or set LLAMAHERD_IMAGE_TEST=0 to leave it out"
        )
    missing = [
        tool for tool in ("podman", "mmdebstrap", "unshare", "chroot") if not shutil.which(tool)
    ]
    if missing:
        pytest.fail(
            f"the image test needs {', '.join(missing)}: scripts/install --tests installs "
            "podman and mmdebstrap (LLAMAHERD_IMAGE_TEST=0 leaves the test out)"
        )


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


@dataclass(frozen=True)
class Image:
    root: Path  # its file system, exported
    config: dict[str, Any]  # podman image inspect's Config
    healthcheck: dict[str, Any]  # and its Healthcheck

    def env(self, **extra: str) -> list[str]:
        return [*self.config["Env"], *(f"{k}={v}" for k, v in extra.items())]

    def argv(self, *command: str, **env: str) -> list[str]:
        """`command` in the image's file system, as its user, with the image's environment."""
        return [
            "chroot",
            f"--userspec={self.config['User']}",
            str(self.root),
            "/usr/bin/env",
            "-i",
            "HOME=/var/lib/llamaherd",
            *self.env(**env),
            *command,
        ]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    _prerequisites()
    started = time.monotonic()
    build = _run(
        [str(ROOT / "scripts" / "build-image"), "--local-base"],
        env={**os.environ, "IMAGE": IMAGE},
        cwd=ROOT,
        timeout=BUILD_TIMEOUT_S,
    )
    assert build.returncode == 0, build.stderr[-6000:]
    assert build.stdout.splitlines()[-1] == IMAGE
    print(f"scripts/build-image: {time.monotonic() - started:.0f} s")
    inspect = _run(["podman", "image", "inspect", IMAGE])
    assert inspect.returncode == 0, inspect.stderr
    inspected = json.loads(inspect.stdout)[0]

    root = tmp_path_factory.mktemp("image") / "root"
    root.mkdir()
    created = _run(["podman", "create", "--health-cmd", "none", IMAGE])
    assert created.returncode == 0, created.stderr
    container = created.stdout.strip().splitlines()[-1]
    try:
        with subprocess.Popen(["podman", "export", container], stdout=subprocess.PIPE) as export:
            untar = _run(["tar", "-x", "-C", str(root)], stdin=export.stdout)
        assert export.returncode == 0 and untar.returncode == 0, untar.stderr
    finally:
        _run(["podman", "rm", container])
    try:
        yield Image(root, inspected["Config"], inspected["Healthcheck"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_image_is_configured_as_the_containerfile_says(image: Image) -> None:
    config = image.config
    assert config["User"] == USER
    assert "3000/tcp" in config["ExposedPorts"]
    assert set(config["Volumes"]) == {"/models", "/var/lib/llamaherd"}
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert config["Cmd"] == ["llamaherd", "serve", "--config", "/etc/llamaherd/config.json"]
    assert image.healthcheck["Test"][0] == "CMD"
    assert image.healthcheck["Timeout"] == 5 * 10**9
    assert json.loads((image.root / "etc/llamaherd/config.json").read_text())["app_port"] == 3000


def test_the_images_llamaherd_and_llama_server_run_as_its_user(image: Image) -> None:
    llamaherd = _run(image.argv("llamaherd", "--version"))
    assert llamaherd.returncode == 0, llamaherd.stderr
    assert llamaherd.stdout.strip() == f"llamaherd {__version__}"
    assert (image.root / "opt/llamaherd/bin/llamaherd").is_file()
    server = _run(image.argv("llama-server", "--version"))
    assert server.returncode == 0, server.stderr
    assert "version:" in server.stdout + server.stderr
    # On PATH, where llamaherd finds it.
    which = _run(image.argv("python3", "-c", "import shutil; print(shutil.which('llama-server'))"))
    assert which.stdout.strip() == "/usr/local/bin/llama-server"
    whoami = _run(image.argv("python3", "-c", "import os; print(os.getuid(), os.getgid())"))
    assert whoami.stdout.split() == ["10001", "10001"]


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_the_image_serves_a_model_with_its_own_llama_server_and_stops_on_sigterm(
    image: Image, tmp_path: Path
) -> None:
    # A demo model in /models, written by the image's own llamaherd.
    model = _run(
        [
            "chroot",
            str(image.root),
            "/opt/llamaherd/bin/llamaherd",
            "demo-model",
            "/models/demo.gguf",
        ]
    )
    assert model.returncode == 0, model.stderr
    port = free_port()
    # The image's command (tini, then llamaherd serve with the image's config), with a key (the
    # config listens on 0.0.0.0) and on a free port of this machine.
    command = [*image.config["Entrypoint"], *image.config["Cmd"]]
    serve = image.argv(*command, "--port", str(port), LLAMAHERD_API_KEY=KEY)
    script = f'mount -t proc proc "{image.root}/proc" && exec "$@"'
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *serve],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        healthy = _run(
            image.argv(*_healthcheck(image), LLAMAHERD_HEALTHCHECK_URL=f"{base}/healthz")
        )
        assert healthy.returncode == 0, healthy.stderr

        auth = {"Authorization": f"Bearer {KEY}"}
        assert httpx.get(f"{base}/api/status", timeout=5).status_code == 401
        answer = httpx.post(
            f"{base}/v1/chat/completions",
            headers=auth,
            json={
                "model": "demo",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 8,
            },
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "demo"
        assert answer.json()["usage"]["completion_tokens"] > 0
        status = httpx.get(f"{base}/api/status", headers=auth, timeout=5).json()
        assert status["status"] == "ready"
        server = psutil.Process(status["pid"])
        assert server.exe() == str(image.root / "usr/local/bin/llama-server")
        assert server.uids().real == 10001

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()
        assert wait_until_dead(status["pid"])
        stopped = _run(
            image.argv(*_healthcheck(image), LLAMAHERD_HEALTHCHECK_URL=f"{base}/healthz")
        )
        assert stopped.returncode != 0
    finally:
        leftovers = _children(process.pid)
        if process.poll() is None:
            process.kill()
        for child in leftovers:
            if pid_alive(child.pid):
                child.kill()
        process.wait(timeout=10)
        log.close()


def _healthcheck(image: Image) -> list[str]:
    test: list[str] = image.healthcheck["Test"]
    assert test[0] == "CMD"
    return test[1:]
