"""layerkit — build, inspect, diff and unpack container images; no daemon needed.

The names below are the public API (pinned by ``tests/test_public_api.py``). Heavy parts (registry and
Docker clients, the builder) are imported only when first used, so ``import layerkit`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (
    AuthenticationError,
    BlobNotFoundError,
    BuildError,
    ConfigError,
    CorruptStoreError,
    DaemonUnavailableError,
    DigestError,
    DigestMismatchError,
    DockerfileSyntaxError,
    ExecutorUnavailableError,
    ImageNotFoundError,
    InvalidDigestError,
    InvalidReferenceError,
    InvalidWhiteoutError,
    LayerError,
    LayerkitError,
    LimitExceededError,
    ManifestError,
    RegistryError,
    SourceError,
    StepFailedError,
    StoreError,
    TarFormatError,
    UnsafePathError,
    UnsupportedInstructionError,
    UnsupportedMediaTypeError,
)
from .lazy import lazy_attributes

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "Digest": ".digest",
    "Image": ".image",
    "ImageSink": ".image",
    "Layer": ".image",
    "Compression": ".mediatypes",
    "Descriptor": ".spec",
    "History": ".spec",
    "ImageConfig": ".spec",
    "Index": ".spec",
    "Manifest": ".spec",
    "Platform": ".spec",
    "open_image": ".transport",
    "open_index": ".transport",
    "open_sink": ".transport",
    "copy": ".api",
    "pull": ".api",
    "push": ".api",
    # not "build": that name is the layerkit.build package (a submodule import would shadow a function)
    "build_image": ".api",
    "inspect": ".api",
    "diff": ".api",
    "unpack": ".api",
    "export": ".api",
    "open_store": ".store",
    "Union": ".union",
    "LayerWriter": ".tarfs",
    "Entry": ".tarfs",
    "EntryType": ".tarfs",
    "Limits": ".tarfs.limits",
}

__all__ = [
    "AuthenticationError",
    "BlobNotFoundError",
    "BuildError",
    "Compression",
    "ConfigError",
    "CorruptStoreError",
    "DaemonUnavailableError",
    "Descriptor",
    "Digest",
    "DigestError",
    "DigestMismatchError",
    "DockerfileSyntaxError",
    "Entry",
    "EntryType",
    "ExecutorUnavailableError",
    "History",
    "Image",
    "ImageConfig",
    "ImageNotFoundError",
    "ImageSink",
    "Index",
    "InvalidDigestError",
    "InvalidReferenceError",
    "InvalidWhiteoutError",
    "Layer",
    "LayerError",
    "LayerWriter",
    "LayerkitError",
    "LimitExceededError",
    "Limits",
    "Manifest",
    "ManifestError",
    "Platform",
    "RegistryError",
    "SourceError",
    "StepFailedError",
    "StoreError",
    "TarFormatError",
    "Union",
    "UnsafePathError",
    "UnsupportedInstructionError",
    "UnsupportedMediaTypeError",
    "__version__",
    "build_image",
    "copy",
    "diff",
    "export",
    "inspect",
    "open_image",
    "open_index",
    "open_sink",
    "open_store",
    "pull",
    "push",
    "unpack",
]


__getattr__ = lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .api import build_image, copy, diff, export, inspect, pull, push, unpack
    from .digest import Digest
    from .image import Image, ImageSink, Layer
    from .mediatypes import Compression
    from .spec import Descriptor, History, ImageConfig, Index, Manifest, Platform
    from .store import open_store
    from .tarfs import Entry, EntryType, LayerWriter
    from .tarfs.limits import Limits
    from .transport import open_image, open_index, open_sink
    from .union import Union
