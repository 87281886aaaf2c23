"""The registry transport against a real docker-registry: push, pull by tag and digest, manifest
types, indexes and platform selection, existence checks, mounts, integrity — cross-checked with skopeo."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from registry_helpers import FaultProxy, make_image, make_index, push

from layerkit import mediatypes as mt
from layerkit.digest import sha256_bytes
from layerkit.errors import (
    DigestMismatchError,
    ImageNotFoundError,
    ManifestError,
    RegistryError,
)
from layerkit.image import BlobSource, Image, ImageSink
from layerkit.reference import DockerReference
from layerkit.sources.registry import (
    RegistrySink,
    list_tags,
    manifest_exists,
    open_image,
    open_index,
)
from layerkit.spec import Manifest, Platform

pytestmark = pytest.mark.registry

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


def unique_ref(host: str, tag: str = "1") -> DockerReference:
    """A fresh repository per test: the session registry is shared."""
    return DockerReference.parse(f"{host}/test/{uuid.uuid4().hex[:10]}:{tag}")


def skopeo_inspect(ref: DockerReference | str, *args: str) -> Any:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *args, f"docker://{ref}"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    return out if "--raw" in args else json.loads(out)


def blob_path(storage: Path, digest: str) -> Path:
    """Where docker-registry's filesystem driver keeps a blob's bytes."""
    hexpart = digest.split(":", 1)[1]
    return storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


def contents(image: Image) -> list[bytes]:
    return [layer.open_tar().read() for layer in image.layers]


def test_push_then_pull_by_tag_and_digest_matches_skopeo(registry: str) -> None:
    image = make_image([{"etc/hello": b"hello\n"}, {"usr/bin/tool": b"\x7fELF" + bytes(range(256)) * 64}])
    ref = unique_ref(registry)
    sink = RegistrySink(ref)
    assert isinstance(sink, ImageSink)

    sent = push(image, sink)

    assert [d.digest for d in sent] == [d.digest for d in image.blobs()]
    for pulled in (open_image(ref), open_image(ref.with_digest(image.digest))):
        assert isinstance(pulled.source, BlobSource)
        assert pulled.digest == image.digest
        assert pulled.manifest.to_bytes() == image.manifest.to_bytes()
        assert pulled.raw_config == image.raw_config
        assert contents(pulled) == contents(image)
    seen = skopeo_inspect(ref)
    assert seen["Digest"] == image.digest
    assert seen["Layers"] == [x.digest for x in image.layers]
    raw = skopeo_inspect(ref, "--raw")  # byte for byte, so every size and digest in it agrees too
    assert raw == image.manifest.to_bytes()
    assert [(x["digest"], x["size"]) for x in json.loads(raw)["layers"]] == [(x.digest, x.size) for x in image.layers]


def test_docker_v2_manifest_is_pushed_with_its_own_media_type(registry: str) -> None:
    image = make_image([{"a": b"docker flavour"}], docker=True)
    ref = unique_ref(registry, "docker")

    push(image, RegistrySink(ref))

    pulled = open_image(ref)
    assert pulled.media_type == mt.DOCKER_MANIFEST
    assert pulled.manifest.config.media_type == mt.DOCKER_CONFIG
    assert pulled.digest == image.digest
    raw = skopeo_inspect(ref, "--raw")
    assert json.loads(raw)["mediaType"] == mt.DOCKER_MANIFEST and raw == image.manifest.to_bytes()


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-manifest-list"])
def test_multi_platform_push_and_platform_selection(registry: str, docker: bool) -> None:
    amd = make_image([{"arch": b"amd64"}], docker=docker, platform=AMD64)
    arm = make_image([{"arch": b"arm64"}], docker=docker, platform=ARM64)
    index = make_index([amd, arm], docker=docker)
    ref = unique_ref(registry, "multi")
    sink = RegistrySink(ref)

    for image in (amd, arm):
        push(image, sink, tag=False)  # children by digest only
    desc = sink.put_index(index)

    assert desc.digest == index.digest() and desc.media_type == index.media_type
    assert skopeo_inspect(ref, "--raw") == index.to_bytes()
    assert open_image(ref, platform=ARM64).digest == arm.digest
    assert contents(open_image(ref, platform=AMD64)) == contents(amd)
    assert open_image(ref, platform=Platform.parse("linux/arm64")).digest == arm.digest
    assert skopeo_inspect(ref, "--override-arch", "arm64")["Layers"] == [x.digest for x in arm.layers]
    with pytest.raises(ManifestError, match=r"no image for platform linux/s390x .*available: linux/amd64, linux/arm64"):
        open_image(ref, platform=Platform("linux", "s390x"))

    everything = open_index(ref)
    assert everything.index is not None and everything.digest == index.digest()
    assert [i.digest for i in everything.images] == [amd.digest, arm.digest]
    assert all(i.index is everything.index for i in everything.images)
    single = open_index(ref.with_digest(amd.digest))
    assert single.index is None and [i.digest for i in single.images] == [amd.digest]


def test_existence_checks_skip_reuploads_and_tags_are_listed(registry: str) -> None:
    image = make_image([{"x": b"once"}])
    ref = unique_ref(registry, "a")
    sink = RegistrySink(ref)
    assert not manifest_exists(ref)
    assert not any(sink.has_blob(d) for d in image.blobs())

    assert len(push(image, sink)) == 2
    assert push(image, RegistrySink(ref.with_tag("b"))) == []  # everything already there

    assert all(sink.has_blob(d) for d in image.blobs())
    assert manifest_exists(ref) and manifest_exists(ref.with_digest(image.digest))
    assert sorted(list_tags(ref)) == ["a", "b"]


def test_cross_repository_mount_sends_no_bytes(registry: str) -> None:
    image = make_image([{"big": bytes(200_000)}])
    base = unique_ref(registry, "base")
    push(image, RegistrySink(base))
    proxy = FaultProxy(registry)  # only records here
    try:
        target = DockerReference.parse(f"{proxy.host}/{unique_ref(registry).repository}:app")
        push(image, RegistrySink(target, mount_from=DockerReference.parse(f"{proxy.host}/{base.repository}")))
    finally:
        proxy.close()

    posts = [(path, status) for method, path, status in proxy.seen if method == "POST"]
    assert len(posts) == 2 and all("mount=sha256" in p and s == 201 for p, s in posts)
    assert not [m for m, _, _ in proxy.seen if m == "PATCH"]
    assert [p for m, p, _ in proxy.seen if m == "PUT"] == [f"/v2/{target.repository}/manifests/app"]
    assert open_image(DockerReference.parse(f"{registry}/{target.repository}:app")).digest == image.digest


def test_mount_of_a_blob_the_source_lacks_falls_back_to_upload(registry: str) -> None:
    image = make_image([{"fresh": b"not in the source repository"}])
    ref = unique_ref(registry)
    sink = RegistrySink(ref, mount_from=unique_ref(registry))  # an empty repository: 202, then upload

    push(image, sink)

    assert contents(open_image(ref)) == contents(image)


def test_corrupted_blob_in_registry_storage_is_a_digest_mismatch(registry_server: Any) -> None:
    image = make_image([{"victim": uuid.uuid4().bytes * 100}])
    ref = unique_ref(registry_server.host)
    push(image, RegistrySink(ref))
    layer = image.layers[0]
    data = blob_path(registry_server.storage, layer.digest)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))

    pulled = open_image(ref)
    with pytest.raises(DigestMismatchError, match=f"layer 0 {layer.digest} from registry .* is corrupt"):
        pulled.layers[0].open().read()


def test_tampered_manifest_is_refused(registry_server: Any) -> None:
    image = make_image([{"a": b"m"}])
    manifest = Manifest(image.manifest.media_type, image.manifest.config, image.manifest.layers,
                        annotations={"note": "aaaa"})
    image = Image(manifest, image.source)
    ref = unique_ref(registry_server.host)
    push(image, RegistrySink(ref))
    stored = blob_path(registry_server.storage, image.digest)
    stored.write_bytes(stored.read_bytes().replace(b'"aaaa"', b'"aaab"'))

    for pinned in (ref, ref.with_digest(image.digest)):
        with pytest.raises(DigestMismatchError, match=f"manifest .*{image.digest}"):
            open_image(pinned)


def test_upload_of_wrong_bytes_is_refused(registry: str) -> None:
    image = make_image([{"a": b"right"}])
    desc = image.manifest.layers[0]
    sink = RegistrySink(unique_ref(registry))

    with pytest.raises(DigestMismatchError, match=desc.digest):
        sink.put_blob(desc, _io(b"x" * desc.size))
    with pytest.raises(DigestMismatchError, match="stream of 3 bytes"):
        sink.put_blob(desc, _io(b"abc"))
    assert not sink.has_blob(desc)


def test_missing_image_and_repository_are_image_not_found(registry: str) -> None:
    ref = unique_ref(registry, "nope")
    with pytest.raises(ImageNotFoundError, match=rf"pulling {ref}: no such image.*MANIFEST_UNKNOWN|NAME_UNKNOWN"):
        open_image(ref)
    with pytest.raises(ImageNotFoundError, match="no such image"):
        open_image(ref.with_digest(sha256_bytes(b"nothing")))
    with pytest.raises(ImageNotFoundError, match="NAME_UNKNOWN"):
        list_tags(ref)


def test_unreachable_registry_fails_fast_with_a_hint() -> None:
    from registry_helpers import free_port

    ref = DockerReference.parse(f"127.0.0.1:{free_port()}/app:1")
    start = time.monotonic()
    with pytest.raises(RegistryError, match=r"cannot reach registry 127\.0\.0\.1:\d+ .*connection refused; is the "
                                            r"registry running\?"):
        open_image(ref)
    assert time.monotonic() - start < 3


def test_plain_http_only_for_loopback_or_insecure() -> None:
    from layerkit.sources.registry import _Client

    assert _Client("localhost:5000").base == "http://localhost:5000"
    assert _Client("127.3.2.1:5000").base == "http://127.3.2.1:5000"
    assert _Client("[::1]:5000").base == "http://[::1]:5000"
    assert _Client("registry.example:5000").base == "https://registry.example:5000"
    assert _Client("registry.example:5000", insecure=True).base == "http://registry.example:5000"
    assert _Client("docker.io").base == "https://registry-1.docker.io"


def _io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)
