"""transport: one reference string → an Image or a sink, for every transport; bare names resolve
local store → Docker Engine → registry and say which answered."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerkit.errors import ImageNotFoundError, InvalidReferenceError, ManifestError
from layerkit.ops.copy import copy_image
from layerkit.sources.archive import ArchiveSink
from layerkit.sources.daemon import DaemonSink
from layerkit.sources.oci import OCILayoutSink
from layerkit.sources.registry import RegistrySink
from layerkit.transport import open_image, open_sink, resolved_from

NAME = "layerkit-test-transport/bare:1"


def _copy(src: str, dst: str) -> None:
    sink = open_sink(dst)
    copy_image(open_image(src), sink)
    sink.close()


@pytest.fixture(scope="module")
def in_daemon(docker_client: Any, alpine_old_image_oci: Path) -> Iterator[str]:
    """Alpine 3.19 in the Engine under NAME (the store gets 3.20 under the same name)."""
    _copy(f"oci:{alpine_old_image_oci}:3.19", f"docker-daemon:{NAME}")
    yield NAME
    docker_client.images.remove(NAME, force=True)


@pytest.mark.docker
def test_bare_name_prefers_the_store_then_the_engine(layerkit_home: Path, in_daemon: str,
                                                     alpine_image_oci: Path, alpine_old_image_oci: Path) -> None:
    from_engine = open_image(in_daemon)
    assert resolved_from(from_engine) == "docker-daemon"
    assert from_engine.config.diff_ids == open_image(f"oci:{alpine_old_image_oci}:3.19").config.diff_ids

    _copy(f"oci:{alpine_image_oci}:3.20", in_daemon)  # a bare destination is a store tag
    from_store = open_image(in_daemon)
    assert resolved_from(from_store) == "store"
    assert from_store.digest == open_image(f"oci:{alpine_image_oci}:3.20").digest
    assert resolved_from(open_image(f"store:{in_daemon}")) == "store"


def test_bare_name_found_nowhere_lists_what_was_tried(layerkit_home: Path) -> None:
    # a host-qualified name on a closed loopback port: the registry step fails fast and offline
    with pytest.raises(ImageNotFoundError) as exc:
        open_image("127.0.0.1:1/nothing/here:1")
    message = str(exc.value)
    assert message.startswith("image '127.0.0.1:1/nothing/here:1' not found; tried local store: no such tag; ")
    assert "Docker Engine: " in message and "registry 127.0.0.1:1: " in message


def test_every_transport_reads(tmp_path: Path, layerkit_home: Path, alpine_image_oci: Path, registry: str) -> None:
    oci = open_image(f"oci:{alpine_image_oci}:3.20")
    assert resolved_from(oci) == "oci"

    with open_sink(f"docker-archive:{tmp_path / 'a.tar'}:demo:1") as sink:
        copy_image(oci, sink)
    assert open_image(f"docker-archive:{tmp_path / 'a.tar'}").digest == oci.digest
    assert open_image(f"docker-archive:{tmp_path / 'a.tar'}:@0").digest == oci.digest
    with pytest.raises(ManifestError, match="is a linux/amd64 image, not linux/arm64"):
        open_image(f"docker-archive:{tmp_path / 'a.tar'}", platform="linux/arm64")

    sink = open_sink(f"{registry}/transport/alpine:3.20")  # host-qualified bare name: still the store
    assert isinstance(sink, OCILayoutSink)
    sink.close()
    sink = open_sink(f"docker://{registry}/transport/alpine:3.20")
    copy_image(oci, sink)
    sink.close()
    pulled = open_image(f"docker://{registry}/transport/alpine:3.20")
    assert pulled.digest == oci.digest and resolved_from(pulled) == "docker"
    bare = open_image(f"{registry}/transport/alpine:3.20")  # not in the store: the registry answers
    assert resolved_from(bare) in (f"registry {registry}", "docker-daemon")  # an Engine may have it too

    with tarfile.open(tmp_path / "layout.tar", "w") as tar:  # an oci-archive is an OCI layout in a tar
        tar.add(alpine_image_oci, arcname=".")
    assert open_image(f"oci-archive:{tmp_path / 'layout.tar'}:3.20").digest == oci.digest


def test_open_sink_dispatch(tmp_path: Path, layerkit_home: Path) -> None:
    assert isinstance(open_sink(f"docker-archive:{tmp_path / 'x.tar'}:x:1"), ArchiveSink)
    registry_sink = open_sink("docker://127.0.0.1:5999/x:1")
    assert isinstance(registry_sink, RegistrySink)
    registry_sink.close()
    store_sink = open_sink("store:x:1")
    assert isinstance(store_sink, OCILayoutSink) and store_sink.tag == "x:1"
    store_sink.close()
    oci_sink = open_sink(f"oci:{tmp_path / 'layout'}:1")
    assert oci_sink.default_format == "oci"  # skopeo and umoci only see OCI manifests there
    oci_sink.close()

    with pytest.raises(InvalidReferenceError, match="read-only"):
        open_sink(f"oci-archive:{tmp_path / 'x.tar'}")
    with pytest.raises(InvalidReferenceError, match="@N selects an image to read"):
        open_sink(f"docker-archive:{tmp_path / 'x.tar'}:@0")
    with pytest.raises(InvalidReferenceError, match="unknown image format 'v1'"):
        open_sink(f"oci:{tmp_path / 'layout'}", format="v1")


@pytest.mark.docker
def test_daemon_sink_needs_a_tag(docker_client: Any) -> None:
    sink = open_sink(f"docker-daemon:{NAME}")
    assert isinstance(sink, DaemonSink)
    sink.abort()
    with pytest.raises(InvalidReferenceError, match="needs a name"):
        open_sink("docker-daemon:sha256:" + "a" * 64)


def test_unknown_references_and_tags_are_clear(alpine_image_oci: Path) -> None:
    with pytest.raises(InvalidReferenceError):
        open_image("Not A Reference")
    with pytest.raises(ImageNotFoundError, match=r"'9\.99' not found.*tags: 3\.20"):
        open_image(f"oci:{alpine_image_oci}:9.99")
    with pytest.raises(ImageNotFoundError, match="no such file"):
        open_image("docker-archive:/nonexistent/image.tar")
