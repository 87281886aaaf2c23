"""docker-daemon: images go into the Engine with ``docker load`` and come out with ``docker save``,
keeping their diff IDs; a missing image or an absent Engine is one clear error."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerkit import mediatypes as mt
from layerkit.errors import DaemonUnavailableError, ImageNotFoundError
from layerkit.ops.copy import copy_image
from layerkit.sources import daemon
from layerkit.sources.oci import open_image as open_oci

pytestmark = pytest.mark.docker

NAME = "layerkit-test-daemon/alpine:rt"


@pytest.fixture(scope="module")
def loaded(docker_client: Any, alpine_image_oci: Path) -> Iterator[str]:
    with daemon.DaemonSink(NAME) as sink:
        copy_image(open_oci(alpine_image_oci, "3.20"), sink)
    yield NAME
    docker_client.images.remove(NAME, force=True)


def test_write_then_read_keeps_diff_ids(loaded: str, alpine_image_oci: Path, docker_client: Any,
                                        docker_cli: str) -> None:
    source = open_oci(alpine_image_oci, "3.20")
    assert docker_client.images.get(loaded).attrs["RootFS"]["Layers"] == list(source.config.diff_ids)
    run = subprocess.run([docker_cli, "run", "--rm", "--network", "none", loaded, "/bin/sh", "-c", "echo ok"],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.stdout == "ok\n", run.stderr

    image = daemon.open_image(loaded)
    assert image.reference == f"docker-daemon:{loaded}"
    assert image.config.diff_ids == source.config.diff_ids
    assert image.config.config["Cmd"] == ["/bin/sh"]
    assert [layer.media_type for layer in image.layers] == [mt.DOCKER_LAYER_UNCOMPRESSED]
    with image.layers[0].open_tar() as f:  # diff ID verified at EOF
        while f.read(1 << 20):
            pass

    by_id = daemon.open_image(docker_client.images.get(loaded).id)  # an image ID works too
    assert by_id.config.diff_ids == source.config.diff_ids


def test_zstd_layers_are_recompressed_for_an_engine_without_zstd(tmp_path: Path, loaded: str,
                                                                 alpine_image_oci: Path,
                                                                 docker_client: Any) -> None:
    from layerkit.sources.oci import OCILayoutSink

    with OCILayoutSink(tmp_path / "zstd", "z") as sink:
        copy_image(open_oci(alpine_image_oci, "3.20"), sink, compression="zstd")
    zstd_image = open_oci(tmp_path / "zstd", "z")
    assert zstd_image.layers[0].media_type == mt.OCI_LAYER_ZSTD
    name = "layerkit-test-daemon/alpine:from-zstd"
    sink = daemon.DaemonSink(name)
    if mt.Compression.ZSTD in sink.layer_compressions:
        sink.abort()
        pytest.skip("this Engine loads zstd layers itself (23+); the fallback is for 20.10")
    try:
        with sink:
            copy_image(zstd_image, sink)  # no compression asked: zstd becomes gzip for this Engine
        assert docker_client.images.get(name).attrs["RootFS"]["Layers"] == list(zstd_image.config.diff_ids)
    finally:
        docker_client.images.remove(name, force=True)


def test_missing_image_is_image_not_found(docker_client: Any) -> None:
    with pytest.raises(ImageNotFoundError, match=r"docker-daemon:layerkit-test-daemon/absent:1: no such image"):
        daemon.open_image("layerkit-test-daemon/absent:1")


def test_engine_down_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    assert daemon.daemon_available() is False
    message = r"cannot reach the Docker Engine at unix:///nonexistent \(no socket there\): start dockerd or set DOCKER_HOST"
    with pytest.raises(DaemonUnavailableError, match=message):
        daemon.open_image("alpine:3.20")
    with pytest.raises(DaemonUnavailableError, match=message):
        daemon.DaemonSink("alpine:3.20")
