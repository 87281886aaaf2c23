"""The ``oci:DIR[:TAG]`` transport: OCI image layout directories, read and written.

Reading and writing go through ``store.OCILayout`` (the local store is one too), so the same sink
writes to ``oci:`` directories and to layerkit's store.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import BinaryIO, Self

from .. import mediatypes as mt
from ..errors import DigestMismatchError, ImageNotFoundError, StoreError
from ..image import Image
from ..spec import Descriptor, Index, Platform
from ..store.layout import OCILayout

__all__ = ["OCILayoutSink", "open_image"]


def open_layout(path: str | os.PathLike[str]) -> OCILayout:
    """The layout at ``path`` for reading; a missing or foreign directory is ``ImageNotFoundError``."""
    try:
        return OCILayout(path)
    except StoreError as exc:
        raise ImageNotFoundError(str(exc)) from None


def open_image(path: str | os.PathLike[str], tag_or_digest: str = "",
               platform: Platform | str | None = None) -> Image:
    """The image ``oci:PATH[:TAG]`` names. Without a tag the layout must hold exactly one image
    (else the error lists its tags); a tag on an index selects ``platform`` (default: this host)."""
    return open_layout(path).image(tag_or_digest, platform)


class OCILayoutSink:
    """``ImageSink`` into an OCI layout (an ``oci:`` directory or the local store).

    The sink holds the layout's writer lock from creation to ``close`` so gc cannot collect blobs
    written before the tag that makes them reachable; ``put_image`` (or ``put_index``) is the commit
    point. Use it as a context manager or call ``close``.
    """

    def __init__(self, path_or_layout: str | os.PathLike[str] | OCILayout, tag: str = "") -> None:
        if isinstance(path_or_layout, OCILayout):
            self.layout = path_or_layout
        else:
            self.layout = OCILayout(path_or_layout, create=True)
        self.tag = tag
        self.name = self.layout.reference_for(tag) if tag else self.layout.name
        self._held = ExitStack()
        self._held.enter_context(self.layout.lock())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has_blob(self, descriptor: Descriptor) -> bool:
        return self.layout.has_blob(descriptor)

    def put_blob(self, descriptor: Descriptor, stream: BinaryIO) -> None:
        """Store exactly ``descriptor.size`` bytes hashing to ``descriptor.digest``, or raise."""
        self.layout.put_blob(stream, descriptor)

    def _put_manifest_blobs(self, image: Image) -> Descriptor:
        """Config (when absent) and the manifest's exact bytes; every layer must be here already."""
        config = image.manifest.config
        if not self.has_blob(config):
            self.layout.put_blob(image.open_blob(config, what="config"), config)
        data = image.manifest.to_bytes()
        digest, size = self.layout.put_json(data)
        if digest != image.digest:  # Manifest keeps its raw bytes, so this means a broken Image
            raise DigestMismatchError(image.digest, digest, "manifest", self.name)
        platform = None
        if config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
            platform = image.platform
        return Descriptor(image.media_type, digest, size, platform=platform)

    def put_image(self, image: Image) -> None:
        """Write the manifest (and config when missing), then tag it: the commit point."""
        desc = self._put_manifest_blobs(image)
        self.layout.set_tag(self.tag, desc)

    def put_child(self, image: Image) -> Descriptor:
        """Write one platform's manifest of a multi-platform copy without tagging it; tag the whole
        set with ``put_index`` once every child is in."""
        return self._put_manifest_blobs(image)

    def put_index(self, index: Index) -> Descriptor:
        """Store an index whose children were written with ``put_child`` and tag it (commit point)."""
        return self.layout.put_manifest(index, self.tag)

    def abort(self) -> None:
        """Give up without tagging. Blobs already written stay (another writer may share them) until
        gc finds them unreferenced."""
        self.close()

    def close(self) -> None:
        self._held.close()
