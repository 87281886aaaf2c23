"""Session fixtures: the real components integration tests talk to, started on loopback.

Every server is started by the tests themselves (a registry per fixture, dockerd when none answers)
and stopped at the end by PID; nothing is mocked.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

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


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), path.stat().st_size


def _write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return digest, len(data)


def make_alpine_oci(layout: Path, tgz: Path, tag: str) -> Path:
    """An OCI layout holding Alpine as the official image is built (FROM scratch, ADD rootfs, CMD sh),
    made with plain Python so tests of any module can start from it."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layer_digest, layer_size = _sha256_file(tgz)
    shutil.copyfile(tgz, layout / "blobs" / "sha256" / layer_digest[7:])
    h = hashlib.sha256()
    with gzip.open(tgz, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    created = "2024-09-06T12:00:00Z"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]},
        "history": [
            {"created": created, "created_by": f"/bin/sh -c #(nop) ADD file:{tgz.name} in / "},
            {"created": created, "created_by": '/bin/sh -c #(nop)  CMD ["/bin/sh"]', "empty_layer": True},
        ],
    }
    cfg_digest, cfg_size = _write_blob(layout, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
        ],
    }
    man_digest, man_size = _write_blob(layout, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": man_digest,
                "size": man_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return layout


@pytest.fixture(scope="session")
def alpine_image_oci(tmp_path_factory: pytest.TempPathFactory, alpine_tgz: Path) -> Path:
    """OCI layout with tag 3.20: use as ``f"oci:{path}:3.20"``."""
    return make_alpine_oci(tmp_path_factory.mktemp("alpine-oci"), alpine_tgz, "3.20")


@pytest.fixture(scope="session")
def alpine_old_image_oci(tmp_path_factory: pytest.TempPathFactory, alpine_old_tgz: Path) -> Path:
    """OCI layout with tag 3.19: use as ``f"oci:{path}:3.19"``."""
    return make_alpine_oci(tmp_path_factory.mktemp("alpine-old-oci"), alpine_old_tgz, "3.19")


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class RegistryServer:
    host: str
    storage: Path
    user: str = ""
    password: str = ""


def start_registry(workdir: Path, htpasswd: str = "") -> tuple[subprocess.Popen[bytes], RegistryServer]:
    """Debian's docker-registry (CNCF distribution) on a free loopback port, filesystem storage."""
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.fail("docker-registry is not installed (apt-get install docker-registry; .ci/run does this)")
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    auth = ""
    if htpasswd:
        (workdir / "htpasswd").write_text(htpasswd)
        auth = f"auth:\n  htpasswd:\n    realm: basic-realm\n    path: {workdir / 'htpasswd'}\n"
    (workdir / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: layerkit-tests\n"
        + auth
    )
    log = open(workdir / "registry.log", "wb")
    proc = subprocess.Popen([exe, "serve", str(workdir / "config.yml")], stdout=log, stderr=log)
    wait_for_port(port)
    return proc, RegistryServer(f"127.0.0.1:{port}", storage)


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    proc, server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    _stop(proc)


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
    _stop(proc)


def _docker_answers(client_module: Any) -> Any:
    try:
        client = client_module.from_env(timeout=10)
        client.ping()
        return client
    except Exception:
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
        log = open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "wb")
        proc = subprocess.Popen([dockerd, "--iptables=false", "--bridge=none"], stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while client is None and time.monotonic() < deadline:
            time.sleep(0.5)
            if os.path.exists("/var/run/docker.sock"):
                client = _docker_answers(docker)
        if client is None:
            _stop(proc)
            pytest.fail("dockerd did not answer within 60 s")
    yield client
    client.close()
    if proc is not None:
        _stop(proc)


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
def run_cli() -> Any:
    """``run_cli(*args, input=None)`` → click Result of the layerkit CLI, in-process."""
    from click.testing import CliRunner

    from layerkit.cli import cli

    def run(*args: str, input: str | bytes | None = None) -> Any:
        return CliRunner().invoke(cli, list(args), input=input, obj={}, catch_exceptions=False)

    return run
