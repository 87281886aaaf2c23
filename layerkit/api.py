"""The library's front door: every CLI verb as one function taking references as strings.

``layerkit build`` → :func:`build_image`, ``copy``/``pull``/``push`` → :func:`copy`/:func:`pull`/
:func:`push`, ``inspect`` → :func:`inspect`, ``diff`` → :func:`diff`, ``unpack``/``export`` →
:func:`unpack`/:func:`export`. Each opens what it needs through :mod:`layerkit.transport` and calls
the module that does the work; objects (``Image``, ``Union``…) are there for finer control.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from .image import Image
from .mediatypes import Compression
from .spec import Descriptor, Platform

if TYPE_CHECKING:  # pragma: no cover
    from .analyze.diff import DiffResult
    from .analyze.summary import Inspection
    from .build.builder import BuildResult
    from .tarfs.limits import Limits
    from .tarfs.writer import LayerResult
    from .union.unpack import UnpackResult

__all__ = ["CopyResult", "build_image", "copy", "diff", "export", "inspect", "pull", "push", "unpack"]

PathLike = str | os.PathLike[str]
#: ``progress(blob, bytes_done, bytes_total)`` while blobs are copied
CopyProgress = Callable[[Descriptor, int, int], None]


@dataclass(frozen=True)
class CopyResult:
    """What a copy wrote: the manifest (or index) descriptor, and where a bare source was found."""

    descriptor: Descriptor
    source: str
    destination: str
    resolved_from: str = ""

    @property
    def digest(self) -> str:
        return str(self.descriptor.digest)


def _open(ref: str | Image, platform: Platform | str | None, insecure: bool, home: PathLike | None) -> Image:
    if isinstance(ref, Image):
        return ref
    from .transport import open_image

    return open_image(ref, platform=platform, insecure=insecure, home=home)


def copy(
    src: str,
    dst: str,
    *,
    format: str | None = None,
    compression: Compression | str | None = None,
    platform: Platform | str | None = None,
    all_platforms: bool = False,
    insecure: bool = False,
    home: PathLike | None = None,
    progress: CopyProgress | None = None,
    limits: Limits | None = None,
) -> CopyResult:
    """Copy the image ``src`` names to ``dst`` (any two transports), verifying every byte.

    ``format`` (``oci``/``docker``) and ``compression`` convert; by default digests are kept where the
    destination allows. ``all_platforms`` copies a whole multi-platform index. The destination is
    committed only when everything arrived: on any error it is aborted and nothing is tagged.
    ``limits`` bound the layers decompressed to recompress them.
    """
    from .ops.copy import copy_image, copy_index
    from .transport import open_index, open_sink, resolved_from

    index, images, origin = None, list[Image](), ""
    if all_platforms:
        index, images = open_index(src, insecure=insecure, home=home)
    if index is None:
        images = [_open(src, platform, insecure, home)]
        origin = resolved_from(images[0])
    sink = open_sink(dst, insecure=insecure, home=home)
    try:
        if index is not None:
            desc = copy_index(index, images, sink, format=format, compression=compression, progress=progress,
                              limits=limits)
        else:
            desc = copy_image(images[0], sink, format=format, compression=compression, progress=progress,
                              limits=limits)
    except BaseException:
        abort = getattr(sink, "abort", None)
        (abort or sink.close)()
        raise
    sink.close()
    return CopyResult(desc, src, dst, origin)


def pull(ref: str, *, platform: Platform | str | None = None, insecure: bool = False, home: PathLike | None = None,
         progress: CopyProgress | None = None) -> CopyResult:
    """Copy ``ref`` into the local store under its familiar name; a bare ``ref`` means a registry, as
    with ``docker pull`` (prefix ``docker-daemon:``, ``oci:``… for other sources)."""
    from .transport import bare_to_registry, store_name

    return copy(bare_to_registry(ref), f"store:{store_name(ref)}", platform=platform, insecure=insecure,
                home=home, progress=progress)


def push(name: str, dest: str, *, format: str | None = None, insecure: bool = False, home: PathLike | None = None,
         progress: CopyProgress | None = None) -> CopyResult:
    """Copy ``name`` from the local store to ``dest`` (a bare ``dest`` is a registry reference)."""
    from .transport import bare_to_registry

    return copy(f"store:{name}", bare_to_registry(dest), format=format, insecure=insecure, home=home,
                progress=progress)


def build_image(context_dir: PathLike, **options: Any) -> BuildResult:
    """Build a Dockerfile; see :func:`layerkit.build.builder.build` for the options (``tags``,
    ``outputs``, ``build_args``, ``target``, ``no_cache``, ``source_date_epoch``, ``executor``…)."""
    from .build.builder import build

    return build(context_dir, **options)


def inspect(ref: str | Image, *, platform: Platform | str | None = None, insecure: bool = False,
            home: PathLike | None = None, progress: Callable[[int, int, int], None] | None = None,
            limits: Limits | None = None) -> Inspection:
    """Config, history, per-layer sizes, changes and waste of an image (``.to_json()`` is the
    ``layerkit inspect --json`` document)."""
    from .analyze.summary import inspect_image

    image = _open(ref, platform, insecure, home)
    return inspect_image(image, reference=ref if isinstance(ref, str) else image.reference, progress=progress,
                         limits=limits)


def diff(a: str | Image, b: str | Image, *, types: Iterable[str] | None = None,
         platform: Platform | str | None = None, insecure: bool = False, home: PathLike | None = None,
         limits: Limits | None = None) -> DiffResult:
    """What differs between two images (any transports) or two layer files (tar, tar.gz, tar.zst)."""
    from .analyze.diff import (
        TYPES,
        diff_sides,
        image_side,
        is_layer_file,
        layer_file_side,
    )

    def side(ref: str | Image) -> Any:
        if isinstance(ref, str) and is_layer_file(ref):
            return layer_file_side(ref, limits)
        image = _open(ref, platform, insecure, home)
        return image_side(image, ref if isinstance(ref, str) else image.reference, limits=limits)

    return diff_sides(side(a), side(b), tuple(types) if types is not None else TYPES)


def unpack(ref: str | Image, target_dir: PathLike, *, rootless: bool = False, no_privileged_bits: bool = False,
           platform: Platform | str | None = None, insecure: bool = False, home: PathLike | None = None,
           progress: Callable[[str, int, int], None] | None = None, limits: Limits | None = None) -> UnpackResult:
    """The merged root filesystem of an image into ``target_dir`` (empty or absent), safely."""
    from .union.unpack import unpack as unpack_union

    return unpack_union(_open(ref, platform, insecure, home), target_dir, rootless=rootless,
                        no_privileged_bits=no_privileged_bits, progress=progress, limits=limits)


def export(ref: str | Image, out: BinaryIO, *, platform: Platform | str | None = None, insecure: bool = False,
           home: PathLike | None = None, limits: Limits | None = None) -> LayerResult:
    """The merged root filesystem of an image as one plain tar written to ``out``."""
    from .union.export import export as export_union

    return export_union(_open(ref, platform, insecure, home), out, limits=limits)
