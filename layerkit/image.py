"""The one data model every source, sink and operation speaks: ``Image`` and ``Layer``.

An ``Image`` is a manifest, its config and a way to open any blob by descriptor. It is read-only and
lazy: the config is fetched on first use, a layer blob only when opened. Every blob stream it hands
out is verified against its digest as it is read (``VerifyingReader``), whatever the source.
Sources implement the tiny ``BlobSource`` protocol; everything else is shared here.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from functools import cached_property
from typing import BinaryIO, Protocol, runtime_checkable

from . import mediatypes as mt
from .digest import CHUNK, Digest, ThreadedVerifyingReader, VerifyingReader
from .errors import LayerkitError, ManifestError, TarFormatError
from .spec import Descriptor, ImageConfig, Index, Manifest, Platform, chain_ids
from .streams import Reader

__all__ = ["BlobSource", "Image", "ImageSink", "Layer"]


@runtime_checkable
class BlobSource(Protocol):
    """Where an image's blobs come from. ``open_blob`` returns the raw bytes; ``Image`` verifies."""

    #: human-readable origin for messages, e.g. ``oci:/tmp/x`` or ``registry 127.0.0.1:5000/app``
    name: str

    def open_blob(self, descriptor: Descriptor) -> BinaryIO: ...


@runtime_checkable
class ImageSink(Protocol):
    """Where ``copy`` writes an image: blobs first (config and layers), then the manifest."""

    name: str

    def has_blob(self, descriptor: Descriptor) -> bool: ...

    def put_blob(self, descriptor: Descriptor, stream: BinaryIO) -> None:
        """Store exactly ``descriptor.size`` bytes from ``stream``; raise if they don't match."""
        ...

    def put_image(self, image: Image) -> None:
        """Record the manifest (and tag) once all blobs are in; the commit point of a copy."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Layer:
    """One layer of an image: its descriptor, its diff ID (from the config) and lazy access."""

    descriptor: Descriptor
    diff_id: Digest
    index: int
    _image: Image

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @property
    def media_type(self) -> str:
        return self.descriptor.media_type

    @property
    def compression(self) -> mt.Compression:
        return mt.layer_compression(self.media_type)

    def open(self) -> BinaryIO:
        """The blob as stored (maybe compressed), verified against ``digest`` at EOF."""
        return self._image.open_blob(self.descriptor, what=f"layer {self.index}")

    def open_tar(self) -> BinaryIO:
        """The uncompressed tar stream. Compression is sniffed from the bytes, not the media type;
        the compressed digest is checked as the stream is consumed, the diff ID at EOF."""
        return _LayerTar(self)  # type: ignore[return-value]


#: A layer blob at least this big hashes its tar (the diff ID) in a thread of its own: hashing it in
#: the thread that decompresses it made that thread the slowest part of an unpack.
HASH_THREAD_FROM = 1 << 20

#: A layer blob up to this size is read and checked whole and, when it is one gzip member of at most
#: ``WHOLE_TAR_MAX`` bytes, decompressed in one call: for the few-hundred-byte layer of a RUN step that
#: touches a file or two, setting up the streams cost twice what reading it did.
WHOLE_BLOB_MAX = 64 << 10
WHOLE_TAR_MAX = 1 << 20


def _read_whole(blob: BinaryIO) -> io.BytesIO:
    """All of a small blob in memory, checked against its digest (at EOF); the blob is closed."""
    with blob:
        return io.BytesIO(b"".join(iter(lambda: blob.read(CHUNK), b"")))


class _LayerTar(Reader):
    """A layer's decompressed tar, verified twice over: the blob against ``digest`` as it streams (a
    small blob: whole, as it is opened), the tar against ``diff_id`` at EOF. Closing it closes the blob.
    When the codec fails, the rest of the blob is read first, so a corrupt blob is reported as what it
    is (a digest mismatch naming the blob) rather than as a CRC or codec error."""

    def __init__(self, layer: Layer) -> None:
        from .tarfs.compression import decompress_whole, open_decompressed

        self._blob = layer.open()
        tar: BinaryIO | None = None
        if layer.size <= WHOLE_BLOB_MAX:
            self._blob = _read_whole(self._blob)
            whole = decompress_whole(self._blob.getvalue(), WHOLE_TAR_MAX)
            tar = None if whole is None else io.BytesIO(whole)
        if tar is None:
            try:
                tar = open_decompressed(self._blob, compressed_size=layer.size, what=f"layer {layer.digest}")
            except LayerkitError:
                self._drain_blob()
                raise
        self._tar = tar
        verifier = ThreadedVerifyingReader if layer.size >= HASH_THREAD_FROM else VerifyingReader
        self._verified = verifier(
            self._tar, layer.diff_id, what=f"layer {layer.index} uncompressed tar (diff ID)",
            source=layer._image.source.name,
        )

    def _drain_blob(self) -> None:
        with contextlib.suppress(TarFormatError):
            while self._blob.read(CHUNK):
                pass

    def read(self, n: int = -1) -> bytes:
        try:
            return self._verified.read(n)
        except TarFormatError:
            self._drain_blob()
            raise

    def close(self) -> None:
        # the verifier closes the tar stream it reads (and ends its hashing thread); without one, the tar
        tar = getattr(self, "_verified", None) or getattr(self, "_tar", None)
        for part in (tar, self._blob):
            close = getattr(part, "close", None)
            if close is not None:
                close()



class Image:
    """A single-platform image: manifest + config + blob access, the same object whatever the source."""

    def __init__(
        self,
        manifest: Manifest,
        source: BlobSource,
        *,
        reference: str = "",
        config: ImageConfig | None = None,
        index: Index | None = None,
    ) -> None:
        if manifest.media_type not in mt.MANIFEST_TYPES:
            raise ManifestError(f"{reference or source.name}: {manifest.media_type!r} is not an image manifest")
        self.manifest = manifest
        self.source = source
        self.reference = reference
        #: the index this image was selected from, if any (kept so copies can mention it)
        self.index = index
        if config is not None:
            self.__dict__["config"] = config

    def __repr__(self) -> str:
        return f"<Image {self.reference or self.source.name} {self.digest.short}>"

    # --- identity -------------------------------------------------------------------------------

    @cached_property
    def digest(self) -> Digest:
        """Digest of the manifest bytes (what registries and ``@sha256:`` references use)."""
        return self.manifest.digest()

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    @cached_property
    def raw_config(self) -> bytes:
        with self.open_blob(self.manifest.config, what="config") as f:
            data = f.read()
        return data

    @cached_property
    def config(self) -> ImageConfig:
        try:
            return ImageConfig.from_bytes(self.raw_config)
        except ManifestError as exc:  # say which image: the parser only knows it read "a config"
            raise ManifestError(f"{self.reference or self.source.name}: config {self.manifest.config.digest}: "
                                f"{exc}") from None

    @property
    def platform(self) -> Platform:
        return self.config.platform

    # --- layers -----------------------------------------------------------------------------------

    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        descs = [d for d in self.manifest.layers if mt.is_layer(d.media_type)]
        diff_ids = self.config.diff_ids
        if len(diff_ids) != len(descs):
            raise ManifestError(
                f"{self.reference or self.source.name}: manifest lists {len(descs)} layers but the config "
                f"has {len(diff_ids)} diff IDs"
            )
        return tuple(Layer(d, diff_ids[i], i, self) for i, d in enumerate(descs))

    def chain_ids(self) -> list[Digest]:
        return chain_ids(self.config.diff_ids)

    # --- blobs --------------------------------------------------------------------------------------

    def open_blob(self, descriptor: Descriptor, *, what: str = "blob") -> BinaryIO:
        raw = self.source.open_blob(descriptor)
        return VerifyingReader(raw, descriptor.digest, descriptor.size, what=what,  # type: ignore[return-value]
                               source=self.source.name)

    def blobs(self) -> list[Descriptor]:
        """Every blob the manifest references: config first, then layers (the order a copy writes)."""
        return [self.manifest.config, *self.manifest.layers]
