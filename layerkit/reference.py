"""Parsing image references: skopeo-style transports and Docker-style registry names.

Transport grammar (what skopeo users know)::

    oci:DIR[:TAG]                    an OCI image layout directory
    docker-archive:FILE[:NAME:TAG]   a `docker save` tarball (or ``FILE:@N`` for the N-th image)
    docker-daemon:NAME[:TAG]         the Docker Engine's image store
    docker://HOST/REPO[:TAG|@DIGEST] a registry (``docker://`` optional)
    store:NAME[:TAG]                 layerkit's local store
    NAME[:TAG]                       bare: local store, then Docker Engine, then registry
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .digest import Digest
from .errors import InvalidDigestError, InvalidReferenceError

__all__ = ["TRANSPORTS", "DockerReference", "TransportReference", "parse_reference"]

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DEFAULT_TAG = "latest"

TRANSPORTS = ("oci", "oci-archive", "docker-archive", "docker-daemon", "docker", "store")

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?"
# patterns, compiled (and cached by ``re``) on first use: commands that parse no name skip ~1 ms
_PATH_RE = rf"^{_COMPONENT}(?:/{_COMPONENT})*$"
_DOMAIN_RE = rf"^(?:{_DOMAIN})$"
_TAG_RE = r"^[\w][\w.-]{0,127}$"


class DockerReference(NamedTuple):
    """A normalized registry reference: ``docker.io/library/alpine:latest``."""

    registry: str
    repository: str
    tag: str = ""
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> DockerReference:
        orig = text
        if not text or text != text.strip():
            raise InvalidReferenceError(f"invalid reference {orig!r}: empty or surrounded by spaces")
        digest: Digest | None = None
        if "@" in text:
            text, _, dig = text.partition("@")
            try:
                digest = Digest(dig)
            except InvalidDigestError as exc:
                raise InvalidReferenceError(f"invalid reference {orig!r}: {exc}") from None
        tag = ""
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not re.match(_TAG_RE, tag):
                raise InvalidReferenceError(f"invalid reference {orig!r}: bad tag {tag!r}")
        first, sep, rest = text.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            registry, path = first, rest
        else:
            registry, path = DEFAULT_REGISTRY, text
        if registry in ("index.docker.io", DOCKER_HUB_API_HOST):
            registry = DEFAULT_REGISTRY
        if not re.match(_DOMAIN_RE, registry):
            raise InvalidReferenceError(f"invalid reference {orig!r}: bad registry host {registry!r}")
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = f"library/{path}"
        if not re.match(_PATH_RE, path):
            raise InvalidReferenceError(
                f"invalid reference {orig!r}: repository names are lower-case letters, digits and . _ - /"
            )
        if not tag and digest is None:
            tag = DEFAULT_TAG
        return cls(registry, path, tag, digest)

    @property
    def api_host(self) -> str:
        """The host to talk HTTP to (Docker Hub's API lives on another name than its references)."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        return str(self.digest) if self.digest else self.tag

    def with_tag(self, tag: str) -> DockerReference:
        return DockerReference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: Digest) -> DockerReference:
        return DockerReference(self.registry, self.repository, "", digest)

    @property
    def familiar(self) -> str:
        """Short form users type: ``alpine:latest``, ``localhost:5000/app:1``."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository.removeprefix("library/")
        return f"{name}:{self.tag}" + (f"@{self.digest}" if self.digest else "") if self.tag else f"{name}@{self.digest}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


class TransportReference(NamedTuple):
    """A parsed ``transport:details`` reference. ``transport`` is ``""`` for a bare name."""

    transport: str
    path: str = ""  # oci / docker-archive: the host path
    name: str = ""  # tag/name part (oci TAG, archive NAME:TAG, daemon/store NAME:TAG)
    index: int | None = None  # docker-archive ``@N``
    docker: DockerReference | None = None  # registry (or bare) reference
    text: str = ""

    def __str__(self) -> str:
        return self.text


def _split_path_and_name(rest: str) -> tuple[str, str]:
    """``DIR[:TAG]``: the path ends at the first ':' (skopeo's rule; paths with ':' are unsupported)."""
    path, _, name = rest.partition(":")
    return path, name


def parse_reference(text: str) -> TransportReference:
    """Parse any reference layerkit accepts (see the module docstring)."""
    if not text:
        raise InvalidReferenceError("empty image reference")
    transport, sep, rest = text.partition(":")
    if sep and transport in TRANSPORTS:
        if transport == "docker":
            if not rest.startswith("//"):
                raise InvalidReferenceError(f"invalid reference {text!r}: expected docker://HOST/REPO[:TAG]")
            return TransportReference("docker", docker=DockerReference.parse(rest[2:]), text=text)
        if transport in ("docker-daemon", "store"):
            if not rest:
                raise InvalidReferenceError(f"invalid reference {text!r}: expected {transport}:NAME[:TAG]")
            if transport == "docker-daemon" and rest.startswith("sha256:"):
                return TransportReference(transport, name=rest, text=text)
            ref = DockerReference.parse(rest)
            return TransportReference(transport, name=ref.familiar, docker=ref, text=text)
        path, name = _split_path_and_name(rest)
        if not path:
            raise InvalidReferenceError(f"invalid reference {text!r}: expected {transport}:PATH[:…]")
        index = None
        if transport == "docker-archive" and name.startswith("@"):
            try:
                index = int(name[1:])
            except ValueError:
                raise InvalidReferenceError(f"invalid reference {text!r}: expected FILE:@N") from None
            name = ""
        return TransportReference(transport, path=path, name=name, index=index, text=text)
    return TransportReference("", docker=DockerReference.parse(text), text=text)
