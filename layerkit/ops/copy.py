"""Copy an image from any source to any sink, converting the manifest format and recompressing
layers on the way when asked.

Digests are kept wherever the target allows: a plain copy writes the same blobs and the same manifest
bytes. A format change (OCI ↔ Docker) rewrites only the manifest (and the config's media type; its
bytes stay). Recompression streams each layer once — verified compressed blob → decompress → the
uncompressed tar checked against its diff ID → compress → temp file → ``put_blob`` — so memory stays
constant and the config (whose diff IDs do not change) stays byte-identical.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import BinaryIO, cast

from .. import mediatypes as mt
from ..digest import CHUNK, Hasher, VerifyingReader
from ..errors import (
    InvalidReferenceError,
    ManifestError,
    TarFormatError,
    UnsupportedMediaTypeError,
)
from ..image import Image, ImageSink, Layer
from ..mediatypes import Compression
from ..spec import Descriptor, Index, Manifest
from ..streams import Reader
from ..tarfs.limits import Limits, default_limits

__all__ = [
    "FORMATS",
    "ProgressFn",
    "copy_image",
    "copy_index",
]

FORMATS = ("oci", "docker")

#: ``progress(descriptor, bytes_done, bytes_total)``, called as each blob streams (and once with
#: done == total for a blob the sink already has)
ProgressFn = Callable[[Descriptor, int, int], None]


class _Counting(Reader):
    """Reports bytes read from a blob stream to a progress callback."""

    def __init__(self, raw: BinaryIO, desc: Descriptor, progress: ProgressFn | None) -> None:
        self._raw = raw
        self._desc = desc
        self._progress = progress
        self.done = 0
        if progress:
            progress(desc, 0, desc.size)

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data and self._progress:
            self.done += len(data)
            self._progress(self._desc, self.done, self._desc.size)
        return data

    def close(self) -> None:
        self._raw.close()



def _copy_blob(image: Image, desc: Descriptor, sink: ImageSink, what: str, progress: ProgressFn | None) -> None:
    if sink.has_blob(desc):
        if progress:
            progress(desc, desc.size, desc.size)
        return
    with _Counting(image.open_blob(desc, what=what), desc, progress) as stream:
        sink.put_blob(desc, stream)  # type: ignore[arg-type]


def _drain(stream: BinaryIO | _Counting) -> None:
    while stream.read(CHUNK):
        pass


def _zstd_threads() -> int:
    # libzstd's output is the same for any worker count >= 1, so use the cores without losing
    # reproducibility; gzip stays single-stream for the same reason (threaded isal differs)
    return max(1, min(4, os.cpu_count() or 1))


def _recompress(layer: Layer, target: Compression, media_type: str, sink: ImageSink,
                progress: ProgressFn | None, limits: Limits | None = None) -> Descriptor:
    """Stream ``layer`` through decompress → compress into a temp file, then ``put_blob`` it; the
    decompression is bounded by ``limits`` (size and ratio) like every other layer read."""
    from ..tarfs.compression import open_compressor, open_decompressed

    lim = limits or default_limits()

    source = layer._image.source.name
    tmp_dir = getattr(sink, "tmp_dir", None)
    with tempfile.TemporaryFile(dir=tmp_dir, prefix="layerkit-recompress-") as tmp:
        with _Counting(layer.open(), layer.descriptor, progress) as blob:
            plain = open_decompressed(cast(BinaryIO, blob), max_bytes=lim.max_bytes, max_ratio=lim.max_ratio,
                                      ratio_after=lim.ratio_after, compressed_size=layer.size,
                                      what=f"layer {layer.index} ({layer.digest.short})")
            tar = VerifyingReader(plain, layer.diff_id, what=f"layer {layer.index} uncompressed tar (diff ID)",
                                  source=source)
            hasher = Hasher(tmp)
            writer = open_compressor(cast(BinaryIO, hasher), target,
                                     threads=_zstd_threads() if target is Compression.ZSTD else 0)
            try:
                while chunk := tar.read(CHUNK):
                    writer.write(chunk)
            except TarFormatError:
                _drain(blob)  # a blob that is corrupt (not just malformed) says so: digest mismatch
                raise
            writer.close()
            _drain(blob)  # bytes after the compressed stream still count toward the digest check
        new = Descriptor(media_type, hasher.digest(), hasher.size, annotations=layer.descriptor.annotations)
        if sink.has_blob(new):
            if progress:
                progress(new, new.size, new.size)
            return new
        tmp.flush()
        tmp.seek(0)
        sink.put_blob(new, VerifyingReader(tmp, new.digest, new.size, what=f"recompressed layer {layer.index}"))  # type: ignore[arg-type]
    return new


def _target_compression(layer: Layer, compression: Compression | None, sink: ImageSink) -> Compression:
    want = layer.compression if compression is None else compression
    if compression is None and want is Compression.NONE and not getattr(sink, "preserve_layer_compression", False):
        # registries and layouts store compressed layers (what skopeo does too); archives and the
        # Docker Engine keep the uncompressed tars `docker save` produced
        want = Compression.GZIP
    accepted = getattr(sink, "layer_compressions", None)  # e.g. Engine 20.10 cannot load zstd layers
    if accepted is not None and want not in accepted:
        if compression is not None:
            raise UnsupportedMediaTypeError(
                f"copying to {sink.name}: it cannot take {want.value} layers; use --compression gzip"
            )
        want = Compression.GZIP
    return want


def _check_format(format: str | None, sink: ImageSink) -> str | None:
    format = format or getattr(sink, "default_format", None)
    if format is not None and format not in FORMATS:
        raise InvalidReferenceError(f"unknown image format {format!r}: expected one of {', '.join(FORMATS)}")
    return format


def _copy_blobs(image: Image, sink: ImageSink, format: str | None, compression: Compression | None,
                progress: ProgressFn | None, limits: Limits | None = None) -> Image:
    """Put every blob of ``image`` into ``sink`` (recompressing as asked) and return the image as the
    sink will hold it: the same manifest when nothing changed, else a converted one."""
    source_docker = image.manifest.is_docker
    docker = source_docker if format is None else format == "docker"

    config_desc = image.manifest.config
    if docker != source_docker:
        config_desc = replace(config_desc, media_type=mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG)
    _copy_blob(image, config_desc, sink, "config", progress)

    layers = iter(image.layers)  # the manifest's layer descriptors, in order, with their diff IDs
    descs: list[Descriptor] = []
    recompressed = False
    for desc in image.manifest.layers:
        if not mt.is_layer(desc.media_type):  # an artifact blob: copied as it is
            _copy_blob(image, desc, sink, "blob", progress)
            descs.append(desc)
            continue
        layer = next(layers)
        want = _target_compression(layer, compression, sink)
        if want is layer.compression:
            _copy_blob(image, desc, sink, f"layer {layer.index}", progress)
            descs.append(desc)
        else:
            descs.append(_recompress(layer, want, mt.layer_media_type(want, docker=source_docker), sink, progress,
                                     limits))
            recompressed = True

    manifest = image.manifest
    if recompressed:
        manifest = Manifest(manifest.media_type, manifest.config, tuple(descs), manifest.annotations, manifest.subject)
    manifest = manifest.convert(docker)
    return Image(manifest, image.source, reference=image.reference, config=image.config)


def copy_image(
    image: Image,
    sink: ImageSink,
    *,
    format: str | None = None,
    compression: Compression | str | None = None,
    progress: ProgressFn | None = None,
    limits: Limits | None = None,
) -> Descriptor:
    """Copy ``image`` into ``sink`` and return the descriptor of the manifest written.

    ``format``: ``"oci"``, ``"docker"`` or ``None`` to keep the source's (or the sink's
    ``default_format``). ``compression``: recompress every layer that differs (``None`` keeps each
    layer's, except that uncompressed layers get gzip for sinks that store compressed layers).
    ``limits`` bound the decompression of recompressed layers. The sink is not closed: the caller
    commits it.
    """
    format = _check_format(format, sink)
    target = Compression(compression) if compression is not None else None
    out = _copy_blobs(image, sink, format, target, progress, limits)
    sink.put_image(out)
    return out.manifest.descriptor()


def copy_index(
    index: Index,
    images: Sequence[Image],
    sink: ImageSink,
    *,
    format: str | None = None,
    compression: Compression | str | None = None,
    progress: ProgressFn | None = None,
    limits: Limits | None = None,
) -> Descriptor:
    """Copy every image of a multi-platform ``index`` and then the index itself (the commit point).

    The sink must take untagged children and an index: ``put_child(image)`` (OCI layouts) or
    ``put_image(image, tag=False)`` (registries), then ``put_index(index)``. The index keeps its
    bytes when no child changed; otherwise it is rewritten (as a Docker manifest list for
    ``format="docker"``) with each entry's platform and annotations.
    """
    put_index = getattr(sink, "put_index", None)
    if put_index is None:
        raise UnsupportedMediaTypeError(
            f"copying a multi-platform image to {sink.name}: it holds one image per name; "
            "pick a platform with --platform instead"
        )
    format = _check_format(format, sink)
    target = Compression(compression) if compression is not None else None
    by_digest = {image.digest: image for image in images}
    put_child = getattr(sink, "put_child", None)
    entries: list[Descriptor] = []
    for entry in index.manifests:
        image = by_digest.get(entry.digest)
        if image is None:
            raise ManifestError(f"copying {index.digest()}: manifest {entry.digest} of the index was not given")
        out = _copy_blobs(image, sink, format, target, progress, limits)
        if put_child is not None:
            put_child(out)
        else:
            sink.put_image(out, tag=False)  # type: ignore[call-arg]
        written = out.manifest.descriptor()
        entries.append(replace(entry, media_type=written.media_type, digest=written.digest, size=written.size))
    docker = index.media_type == mt.DOCKER_MANIFEST_LIST if format is None else format == "docker"
    media_type = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
    result = index
    if tuple(entries) != index.manifests or media_type != index.media_type:
        result = Index(media_type, tuple(entries), {} if docker else dict(index.annotations))
    put_index(result)
    return Descriptor(result.media_type, result.digest(), len(result.to_bytes()))
