"""Test support shared by fixtures, tests and the benchmark harness: processes on loopback, images
made with plain Python. (A module, not conftest.py, so it imports the same from everywhere.)"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


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


def stop_process(proc: subprocess.Popen[bytes]) -> None:
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
    with open(workdir / "registry.log", "wb") as log:
        proc = subprocess.Popen([exe, "serve", str(workdir / "config.yml")], stdout=log, stderr=log)
    wait_for_port(port)
    return proc, RegistryServer(f"127.0.0.1:{port}", storage)
