"""Session fixtures: the real components integration tests talk to, started on loopback.

Every server is started by the tests themselves (a registry per fixture, dockerd when none answers)
and stopped at the end by PID; nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RegistryServer, make_alpine_oci, start_registry, stop_process

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DOCKER_CLI = "/usr/bin/docker"  # the 20.10 client; a newer `docker` earlier on PATH may need buildx


# --- shared data ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (conformance data and Alpine fixtures) is not next to this checkout")
    return SHARED


def _fixture_tgz(version: str) -> Path:
    path = SHARED / "fixtures" / f"alpine-minirootfs-{version}-x86_64.tar.gz"
    if not path.is_file():
        pytest.skip(f"Alpine fixture {path.name} not found in ../shared/fixtures")
    return path


@pytest.fixture(scope="session")
def oci_validate(shared_dir: Path) -> Any:
    """``oci_validate(kind, doc)`` with kind manifest|index|config|layout|descriptor; raises on invalid."""
    from oci_schema import make_validator

    schema_dir = shared_dir / "conformance" / "oci-image-spec-schema"
    if not schema_dir.is_dir():
        pytest.skip("OCI image-spec schemas not found in ../shared/conformance")
    return make_validator(schema_dir)


@pytest.fixture(scope="session")
def alpine_tgz() -> Path:
    return _fixture_tgz("3.20.3")


@pytest.fixture(scope="session")
def alpine_old_tgz() -> Path:
    return _fixture_tgz("3.19.4")


@pytest.fixture(scope="session")
def alpine_image_oci(tmp_path_factory: pytest.TempPathFactory, alpine_tgz: Path) -> Path:
    """OCI layout with tag 3.20: use as ``f"oci:{path}:3.20"``."""
    return make_alpine_oci(tmp_path_factory.mktemp("alpine-oci"), alpine_tgz, "3.20")


@pytest.fixture(scope="session")
def alpine_old_image_oci(tmp_path_factory: pytest.TempPathFactory, alpine_old_tgz: Path) -> Path:
    """OCI layout with tag 3.19: use as ``f"oci:{path}:3.19"``."""
    return make_alpine_oci(tmp_path_factory.mktemp("alpine-old-oci"), alpine_old_tgz, "3.19")


# --- processes -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    proc, server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    stop_process(proc)


@pytest.fixture(scope="session")
def registry(registry_server: RegistryServer) -> str:
    """``127.0.0.1:PORT`` of a registry without auth."""
    return registry_server.host


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with htpasswd (bcrypt) basic auth: ``.host``, ``.user``, ``.password``."""
    user, password = "tester", "s3cret-pass"
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
    ).stdout
    proc, server = start_registry(tmp_path_factory.mktemp("auth-registry"), htpasswd)
    yield RegistryServer(server.host, server.storage, user, password)
    stop_process(proc)


def _docker_answers(client_module: Any) -> Any:
    try:
        client = client_module.from_env(timeout=10)
        client.ping()
        return client
    except (client_module.errors.DockerException, OSError):
        return None


@pytest.fixture(scope="session")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A docker SDK client; starts ``dockerd --iptables=false --bridge=none`` when none answers."""
    import docker

    client = _docker_answers(docker)
    proc = None
    if client is None:
        if os.environ.get("DOCKER_HOST"):
            pytest.fail(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer")
        dockerd = shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            pytest.fail("no Docker Engine answers and dockerd cannot be started (needs docker.io and root)")
        with open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "wb") as log:
            proc = subprocess.Popen([dockerd, "--iptables=false", "--bridge=none"], stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while client is None and time.monotonic() < deadline:
            time.sleep(0.5)
            if os.path.exists("/var/run/docker.sock"):
                client = _docker_answers(docker)
        if client is None:
            stop_process(proc)
            pytest.fail("dockerd did not answer within 60 s")
    yield client
    client.close()
    if proc is not None:
        stop_process(proc)


@pytest.fixture(scope="session")
def docker_cli(docker_client: Any) -> str:
    """Path of the Engine 20.10 client for subprocess use (the daemon is up)."""
    if not os.path.exists(DOCKER_CLI):
        pytest.fail(f"{DOCKER_CLI} missing (apt-get install docker.io)")
    return DOCKER_CLI


# --- layerkit ------------------------------------------------------------------------------------


@pytest.fixture
def layerkit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "layerkit-home"
    home.mkdir()
    monkeypatch.setenv("LAYERKIT_HOME", str(home))
    return home


@pytest.fixture
def opened_layers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The digest of every layer whose tar is opened (``Layer.open_tar``) from now on, in order."""
    from layerkit.image import Layer

    opened: list[str] = []
    open_tar = Layer.open_tar

    def counted(layer: Layer) -> Any:
        opened.append(str(layer.digest))
        return open_tar(layer)

    monkeypatch.setattr(Layer, "open_tar", counted)
    return opened


@pytest.fixture
def run_cli() -> Any:
    """``run_cli(*args, input=None)`` → click Result of the layerkit CLI, in-process."""
    from click.testing import CliRunner

    from layerkit.cli import cli

    def run(*args: str, input: str | bytes | None = None) -> Any:
        return CliRunner().invoke(cli, list(args), input=input, obj={}, catch_exceptions=False)

    return run
