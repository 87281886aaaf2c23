"""Media types of manifests, configs and layers, and compression detection from magic bytes."""

from __future__ import annotations

import enum

__all__ = [
    "ACCEPT_MANIFESTS",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LAYER_FOREIGN",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_UNCOMPRESSED",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDIST",
    "OCI_LAYER_NONDIST_GZIP",
    "OCI_LAYER_NONDIST_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "Compression",
    "detect_compression",
    "is_layer",
    "layer_compression",
    "layer_media_type",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = DOCKER_LAYER_GZIP  # Docker's "tar.gzip" type is used for compressed layers
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_UNCOMPRESSED = "application/vnd.docker.image.rootfs.diff.tar"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})

#: Registries answer with the best type they have among these; the full list avoids schema1
#: down-conversion (registry 2.8 does that when Docker v2 is missing) and 404s on OCI manifests.
ACCEPT_MANIFESTS = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])


class Compression(str, enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


_LAYER_COMPRESSION = {
    OCI_LAYER: Compression.NONE,
    OCI_LAYER_GZIP: Compression.GZIP,
    OCI_LAYER_ZSTD: Compression.ZSTD,
    OCI_LAYER_NONDIST: Compression.NONE,
    OCI_LAYER_NONDIST_GZIP: Compression.GZIP,
    OCI_LAYER_NONDIST_ZSTD: Compression.ZSTD,
    DOCKER_LAYER_GZIP: Compression.GZIP,
    DOCKER_LAYER_FOREIGN: Compression.GZIP,
    DOCKER_LAYER_UNCOMPRESSED: Compression.NONE,
}


def is_layer(media_type: str) -> bool:
    return media_type in _LAYER_COMPRESSION


def layer_compression(media_type: str) -> Compression:
    """Compression a layer media type declares (the bytes are still sniffed when read)."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        from .errors import UnsupportedMediaTypeError

        raise UnsupportedMediaTypeError(f"unsupported layer media type {media_type!r}") from None


def layer_media_type(compression: Compression, docker: bool = False) -> str:
    """The layer media type for a compression, in OCI or Docker flavour."""
    if docker:
        if compression is Compression.ZSTD:
            return OCI_LAYER_ZSTD  # Docker has no zstd type of its own; Engine 23+ reads the OCI one
        return DOCKER_LAYER_GZIP if compression is Compression.GZIP else DOCKER_LAYER_UNCOMPRESSED
    return {Compression.NONE: OCI_LAYER, Compression.GZIP: OCI_LAYER_GZIP, Compression.ZSTD: OCI_LAYER_ZSTD}[
        compression
    ]


def detect_compression(head: bytes) -> Compression:
    """Compression of a stream from its first bytes (never trust the media type alone)."""
    if head[:2] == b"\x1f\x8b":
        return Compression.GZIP
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return Compression.ZSTD
    return Compression.NONE
