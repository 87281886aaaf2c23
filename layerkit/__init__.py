"""layerkit — build, inspect, diff and unpack container images; no daemon needed.

The names below are the public API (pinned by ``tests/test_public_api.py``). Heavy parts (registry and
Docker clients, the builder) are imported only when first used, so ``import layerkit`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .digest import Digest
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
from .image import Image, ImageSink, Layer
from .mediatypes import Compression
from .spec import Descriptor, History, ImageConfig, Index, Manifest, Platform

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "open_image": "layerkit.transport",
    "open_index": "layerkit.transport",
    "open_sink": "layerkit.transport",
    "copy": "layerkit.api",
    "pull": "layerkit.api",
    "push": "layerkit.api",
    # not "build": that name is the layerkit.build package (a submodule import would shadow a function)
    "build_image": "layerkit.api",
    "inspect": "layerkit.api",
    "diff": "layerkit.api",
    "unpack": "layerkit.api",
    "export": "layerkit.api",
    "open_store": "layerkit.store",
    "Union": "layerkit.union",
    "LayerWriter": "layerkit.tarfs",
    "Entry": "layerkit.tarfs",
    "EntryType": "layerkit.tarfs",
    "Limits": "layerkit.tarfs.limits",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'layerkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .api import build_image, copy, diff, export, inspect, pull, push, unpack
    from .store import open_store
    from .tarfs import Entry, EntryType, LayerWriter
    from .tarfs.limits import Limits
    from .transport import open_image, open_index, open_sink
    from .union import Union
