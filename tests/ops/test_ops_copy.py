"""copy: any transport to any transport, keeping diff IDs always and digests where the formats
allow; format conversion and recompression; the copy/pull/push CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from layerkit import mediatypes as mt
from layerkit.errors import DigestMismatchError, ImageNotFoundError
from layerkit.image import Image
from layerkit.ops.copy import copy_image
from layerkit.spec import Descriptor
from layerkit.transport import open_image, open_sink


def copy(src: str, dst: str, **options: Any) -> Descriptor:
    sink = open_sink(dst)
    try:
        desc = copy_image(open_image(src), sink, **options)
    except BaseException:
        getattr(sink, "abort", sink.close)()
        raise
    sink.close()
    return desc


def drain(image: Image) -> None:
    for layer in image.layers:
        with layer.open_tar() as f:
            while f.read(1 << 20):
                pass


def test_round_trip_through_every_transport_keeps_diff_ids(tmp_path: Path, layerkit_home: Path, registry: str,
                                                           alpine_image_oci: Path) -> None:
    start = open_image(f"oci:{alpine_image_oci}:3.20")
    hops = [
        "store:roundtrip:1",
        f"oci:{tmp_path / 'layout'}:1",
        f"docker://{registry}/copy/roundtrip:1",
        f"docker-archive:{tmp_path / 'image.tar'}:roundtrip:1",
        "store:roundtrip:2",
    ]
    src = f"oci:{alpine_image_oci}:3.20"
    for dst in hops:
        desc = copy(src, dst)
        image = open_image(dst)
        assert image.digest == desc.digest == start.digest  # every hop keeps the OCI manifest as is
        assert image.config.diff_ids == start.config.diff_ids
        src = dst
    drain(open_image("store:roundtrip:2"))


def test_docker_archive_layers_are_gzipped_for_stores_and_kept_for_archives(
    tmp_path: Path, layerkit_home: Path, alpine_image_oci: Path
) -> None:
    plain = f"docker-archive:{tmp_path / 'plain.tar'}:plain:1"
    copy(f"oci:{alpine_image_oci}:3.20", plain, compression="none")
    source = open_image(plain)
    assert source.layers[0].media_type == mt.OCI_LAYER

    copy(plain, f"docker-archive:{tmp_path / 'again.tar'}")  # archives keep what `docker save` has
    assert open_image(f"docker-archive:{tmp_path / 'again.tar'}").digest == source.digest

    copy(plain, "store:gzipped:1")  # a store gets compressed layers, as skopeo does
    stored = open_image("store:gzipped:1")
    assert stored.layers[0].media_type == mt.OCI_LAYER_GZIP
    assert stored.config.diff_ids == source.config.diff_ids
    assert stored.raw_config == source.raw_config  # recompression never touches the config
    drain(stored)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_recompression_keeps_diff_ids_and_peers_accept_it(tmp_path: Path, alpine_image_oci: Path,
                                                          compression: str) -> None:
    source = open_image(f"oci:{alpine_image_oci}:3.20")
    layout = tmp_path / "layout"
    progress: list[tuple[str, int, int]] = []
    copy(f"oci:{alpine_image_oci}:3.20", f"oci:{layout}:out", compression=compression,
         progress=lambda d, done, total: progress.append((d.digest, done, total)))
    image = open_image(f"oci:{layout}:out")
    assert image.layers[0].media_type == mt.layer_media_type(mt.Compression(compression))
    assert image.config.diff_ids == source.config.diff_ids
    assert image.raw_config == source.raw_config
    drain(image)
    assert (source.layers[0].digest, source.layers[0].size, source.layers[0].size) in progress

    inspect = subprocess.run(["skopeo", "inspect", f"oci:{layout}:out"], check=False, capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Layers"] == [str(layer.digest) for layer in image.layers]
    if compression != "zstd":  # Debian's umoci 0.4.7 predates zstd support
        stat = subprocess.run(["umoci", "stat", "--image", f"{layout}:out"], check=False, capture_output=True, text=True)
        assert stat.returncode == 0, stat.stderr


def test_format_conversion_rewrites_only_the_manifest(tmp_path: Path, alpine_image_oci: Path) -> None:
    source = open_image(f"oci:{alpine_image_oci}:3.20")
    archive = f"docker-archive:{tmp_path / 'docker.tar'}:fmt:1"
    copy(f"oci:{alpine_image_oci}:3.20", archive, format="docker")
    as_docker = open_image(archive)
    assert as_docker.manifest.media_type == mt.DOCKER_MANIFEST
    assert as_docker.manifest.config.media_type == mt.DOCKER_CONFIG
    assert [layer.media_type for layer in as_docker.layers] == [mt.DOCKER_LAYER_GZIP]
    assert [layer.digest for layer in as_docker.layers] == [layer.digest for layer in source.layers]
    assert as_docker.manifest.config.digest == source.manifest.config.digest

    copy(archive, f"oci:{tmp_path / 'layout'}:back", format="oci")
    back = open_image(f"oci:{tmp_path / 'layout'}:back")
    # OCI → Docker → OCI: the same manifest document (rendered canonically, so new bytes)
    assert json.loads(back.manifest.to_bytes()) == json.loads(source.manifest.to_bytes())
    inspect = subprocess.run(["skopeo", "inspect", f"oci:{tmp_path / 'layout'}:back"], check=False, capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    stat = subprocess.run(["umoci", "stat", "--image", f"{tmp_path / 'layout'}:back"], check=False, capture_output=True, text=True)
    assert stat.returncode == 0, stat.stderr


def test_second_copy_skips_blobs_the_sink_has(tmp_path: Path, alpine_image_oci: Path) -> None:
    src = f"oci:{alpine_image_oci}:3.20"
    copy(src, f"oci:{tmp_path / 'layout'}:a")
    events: list[tuple[int, int]] = []
    copy(src, f"oci:{tmp_path / 'layout'}:b", progress=lambda d, done, total: events.append((done, total)))
    assert events and all(done == total for done, total in events)  # reported done, nothing streamed


def test_a_corrupt_source_blob_stops_the_copy_before_the_tag(tmp_path: Path, alpine_image_oci: Path) -> None:
    import shutil

    layout = tmp_path / "corrupt"
    shutil.copytree(alpine_image_oci, layout)
    layer = open_image(f"oci:{layout}:3.20").layers[0]
    blob = layout / "blobs" / "sha256" / layer.digest.hex
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    for compression in (None, "zstd"):  # a plain copy and a recompression both verify
        target = tmp_path / f"out-{compression}.tar"
        with pytest.raises(DigestMismatchError, match=layer.digest.hex):
            copy(f"oci:{layout}:3.20", f"docker-archive:{target}:x:1", compression=compression)
        assert not target.exists()


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_copy_pull_push(tmp_path: Path, layerkit_home: Path, registry: str, alpine_image_oci: Path,
                            run_cli: Any) -> None:
    digest = str(open_image(f"oci:{alpine_image_oci}:3.20").digest)
    result = run_cli("copy", f"oci:{alpine_image_oci}:3.20", f"docker://{registry}/cli/alpine:3.20", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == {
        "source": f"oci:{alpine_image_oci}:3.20",
        "resolved_from": "oci",
        "destination": f"docker://{registry}/cli/alpine:3.20",
        "digest": digest,
        "media_type": mt.OCI_MANIFEST,
        "size": doc["size"],
    }

    result = run_cli("pull", f"{registry}/cli/alpine:3.20")  # bare REF: the registry, like docker pull
    assert result.exit_code == 0, result.output
    assert f"copied docker://{registry}/cli/alpine:3.20 → store:{registry}/cli/alpine:3.20" in result.stdout
    assert open_image(f"store:{registry}/cli/alpine:3.20").digest == digest

    result = run_cli("copy", f"{registry}/cli/alpine:3.20", f"docker-archive:{tmp_path / 'a.tar'}")
    assert result.exit_code == 0, result.output
    assert f"{registry}/cli/alpine:3.20: found in store" in result.stderr  # says which source answered

    result = run_cli("push", f"{registry}/cli/alpine:3.20", f"{registry}/cli/pushed:1", "--format", "docker")
    assert result.exit_code == 0, result.output
    pushed = open_image(f"docker://{registry}/cli/pushed:1")
    assert pushed.manifest.media_type == mt.DOCKER_MANIFEST
    assert pushed.config.diff_ids == open_image(f"oci:{alpine_image_oci}:3.20").config.diff_ids


def test_cli_errors_are_one_line_with_exit_1(tmp_path: Path, layerkit_home: Path, run_cli: Any,
                                             alpine_image_oci: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = {
        ("copy", f"oci:{alpine_image_oci}:nope", "x:1"): "'nope' not found",
        ("copy", "127.0.0.1:1/none:1", "x:1"): "not found; tried local store",
        ("copy", "not a ref", "x:1"): "invalid reference",
        ("pull", f"oci:{alpine_image_oci}:3.20"): "carries no image name",
    }
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")  # the Engine is down
    cases[("copy", "docker-daemon:alpine:3.20", f"oci:{tmp_path / 'x'}")] = (
        "cannot reach the Docker Engine at unix:///nonexistent (no socket there): start dockerd or set DOCKER_HOST"
    )
    for args, message in cases.items():
        result = run_cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: ") and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    with pytest.raises(ImageNotFoundError):
        open_image("store:x:1")  # nothing was tagged by the failures


# --- multi-platform ----------------------------------------------------------------------------------


@pytest.fixture
def two_platform_layout(tmp_path: Path, alpine_image_oci: Path, alpine_old_image_oci: Path) -> str:
    """An OCI layout tagged ``multi``: an index of Alpine 3.20 (linux/amd64) and 3.19 (labelled linux/arm64)."""
    from layerkit.spec import Index, Platform
    from layerkit.store import OCILayout

    layout = tmp_path / "multi"
    entries = []
    for src, platform in ((f"oci:{alpine_image_oci}:3.20", "linux/amd64"),
                          (f"oci:{alpine_old_image_oci}:3.19", "linux/arm64")):
        desc = copy(src, f"oci:{layout}:{platform.replace('/', '-')}")
        entries.append(Descriptor(desc.media_type, desc.digest, desc.size, platform=Platform.parse(platform)))
    OCILayout(layout).put_manifest(Index(mt.OCI_INDEX, tuple(entries)), "multi")
    return f"oci:{layout}:multi"


def test_all_platforms_copy_through_a_registry_keeps_the_index(
    tmp_path: Path, registry: str, two_platform_layout: str, alpine_old_image_oci: Path, run_cli: Any
) -> None:
    from layerkit.transport import open_index

    index, _ = open_index(two_platform_layout)
    assert index is not None
    dst = f"docker://{registry}/copy/multi:both"
    result = run_cli("copy", "--all-platforms", two_platform_layout, dst, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["digest"] == index.digest()  # children unchanged: same index bytes
    arm = open_image(dst, platform="linux/arm64")
    assert arm.config.diff_ids == open_image(f"oci:{alpine_old_image_oci}:3.19").config.diff_ids

    result = run_cli("copy", "--all-platforms", dst, f"oci:{tmp_path / 'back'}:multi")
    assert result.exit_code == 0, result.output
    back, images = open_index(f"oci:{tmp_path / 'back'}:multi")
    assert back is not None and back.digest() == index.digest() and len(images) == 2

    result = run_cli("copy", "--all-platforms", "--format", "docker", dst, f"docker://{registry}/copy/multi:list")
    assert result.exit_code == 0, result.output
    as_list, children = open_index(f"docker://{registry}/copy/multi:list")
    assert as_list is not None and as_list.media_type == mt.DOCKER_MANIFEST_LIST
    assert [str(d.platform) for d in as_list.manifests] == ["linux/amd64", "linux/arm64"]
    assert all(child.manifest.media_type == mt.DOCKER_MANIFEST for child in children)

    result = run_cli("copy", "--all-platforms", dst, f"docker-archive:{tmp_path / 'x.tar'}")
    assert result.exit_code == 1 and "holds one image per name" in result.stderr
