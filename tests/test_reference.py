"""Reference grammar: Docker names and skopeo-style transports."""

from __future__ import annotations

import pytest

from layerkit.errors import InvalidReferenceError
from layerkit.reference import DockerReference, parse_reference

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text, registry, repository, tag",
    [
        ("alpine", "docker.io", "library/alpine", "latest"),
        ("alpine:3.20", "docker.io", "library/alpine", "3.20"),
        ("user/app:1", "docker.io", "user/app", "1"),
        ("index.docker.io/library/alpine", "docker.io", "library/alpine", "latest"),
        ("localhost/app", "localhost", "app", "latest"),
        ("localhost:5000/a/b:v1.2", "localhost:5000", "a/b", "v1.2"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest"),
        ("ghcr.io/org/app:main", "ghcr.io", "org/app", "main"),
    ],
)
def test_docker_references_normalize(text: str, registry: str, repository: str, tag: str) -> None:
    ref = DockerReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)


def test_docker_hub_api_host_and_familiar_name() -> None:
    ref = DockerReference.parse("alpine")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.familiar == "alpine:latest"
    assert str(ref) == "docker.io/library/alpine:latest"


def test_digest_pinned_reference_has_no_default_tag() -> None:
    ref = DockerReference.parse(f"localhost:5000/app@{DIGEST}")
    assert ref.tag == "" and ref.digest == DIGEST and ref.identifier == DIGEST


@pytest.mark.parametrize("bad", ["", "UPPER/case", "a:b:c", "app@sha256:short", "bad host!/x", " alpine"])
def test_invalid_references_are_errors(bad: str) -> None:
    with pytest.raises(InvalidReferenceError):
        DockerReference.parse(bad)


def test_transport_references() -> None:
    oci = parse_reference("oci:/tmp/layout:v1")
    assert (oci.transport, oci.path, oci.name) == ("oci", "/tmp/layout", "v1")
    arch = parse_reference("docker-archive:/tmp/a.tar:app:1")
    assert (arch.transport, arch.path, arch.name) == ("docker-archive", "/tmp/a.tar", "app:1")
    nth = parse_reference("docker-archive:/tmp/a.tar:@2")
    assert nth.index == 2 and nth.name == ""
    daemon = parse_reference("docker-daemon:alpine:3.20")
    assert daemon.transport == "docker-daemon" and daemon.docker is not None and daemon.docker.tag == "3.20"
    reg = parse_reference("docker://127.0.0.1:5000/app:1")
    assert reg.transport == "docker" and reg.docker is not None and reg.docker.registry == "127.0.0.1:5000"
    bare = parse_reference("alpine")
    assert bare.transport == "" and bare.docker is not None


@pytest.mark.parametrize("bad", ["docker:alpine", "oci:", "docker-archive:/a.tar:@x", "docker-daemon:"])
def test_malformed_transport_references(bad: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_reference(bad)
