"""The overlay executors' layer for a RUN (native; rootless over fuse-overlayfs) equals what ``docker build`` makes of the same RUN, with
BuildKit and with the classic builder: same entries (path, type, mode, owner, size, content, link
target; whiteout markers compared by what they hide) and the same merged filesystem."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from exec_helpers import docker_layers as saved_layers
from exec_helpers import layer_summary, load_executor, run_step, union_with

from layerkit.store import LocalStore
from layerkit.tarfs.reader import iter_entries, iter_layer
from layerkit.union import Union

pytestmark = pytest.mark.docker

BASE = "lk-exec-alpine:3.20"
SCRIPT = (
    "set -e; echo new > /newfile; echo mod >> /etc/profile; rm /etc/motd; "
    "rm -rf /etc/apk/protected_paths.d && mkdir /etc/apk/protected_paths.d; "
    "rm -rf /etc/opt && touch /etc/opt; rm /etc/shells && mkdir /etc/shells && echo in > /etc/shells/f; "
    "ln -s /newfile /lnk; ln /etc/passwd /hl-to-lower; echo x > /h1 && ln /h1 /h2; "
    "cp /bin/busybox /suid && chmod 4755 /suid; mkfifo /fifo; mkdir -p /d/e && chown 12:34 /d/e; "
    "touch /tmp/t && rm /tmp/t; mkdir /var/cache/x"
)


class _TarLayer:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def open_tar(self) -> Any:
        return io.BytesIO(self.data)


def _merged(union: Any) -> dict[str, tuple[Any, ...]]:
    view = {}
    for node in union.walk():
        e = node.entry
        view[node.path] = (e.type.value if e.type.value != "hardlink" else "file", e.mode, e.uid, e.gid, e.linkname
                           if e.type.value == "symlink" else "")
    return view


@pytest.fixture(scope="module")
def docker_layers(docker_client: Any, docker_cli: str, alpine_image_oci: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Any:
    subprocess.run(["skopeo", "copy", "-q", f"oci:{alpine_image_oci}:3.20", f"docker-daemon:{BASE}"], check=True)
    ctx = tmp_path_factory.mktemp("compare-ctx")
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN {SCRIPT}\n")
    layers = {}
    try:
        for name, buildkit in (("buildkit", "1"), ("classic", "0")):
            tag = f"lk-exec-cmp:{name}"
            env = {**os.environ, "DOCKER_BUILDKIT": buildkit}
            subprocess.run([docker_cli, "build", "-q", "--network=none", "-t", tag, str(ctx)], check=True,
                           capture_output=True, env=env)
            layers[name] = saved_layers(docker_client, tag)[-1]
    finally:
        for ref in ("lk-exec-cmp:buildkit", "lk-exec-cmp:classic", BASE):
            try:
                docker_client.images.remove(ref, force=True)
            except docker.errors.ImageNotFound:  # a build that failed left nothing
                pass
    return layers


@pytest.mark.parametrize("name", ["native", "rootless"])  # rootless: fuse-overlayfs over the snapshots
@pytest.mark.parametrize("builder", ["buildkit", "classic"])
def test_overlay_layer_matches_docker_build(builder: str, name: str, docker_layers: dict[str, bytes],
                                            exec_store: LocalStore, alpine_image: Any) -> None:
    step = run_step(load_executor(name), exec_store, alpine_image, SCRIPT)
    assert step.outcome.exit_code == 0 and step.outcome.layer is not None
    with exec_store.open_blob(step.outcome.layer.digest) as f:
        ours = layer_summary(iter_layer(f))
    theirs = layer_summary(iter_entries(io.BytesIO(docker_layers[builder])))
    assert ours == theirs
    merged_ours = union_with(alpine_image, exec_store, step.outcome.layer)
    merged_theirs = Union([*alpine_image.layers, _TarLayer(docker_layers[builder])])
    assert _merged(merged_ours) == _merged(merged_theirs)
