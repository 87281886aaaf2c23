"""docker-archive: reading what Engine 20.10's ``docker save`` writes, reading and writing the hybrid
OCI + manifest.json layout, and what a real ``docker load`` makes of layerkit's archives."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerkit import mediatypes as mt
from layerkit.errors import DigestMismatchError, ImageNotFoundError, SourceError
from layerkit.ops.copy import copy_image
from layerkit.sources import archive
from layerkit.sources.oci import open_image as open_oci
from layerkit.spec import Descriptor

pytestmark = pytest.mark.docker

PREFIX = "layerkit-test-archive"


def _drain_layers(image: Any) -> None:
    """Read every layer to EOF: the compressed digest and the diff ID are checked on the way."""
    for layer in image.layers:
        with layer.open_tar() as f:
            while f.read(1 << 20):
                pass


@pytest.fixture(scope="module")
def saved_by_engine(tmp_path_factory: pytest.TempPathFactory, docker_client: Any, docker_cli: str,
                    alpine_image_oci: Path) -> Iterator[tuple[Path, dict[str, list[str]]]]:
    """A real `docker save` of two images sharing their base layer (so the Engine writes a symlink):
    Alpine, and Alpine plus one committed layer. Yields the tar and each image's RootFS.Layers."""
    base, child = f"{PREFIX}/base:1", f"{PREFIX}/child:1"
    with archive.ArchiveSink(tmp_path_factory.mktemp("load") / "base.tar", [base]) as sink:
        copy_image(open_oci(alpine_image_oci, "3.20"), sink)
    subprocess.run([docker_cli, "load", "-i", str(sink.path)], check=True, capture_output=True)
    container = docker_client.containers.create(base, ["/bin/sh", "-c", "echo hi > /x && rm /etc/motd"],
                                                network_mode="none")
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0
        container.commit(repository=f"{PREFIX}/child", tag="1")
    finally:
        container.remove(force=True)
    out = tmp_path_factory.mktemp("saved") / "two.tar"
    subprocess.run([docker_cli, "save", "-o", str(out), child, base], check=True, capture_output=True)
    rootfs = {n: docker_client.images.get(n).attrs["RootFS"]["Layers"] for n in (base, child)}
    yield out, rootfs
    for name in (child, base):
        docker_client.images.remove(name, force=True)


def test_reads_a_legacy_docker_save_without_extracting_it(saved_by_engine: tuple[Path, dict[str, list[str]]]) -> None:
    path, rootfs = saved_by_engine
    with tarfile.open(path) as tar:
        assert "manifest.json" in tar.getnames() and "index.json" not in tar.getnames()  # the 20.10 layout
        assert any(m.issym() for m in tar.getmembers())  # the shared base layer is a symlink

    image = archive.open_image(path, f"{PREFIX}/child:1")
    assert image.manifest.media_type == mt.DOCKER_MANIFEST  # synthesized: `docker save` keeps none
    assert list(image.config.diff_ids) == rootfs[f"{PREFIX}/child:1"]
    for layer in image.layers:
        # uncompressed layer tars: the blob digest *is* the diff ID
        assert layer.media_type == mt.DOCKER_LAYER_UNCOMPRESSED
        assert layer.digest == layer.diff_id
    _drain_layers(image)

    base = archive.open_image(path, f"docker.io/{PREFIX}/base:1")  # names compare normalized
    assert list(base.config.diff_ids) == rootfs[f"{PREFIX}/base:1"]
    _drain_layers(base)  # its layer.tar is the symlink into the child's directory


def test_multi_image_archive_needs_a_choice(saved_by_engine: tuple[Path, dict[str, list[str]]]) -> None:
    path, _ = saved_by_engine
    position = {e.names[0]: e.position for e in archive.read_archive(path).entries}  # the Engine's order varies
    child, base = position[f"{PREFIX}/child:1"], position[f"{PREFIX}/base:1"]
    with pytest.raises(ImageNotFoundError) as exc:
        archive.open_image(path)
    assert f"@{child}: {PREFIX}/child:1" in str(exc.value) and f"@{base}: {PREFIX}/base:1" in str(exc.value)
    assert "FILE:NAME:TAG or FILE:@N" in str(exc.value)

    with pytest.raises(ImageNotFoundError, match=f"no image named 'other:1'.*{PREFIX}/base:1"):
        archive.open_image(path, "other:1")
    with pytest.raises(ImageNotFoundError, match="no image @7; the archive holds 2"):
        archive.open_image(path, index=7)
    by_position = archive.open_image(path, index=base)
    assert by_position.config.diff_ids == archive.open_image(path, f"{PREFIX}/base:1").config.diff_ids


def test_hybrid_archive_round_trip_keeps_the_manifest(tmp_path: Path, alpine_image_oci: Path) -> None:
    source = open_oci(alpine_image_oci, "3.20")
    target = tmp_path / "hybrid.tar"
    with archive.ArchiveSink(target, ["alpine:3.20"]) as sink:
        copy_image(source, sink)

    with tarfile.open(target) as tar:
        names = tar.getnames()
        manifest_json = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        index_json = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= set(names)
    assert manifest_json == [{
        "Config": f"blobs/sha256/{source.manifest.config.digest.hex}",
        "RepoTags": ["alpine:3.20"],
        "Layers": [f"blobs/sha256/{source.layers[0].digest.hex}"],
    }]
    assert index_json["manifests"][0]["annotations"] == {
        "io.containerd.image.name": "docker.io/library/alpine:3.20",
        "org.opencontainers.image.ref.name": "3.20",
    }

    back = archive.open_image(target)
    assert back.digest == source.digest  # the OCI manifest in the archive is used byte for byte
    assert back.layers[0].media_type == mt.OCI_LAYER_GZIP
    _drain_layers(back)


def test_layerkit_archive_loads_and_runs_in_engine_20_10(tmp_path: Path, alpine_image_oci: Path,
                                                         docker_client: Any, docker_cli: str) -> None:
    name = f"{PREFIX}/loaded:gzip"
    target = tmp_path / "load.tar"
    with archive.ArchiveSink(target, [name]) as sink:
        copy_image(open_oci(alpine_image_oci, "3.20"), sink, format="docker")  # gzip layers, as pulled
    try:
        load = subprocess.run([docker_cli, "load", "-i", str(target)], check=False, capture_output=True, text=True)
        assert load.returncode == 0, load.stderr
        assert f"Loaded image: {name}" in load.stdout
        run = subprocess.run([docker_cli, "run", "--rm", "--network", "none", name, "/bin/sh", "-c", "echo ok"],
                             check=False, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout == "ok\n"
    finally:
        docker_client.images.remove(name, force=True)


def test_one_archive_holds_several_images_and_shares_blobs(tmp_path: Path, alpine_image_oci: Path,
                                                           alpine_old_image_oci: Path) -> None:
    new, old = open_oci(alpine_image_oci, "3.20"), open_oci(alpine_old_image_oci, "3.19")
    target = tmp_path / "many.tar"
    with archive.ArchiveSink(target, ["alpine:3.20"]) as sink:
        copy_image(new, sink)
        sink.put_image(new, names=["alpine:latest"])  # the same image again: one entry, two names
        copy_image(old, sink)  # shares no blob with 3.20, but is written under the default names...
        sink.put_image(old, names=["alpine:3.19"])  # ...and this adds its own
    with tarfile.open(target) as tar:
        blob_names = [n for n in tar.getnames() if n.startswith("blobs/sha256/")]
    assert len(blob_names) == len(set(blob_names))  # every blob written once

    src = archive.read_archive(target)
    assert [e.names for e in src.entries] == [["alpine:3.20", "alpine:latest"], ["alpine:3.20", "alpine:3.19"]]
    assert archive.open_image(target, "alpine:3.19").digest == old.digest
    assert archive.open_image(target, "alpine").digest == new.digest
    assert archive.open_image(target, index=1).digest == old.digest


def test_sink_writes_atomically_and_checks_what_it_is_given(tmp_path: Path, alpine_image_oci: Path) -> None:
    target = tmp_path / "out.tar"
    target.write_bytes(b"previous content")
    layer = open_oci(alpine_image_oci, "3.20").layers[0].descriptor
    lying = Descriptor(layer.media_type, layer.digest, 5)
    with pytest.raises(DigestMismatchError), archive.ArchiveSink(target, ["x:1"]) as sink:
        sink.put_blob(lying, io.BytesIO(b"12345"))
    assert target.read_bytes() == b"previous content"  # untouched
    assert list(tmp_path.iterdir()) == [target]  # and no temp file left behind


def test_corrupt_layer_in_an_archive_is_detected(tmp_path: Path, saved_by_engine: tuple[Path, Any]) -> None:
    path, _ = saved_by_engine
    with tarfile.open(path) as tar:
        entries = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        top = next(e for e in entries if e["RepoTags"] == [f"{PREFIX}/child:1"])["Layers"][-1]
        offset = tar.getmember(top).offset_data
    data = bytearray(path.read_bytes())
    data[offset + 600] ^= 0xFF  # inside the committed layer
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="layer 1"):
        _drain_layers(archive.open_image(bad, f"{PREFIX}/child:1"))


def test_compressed_or_missing_archives_get_clear_errors(tmp_path: Path, saved_by_engine: tuple[Path, Any]) -> None:
    path, _ = saved_by_engine
    gz = tmp_path / "two.tar.gz"
    with gzip.open(gz, "wb", compresslevel=1) as f:
        f.write(path.read_bytes())
    with pytest.raises(SourceError, match=r"gzip-compressed.*gunzip -k"):
        archive.open_image(gz)
    with pytest.raises(ImageNotFoundError, match="no such file"):
        archive.open_image(tmp_path / "absent.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(SourceError, match="not a tar archive|no images"):
        archive.open_image(tmp_path / "junk.tar")
