"""One entry point from a reference string to an ``Image`` (``open_image``) or an ``ImageSink``
(``open_sink``), whatever the transport (see ``layerkit.reference`` for the grammar).

A small dispatch table; each source module is imported only when its transport is used (the docker
SDK and oras cost 100+ ms to import). A bare name (``alpine``, ``demo:1``) resolves like this:
the local store, then the Docker Engine (only when one answers within a couple of seconds), then the
registry (Docker Hub by default). Which one answered is recorded in ``image.resolved_from``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, cast

from .errors import ImageNotFoundError, InvalidReferenceError, SourceError
from .image import Image, ImageSink
from .reference import DockerReference, TransportReference, parse_reference
from .spec import Descriptor, Index, Platform, parse_manifest_or_index

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

__all__ = ["open_image", "open_index", "open_sink", "resolved_from", "store_name"]

FORMATS = ("oci", "docker")


class _Options(NamedTuple):
    """What every source opener gets besides the reference."""

    platform: Platform | None
    insecure: bool
    home: str | os.PathLike[str] | None
    credentials: Any


def resolved_from(image: Image) -> str:
    """Which source answered for ``image`` (``"store"``, ``"docker-daemon"``, ``"registry docker.io"``…)."""
    return str(getattr(image, "resolved_from", "") or "")


def _store(home: str | os.PathLike[str] | None) -> Any:
    from .store import open_store

    return open_store(home)


def _tmp_dir(home: str | os.PathLike[str] | None) -> Path | None:
    """Where big temporaries go: the store's tmp dir when the store exists (same disk as the blobs,
    and cleaned by the store), else ``$TMPDIR``. Never creates a store just for that."""
    # imported here: only archives and the Engine need it, and opening a layout imports no pathlib
    from pathlib import Path

    from .store import default_home

    tmp = (Path(home) if home is not None else default_home()) / "tmp"
    return tmp if tmp.is_dir() else None


# --- sources --------------------------------------------------------------------------------------


def _open_oci(ref: TransportReference, o: _Options) -> Image:
    from .sources import oci

    return oci.open_image(ref.path, ref.name, o.platform)


def _open_archive(ref: TransportReference, o: _Options) -> Image:
    from .sources import archive

    return archive.open_image(ref.path, ref.name, ref.index, platform=o.platform)


def _open_oci_archive(ref: TransportReference, o: _Options) -> Image:
    # an OCI layout in a tar is read by the same seeking reader (it tolerates a missing manifest.json)
    from .sources import archive

    source = archive.read_archive(ref.path, name=f"oci-archive:{ref.path}")
    entry = archive.select(source, ref.name)
    return archive.image_from_entry(source, entry, ref.text, o.platform)


def _open_daemon(ref: TransportReference, o: _Options) -> Image:
    from .sources import daemon

    return daemon.open_image(ref.name, platform=o.platform, tmp_dir=_tmp_dir(o.home))


def _open_registry(ref: TransportReference, o: _Options) -> Image:
    assert ref.docker is not None
    from .sources import registry

    return registry.open_image(ref.docker, platform=o.platform, insecure=o.insecure, credentials=o.credentials)


def _open_store(ref: TransportReference, o: _Options) -> Image:
    name = ref.docker.familiar if ref.docker is not None else ref.name
    return _store(o.home).image(name, o.platform)  # type: ignore[no-any-return]


def _open_bare(ref: TransportReference, o: _Options) -> Image:
    """Local store → Docker Engine (when one answers quickly) → registry; say what was tried."""
    assert ref.docker is not None
    tried: list[str] = []
    try:
        image = _open_store(ref, o)
        image.resolved_from = "store"  # type: ignore[attr-defined]
        return image
    except ImageNotFoundError:
        tried.append("local store: no such tag")
    from .sources import daemon  # only now: it pulls in the archive reader and tarfile

    if daemon.daemon_available():
        try:
            image = daemon.open_image(ref.docker.familiar, platform=o.platform, tmp_dir=_tmp_dir(o.home))
            image.resolved_from = "docker-daemon"  # type: ignore[attr-defined]
            return image
        except ImageNotFoundError:
            tried.append("Docker Engine: no such image")
    else:
        tried.append(f"Docker Engine: none answers at {daemon.docker_host()}")
    try:
        image = _open_registry(ref, o)
    except SourceError as exc:
        tried.append(f"registry {ref.docker.registry}: {exc}")
        raise ImageNotFoundError(f"image {ref.text!r} not found; tried {'; '.join(tried)}") from None
    image.resolved_from = f"registry {ref.docker.registry}"  # type: ignore[attr-defined]
    return image


_OPENERS: dict[str, Callable[[TransportReference, _Options], Image]] = {
    "": _open_bare,
    "oci": _open_oci,
    "oci-archive": _open_oci_archive,
    "docker-archive": _open_archive,
    "docker-daemon": _open_daemon,
    "docker": _open_registry,
    "store": _open_store,
}


def _as_platform(platform: Platform | str | None) -> Platform | None:
    return Platform.parse(platform) if isinstance(platform, str) else platform


def open_image(
    ref: str,
    *,
    platform: Platform | str | None = None,
    insecure: bool = False,
    home: str | os.PathLike[str] | None = None,
    credentials: Any = None,
) -> Image:
    """The image ``ref`` names, from wherever it lives; ``image.resolved_from`` says where that was."""
    tref = parse_reference(ref)
    image = _OPENERS[tref.transport](tref, _Options(_as_platform(platform), insecure, home, credentials))
    if not resolved_from(image):
        image.resolved_from = tref.transport  # type: ignore[attr-defined]
    return image


def _layout_index(layout: Any, name: str) -> tuple[Index | None, list[Image]]:
    desc = layout.resolve(name)
    doc = parse_manifest_or_index(layout.read_blob(desc, what="manifest"), desc.media_type)
    if isinstance(doc, Index):
        return doc, [layout.image(str(d.digest)) for d in doc.manifests]
    return None, [layout.image(name)]


def open_index(
    ref: str,
    *,
    insecure: bool = False,
    home: str | os.PathLike[str] | None = None,
    credentials: Any = None,
) -> tuple[Index | None, list[Image]]:
    """Everything ``ref`` names, for multi-platform copies: its index and every image in it, or
    ``(None, [image])`` for a single-platform image. Registries, ``oci:`` layouts and the store (a
    bare name: the store, then the registry; an Engine holds one platform per name)."""
    tref = parse_reference(ref)
    if tref.transport == "oci":
        from .sources import oci

        return _layout_index(oci.open_layout(tref.path), tref.name)
    if tref.transport in ("store", "") and tref.docker is not None:
        try:
            return _layout_index(_store(home), tref.docker.familiar)
        except ImageNotFoundError:
            if tref.transport == "store":
                raise
    if tref.transport in ("docker", "") and tref.docker is not None:
        from .sources import registry

        found = registry.open_index(tref.docker, insecure=insecure, credentials=credentials)
        return found.index, list(found.images)
    raise InvalidReferenceError(
        f"reading every platform of {ref}: only registries, oci: layouts and the store hold "
        "multi-platform images; copy one platform with --platform instead"
    )


# --- sinks ----------------------------------------------------------------------------------------


def _sink_oci(ref: TransportReference, insecure: bool, home: Any) -> ImageSink:
    from .sources import oci

    return oci.OCILayoutSink(ref.path, ref.name)


def _sink_store(ref: TransportReference, insecure: bool, home: Any) -> ImageSink:
    from .sources import oci

    name = ref.docker.familiar if ref.docker is not None else ref.name
    return oci.OCILayoutSink(_store(home), name)


def _sink_archive(ref: TransportReference, insecure: bool, home: Any) -> ImageSink:
    from .sources import archive

    if ref.index is not None:
        raise InvalidReferenceError(f"{ref.text}: @N selects an image to read; to write, give NAME:TAG or nothing")
    return archive.ArchiveSink(ref.path, [ref.name] if ref.name else [])


def _sink_daemon(ref: TransportReference, insecure: bool, home: Any) -> ImageSink:
    from .sources import daemon

    return daemon.DaemonSink(ref.name, tmp_dir=_tmp_dir(home))


def _sink_registry(ref: TransportReference, insecure: bool, home: Any) -> ImageSink:
    from .sources import registry

    assert ref.docker is not None
    # its put_image also returns the descriptor and takes tag=: a wider signature than the protocol's
    return cast(ImageSink, registry.RegistrySink(ref.docker, insecure=insecure))


def _sink_unsupported(ref: TransportReference, insecure: bool, home: Any) -> ImageSink:
    raise InvalidReferenceError(
        f"writing {ref.text}: {ref.transport} is read-only in layerkit; write oci:DIR or docker-archive:FILE instead"
    )


_SINKS: dict[str, Callable[[TransportReference, bool, Any], ImageSink]] = {
    "": _sink_store,
    "store": _sink_store,
    "oci": _sink_oci,
    "oci-archive": _sink_unsupported,
    "docker-archive": _sink_archive,
    "docker-daemon": _sink_daemon,
    "docker": _sink_registry,
}


#: skopeo and umoci only see OCI manifests in an ``oci:`` layout, so Docker ones are converted there
#: (as skopeo does); the local store keeps what it is given, so registry digests survive a pull
_DEFAULT_FORMAT = {"oci": "oci"}


class _FormatDefault:
    """An ``ImageSink`` carrying the manifest format ``copy_image`` should write when not told."""

    def __init__(self, sink: ImageSink, format: str) -> None:
        self._sink = sink
        self.default_format = format
        self.name = sink.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._sink, attr)

    def has_blob(self, descriptor: Descriptor) -> bool:
        return self._sink.has_blob(descriptor)

    def put_blob(self, descriptor: Descriptor, stream: BinaryIO) -> None:
        self._sink.put_blob(descriptor, stream)

    def put_image(self, image: Image) -> None:
        self._sink.put_image(image)

    def close(self) -> None:
        self._sink.close()


def open_sink(
    ref: str,
    *,
    insecure: bool = False,
    home: str | os.PathLike[str] | None = None,
    format: str | None = None,
) -> ImageSink:
    """Where to write an image: a bare name or ``store:NAME`` tags the local store; ``oci:``,
    ``docker-archive:``, ``docker-daemon:`` and registry references write there. ``format``
    (``oci``/``docker``) becomes the sink's default for ``copy_image`` (``oci:`` defaults to ``oci``). Call ``close()`` to commit
    (or use the sink as a context manager where it is one; ``abort()`` discards where supported)."""
    if format is not None and format not in FORMATS:
        raise InvalidReferenceError(f"unknown image format {format!r}: expected one of {', '.join(FORMATS)}")
    tref = parse_reference(ref)
    sink = _SINKS[tref.transport](tref, insecure, home)
    format = format or _DEFAULT_FORMAT.get(tref.transport)
    return _FormatDefault(sink, format) if format else sink


def bare_to_registry(ref: str) -> str:
    """``push``'s destination: a name without transport means a registry, not the local store."""
    tref = parse_reference(ref)
    return f"docker://{tref.docker}" if tref.transport == "" and tref.docker is not None else ref


def store_name(ref: str) -> str:
    """The name ``pull`` tags in the local store: the reference's familiar name (``alpine:3.20``), or
    for a docker-archive the NAME:TAG it was asked for."""
    tref = parse_reference(ref)
    if tref.docker is not None:
        return tref.docker.familiar
    if tref.transport == "docker-archive" and tref.name:
        return DockerReference.parse(tref.name).familiar
    raise InvalidReferenceError(
        f"pulling {ref}: it carries no image name to tag in the store; use `layerkit copy {ref} NAME:TAG`"
    )


def docker_name(ref: str) -> DockerReference | None:
    """The registry-style name a reference carries (bare, ``docker://``, ``docker-daemon:``, ``store:``)."""
    return parse_reference(ref).docker
