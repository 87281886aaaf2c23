"""The ``docker-archive:`` transport: what ``docker save`` writes and ``docker load`` reads.

Reading handles both layouts Engines produce:

- Engine ≤ 24 (legacy): ``manifest.json`` (``Config``/``RepoTags``/``Layers``) pointing at
  ``<sha>.json`` and ``<id>/layer.tar`` (uncompressed; a layer shared by two images is a symlink).
  There is no registry manifest, so one is synthesized: Docker schema2 whose layer descriptors are
  ``…rootfs.diff.tar`` with digest = sha256 of the tar = the diff ID.
- Engine ≥ 25 (hybrid): an OCI layout (``oci-layout``, ``index.json``, ``blobs/sha256/*``) *plus*
  ``manifest.json`` pointing into ``blobs/``. When the OCI manifest for an entry is in the archive it is
  used as is (same bytes, same digest); layers may be gzip-compressed, so compression is sniffed.

The archive is never extracted: its headers are indexed once and every blob is read with ``pread``
at the member's offset, in constant memory. A gzip-compressed archive file cannot be read that way
and is refused with a hint.

``ArchiveSink`` writes the hybrid layout (Engine 20.10 uses ``manifest.json``, Engine 25+ either
part), streaming blobs into a temp file next to the target and renaming it into place on ``close``.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Self

from .. import mediatypes as mt
from ..digest import CHUNK, Digest, sha256_bytes
from ..errors import (
    BlobNotFoundError,
    DigestMismatchError,
    ImageNotFoundError,
    InvalidDigestError,
    InvalidReferenceError,
    ManifestError,
    SourceError,
)
from ..image import Image
from ..reference import DockerReference
from ..spec import (
    ANNOTATION_REF_NAME,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
)
from ..streams import Reader

__all__ = ["ArchiveEntry", "ArchiveSink", "ArchiveSource", "open_image", "read_archive"]

#: containerd's (and Engine 25's) annotation for the full image name of an index.json entry
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"

_BLOB_PREFIX = "blobs/sha256/"
_MAX_METADATA = 64 << 20  # manifest.json / index.json / configs: refuse absurd sizes before reading


# --- reading -------------------------------------------------------------------------------------


class _MemberReader(Reader):
    """A bounded, read-only view of one tar member, read with ``pread`` (no shared file position, so
    several blobs of one archive can be read at once)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd = fd
        self._offset = offset
        self._size = size
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        if n is None or n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._offset + self._pos)
        if not data:
            raise SourceError("reading docker-archive: the archive file is truncated")
        self._pos += len(data)
        return data

    # close(): nothing to release, the archive owns the file descriptor


@dataclass(frozen=True)
class _Member:
    """Where a file's bytes lie inside the archive."""

    offset: int
    size: int


@dataclass
class ArchiveEntry:
    """One image in an archive: its names and the manifest to read it through."""

    position: int
    names: list[str]
    manifest: Manifest
    config: ImageConfig


@dataclass
class ArchiveSource:
    """A docker-archive file opened for reading: the member index and the images it holds.
    Implements ``BlobSource``: blobs are looked up by digest."""

    name: str
    file: BinaryIO
    entries: list[ArchiveEntry] = field(default_factory=list)
    _members: dict[str, _Member] = field(default_factory=dict)
    _by_digest: dict[str, str] = field(default_factory=dict)
    _links: dict[str, str] = field(default_factory=dict)

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        member = self._by_digest.get(str(descriptor.digest))
        if member is None:
            raise BlobNotFoundError(descriptor.digest, self.name)
        m = self._members[member]
        return _MemberReader(self.file.fileno(), m.offset, m.size)  # type: ignore[return-value]

    def close(self) -> None:
        self.file.close()

    # --- helpers for the parser ---

    def _resolve(self, name: str, what: str) -> str:
        """The regular-file member ``name`` refers to, following Docker's layer.tar symlinks."""
        name = _clean(name)
        for _ in range(16):
            m = self._members.get(name)
            if m is not None:
                return name
            link = self._links.get(name)
            if link is None:
                break
            name = link
        raise ManifestError(f"reading {self.name}: {what} {name!r} is missing from the archive")

    def _read_member(self, name: str, what: str) -> bytes:
        name = self._resolve(name, what)
        m = self._members[name]
        if m.size > _MAX_METADATA:
            raise ManifestError(f"reading {self.name}: {what} {name!r} is implausibly large ({m.size} bytes)")
        return os.pread(self.file.fileno(), m.size, m.offset)

    def _head(self, name: str) -> bytes:
        m = self._members[name]
        return os.pread(self.file.fileno(), min(4, m.size), m.offset)

    def _hash_member(self, name: str) -> Digest:
        h = hashlib.sha256()
        with _MemberReader(self.file.fileno(), self._members[name].offset, self._members[name].size) as r:
            while chunk := r.read(CHUNK):
                h.update(chunk)
        return Digest("sha256:" + h.hexdigest())


def _clean(name: str) -> str:
    name = posixpath.normpath(name.lstrip("/"))
    return "" if name == "." else name


def _index_members(source: ArchiveSource, path: str) -> None:
    f = source.file
    head = os.pread(f.fileno(), 4, 0)
    comp = mt.detect_compression(head)
    if comp is not mt.Compression.NONE:
        raise SourceError(
            f"reading docker-archive {path}: the archive file itself is {comp.value}-compressed; "
            f"layerkit reads archives by seeking, so decompress it first (e.g. `{'gunzip' if comp is mt.Compression.GZIP else 'unzstd'} -k {path}`)"
        )
    links = source._links
    f.seek(0)
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                name = _clean(info.name)
                if info.isreg():
                    source._members[name] = _Member(info.offset_data, info.size)
                elif info.issym():
                    links[name] = _clean(posixpath.join(posixpath.dirname(name), info.linkname))
                elif info.islnk():
                    links[name] = _clean(info.linkname)
                tar.members.clear()  # type: ignore[attr-defined]  # keep memory flat on big archives
    except tarfile.TarError as exc:
        raise SourceError(f"reading docker-archive {path}: not a tar archive ({exc})") from None
    for name in list(source._members):
        if name.startswith(_BLOB_PREFIX):
            try:
                source._by_digest[str(Digest("sha256:" + name[len(_BLOB_PREFIX):]))] = name
            except InvalidDigestError:
                pass


def _walk_index(source: ArchiveSource, raw: bytes, media_type: str, names: list[str], out: dict[str, Any],
                depth: int = 0) -> None:
    """Collect every OCI/Docker manifest reachable from index.json whose blob is in the archive:
    config digest → (manifest, names)."""
    if depth > 4:
        return
    index = Index.from_bytes(raw, media_type)
    for desc in index.manifests:
        blob = source._by_digest.get(str(desc.digest))
        if blob is None:
            continue  # other platforms of a multi-platform image are usually not saved
        entry_names = list(names)
        # containerd/Engine 25 name the image in full; a plain OCI layout only has the tag
        image_name = desc.annotations.get(ANNOTATION_IMAGE_NAME) or desc.annotations.get(ANNOTATION_REF_NAME)
        if image_name:
            entry_names.append(image_name)
        data = source._read_member(blob, "manifest")
        if sha256_bytes(data) != desc.digest:
            raise DigestMismatchError(desc.digest, sha256_bytes(data), "manifest", source.name)
        if desc.media_type in mt.INDEX_TYPES:
            _walk_index(source, data, desc.media_type, entry_names, out, depth + 1)
        elif desc.media_type in mt.MANIFEST_TYPES:
            manifest = Manifest.from_bytes(data, desc.media_type)
            prev = out.get(str(manifest.config.digest))
            out[str(manifest.config.digest)] = (manifest, (prev[1] if prev else []) + entry_names)


def _synthesize(source: ArchiveSource, config_raw: bytes, layer_members: list[str],
                config: ImageConfig) -> Manifest:
    """A Docker schema2 manifest for a legacy entry (``docker save`` keeps none)."""
    if len(layer_members) != len(config.diff_ids):
        raise ManifestError(
            f"reading {source.name}: manifest.json lists {len(layer_members)} layers but the config "
            f"has {len(config.diff_ids)} diff IDs"
        )
    cfg_digest = sha256_bytes(config_raw)
    layers = []
    for member, diff_id in zip(layer_members, config.diff_ids):
        comp = mt.detect_compression(source._head(member))
        if member.startswith(_BLOB_PREFIX):
            digest = Digest("sha256:" + member[len(_BLOB_PREFIX):])
        elif comp is mt.Compression.NONE:
            digest = diff_id  # an uncompressed layer's digest is its diff ID (verified when read)
        else:
            digest = source._hash_member(member)
        source._by_digest[str(digest)] = member
        layers.append(Descriptor(mt.layer_media_type(comp, docker=True), digest, source._members[member].size))
    return Manifest(
        media_type=mt.DOCKER_MANIFEST,
        config=Descriptor(mt.DOCKER_CONFIG, cfg_digest, len(config_raw)),
        layers=tuple(layers),
    )


def read_archive(path: str | os.PathLike[str], *, fileobj: BinaryIO | None = None,
                 name: str | None = None) -> ArchiveSource:
    """Index an archive (a path, or an already open seekable file such as a daemon save) and parse
    every image it holds, without reading any layer."""
    label = name or f"docker-archive:{path}"
    if fileobj is None:
        try:
            fileobj = open(path, "rb")  # noqa: SIM115 - the source keeps it open for lazy blob reads
        except FileNotFoundError:
            raise ImageNotFoundError(f"reading docker-archive {path}: no such file") from None
        except IsADirectoryError:
            raise ImageNotFoundError(
                f"reading docker-archive {path}: is a directory (for an OCI layout use oci:{path})"
            ) from None
    source = ArchiveSource(label, fileobj)
    _index_members(source, str(path))

    oci: dict[str, Any] = {}
    if "index.json" in source._members:
        _walk_index(source, source._read_member("index.json", "index.json"), mt.OCI_INDEX, [], oci)

    if "manifest.json" in source._members:
        try:
            listing = json.loads(source._read_member("manifest.json", "manifest.json"))
        except ValueError as exc:
            raise ManifestError(f"reading {label}: manifest.json is not valid JSON ({exc})") from None
        if not isinstance(listing, list):
            raise ManifestError(f"reading {label}: manifest.json is not a list")
        for pos, item in enumerate(listing):
            if not isinstance(item, dict) or not isinstance(item.get("Config"), str) or not isinstance(
                item.get("Layers"), list
            ):
                raise ManifestError(f"reading {label}: manifest.json entry {pos} lacks Config or Layers")
            cfg_member = source._resolve(item["Config"], "config")
            config_raw = source._read_member(cfg_member, "config")
            config = ImageConfig.from_bytes(config_raw)
            cfg_digest = sha256_bytes(config_raw)
            source._by_digest[str(cfg_digest)] = cfg_member
            layer_members = [source._resolve(x, "layer") for x in item["Layers"]]
            names = [str(x) for x in item.get("RepoTags") or []]
            found = oci.get(str(cfg_digest))
            if found is not None and all(str(d.digest) in source._by_digest for d in found[0].layers):
                manifest = found[0]
            else:
                manifest = _synthesize(source, config_raw, layer_members, config)
            source.entries.append(ArchiveEntry(pos, names, manifest, config))
    else:
        # an OCI layout tar without manifest.json (e.g. `docker save` of Engine 25 with a custom
        # tool, or an oci-archive): its index.json entries are the images
        for pos, (cfg_key, (manifest, names)) in enumerate(oci.items()):
            config_member = source._by_digest.get(cfg_key)
            if not config_member:
                continue
            config = ImageConfig.from_bytes(source._read_member(config_member, "config"))
            source.entries.append(ArchiveEntry(pos, names, manifest, config))
    if not source.entries:
        raise ManifestError(f"reading {label}: no images in the archive (neither manifest.json nor index.json)")
    return source


def _familiar(name: str) -> str:
    try:
        return DockerReference.parse(name).familiar
    except InvalidReferenceError:
        return name


def describe_entries(source: ArchiveSource) -> str:
    return "; ".join(
        f"@{e.position}: {', '.join(e.names) if e.names else '<untagged>'}" for e in source.entries
    )


def select(source: ArchiveSource, name: str = "", index: int | None = None) -> ArchiveEntry:
    """The entry named ``name`` (``NAME:TAG``) or at position ``index``; the only one when neither."""
    if index is not None:
        if 0 <= index < len(source.entries):
            return source.entries[index]
        raise ImageNotFoundError(
            f"reading {source.name}: no image @{index}; the archive holds {len(source.entries)} "
            f"({describe_entries(source)})"
        )
    if name:
        want = _familiar(name)
        for e in source.entries:
            if any(_familiar(n) == want for n in e.names):
                return e
        raise ImageNotFoundError(
            f"reading {source.name}: no image named {name!r}; the archive holds {describe_entries(source)} "
            "(pick one with FILE:NAME:TAG or FILE:@N)"
        )
    if len(source.entries) == 1:
        return source.entries[0]
    raise ImageNotFoundError(
        f"reading {source.name}: the archive holds {len(source.entries)} images ({describe_entries(source)}); "
        "pick one with FILE:NAME:TAG or FILE:@N"
    )


def image_from_entry(source: ArchiveSource, entry: ArchiveEntry, reference: str,
                     platform: Platform | None = None) -> Image:
    if platform is not None and entry.config.architecture and not entry.config.platform.matches(platform):
        raise ManifestError(
            f"{reference} is a {entry.config.platform} image, not {platform}; drop --platform or pick another image"
        )
    return Image(entry.manifest, source, reference=reference, config=entry.config)


def open_image(path: str | os.PathLike[str], name: str = "", index: int | None = None, *,
               platform: Platform | None = None) -> Image:
    """``docker-archive:PATH[:NAME:TAG]`` / ``PATH:@N`` as an ``Image`` (blobs read lazily)."""
    source = read_archive(path)
    entry = select(source, name, index)
    suffix = f":@{index}" if index is not None else (f":{name}" if name else "")
    return image_from_entry(source, entry, f"docker-archive:{path}{suffix}", platform)


# --- writing -------------------------------------------------------------------------------------


def _tar_header(name: str, size: int, *, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _tag_names(names: Iterable[str], where: str) -> list[str]:
    out = []
    for n in names:
        ref = DockerReference.parse(n)
        if not ref.tag or ref.digest:
            raise InvalidReferenceError(f"writing {where}: image names in an archive need a tag and no digest, got {n!r}")
        out.append(ref.familiar)
    return out


@dataclass
class _Written:
    """An image written to the archive, and the names it goes by."""

    manifest: Manifest
    names: list[str]


class ArchiveSink:
    """Writes a docker-archive that Engine 20.10 *and* 25+ load: an OCI layout plus ``manifest.json``
    and ``repositories``. Blobs are appended as they arrive (the descriptor gives each tar header its
    size); ``close`` adds the metadata and renames the temp file onto ``path``. Several images may be
    put into one archive; shared blobs are written once.

    ``names`` are the ``RepoTags`` of images put without their own ``names=``.
    """

    #: copy keeps uncompressed layers uncompressed here (it is what `docker save` writes too)
    preserve_layer_compression = True

    def __init__(self, path: str | os.PathLike[str], names: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.name = f"docker-archive:{self.path}"
        self.names = _tag_names(names, self.name)
        self._images: list[_Written] = []
        self._blobs: set[str] = set()
        self._closed = False
        parent = self.path.parent
        if not parent.is_dir():
            raise SourceError(f"writing {self.name}: directory {parent} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent)
        self._tmp = Path(tmp)
        self._f = os.fdopen(fd, "wb")
        for d in ("blobs/", "blobs/sha256/"):
            self._f.write(_tar_header(d, 0, directory=True))
        self._put_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _put_bytes(self, name: str, data: bytes) -> None:
        self._f.write(_tar_header(name, len(data)))
        self._f.write(data)
        self._f.write(_pad(len(data)))

    def has_blob(self, descriptor: Descriptor) -> bool:
        return str(descriptor.digest) in self._blobs

    def put_blob(self, descriptor: Descriptor, stream: BinaryIO) -> None:
        digest, size = descriptor.digest, descriptor.size
        if str(digest) in self._blobs:
            return
        start = self._f.tell()
        self._f.write(_tar_header(_BLOB_PREFIX + digest.hex, size))
        h = digest.new_hash()
        done = 0
        while done < size:
            chunk = stream.read(min(CHUNK, size - done))
            if not chunk:
                break
            h.update(chunk)
            self._f.write(chunk)
            done += len(chunk)
        extra = stream.read(1)  # also lets a verifying stream run its end-of-blob check
        actual = f"{digest.algorithm}:{h.hexdigest()}"
        if done != size or extra or actual != digest:
            self._f.seek(start)
            self._f.truncate()
            raise DigestMismatchError(digest, f"{actual} ({done}{'+' if extra else ''} of {size} bytes)",
                                      "blob", self.name)
        self._f.write(_pad(size))
        self._blobs.add(str(digest))

    def put_image(self, image: Image, names: Iterable[str] | None = None) -> None:
        manifest = image.manifest
        missing = [str(d.digest) for d in image.blobs() if str(d.digest) not in self._blobs]
        if missing:
            raise SourceError(f"writing {self.name}: blobs {', '.join(missing)} were not put before the manifest")
        data = manifest.to_bytes()
        digest = sha256_bytes(data)
        if str(digest) not in self._blobs:
            self._put_bytes(_BLOB_PREFIX + digest.hex, data)
            self._blobs.add(str(digest))
        tags = _tag_names(names, self.name) if names is not None else self.names
        for w in self._images:
            if w.manifest.digest() == digest:  # the same image again: one entry, more names
                w.names.extend(t for t in tags if t not in w.names)
                return
        self._images.append(_Written(manifest, list(tags)))

    def _metadata(self) -> tuple[bytes, bytes, bytes]:
        index_entries: list[dict[str, Any]] = []
        legacy: list[dict[str, Any]] = []
        repositories: dict[str, dict[str, str]] = {}
        for w in self._images:
            desc = w.manifest.descriptor()
            refs = [DockerReference.parse(n) for n in w.names]
            for ref in refs:
                entry = desc.to_json()
                entry["annotations"] = {ANNOTATION_IMAGE_NAME: str(ref), ANNOTATION_REF_NAME: ref.tag}
                index_entries.append(entry)
            if not refs:
                index_entries.append(desc.to_json())
            layers = [d for d in w.manifest.layers if mt.is_layer(d.media_type)]
            legacy.append({
                "Config": _BLOB_PREFIX + w.manifest.config.digest.hex,
                "RepoTags": [r.familiar for r in refs] or None,
                "Layers": [_BLOB_PREFIX + d.digest.hex for d in layers],
            })
            for ref in refs:
                if layers and ref.tag:
                    # only pre-1.10 loaders read this file; Engine 25 writes the top layer's id here too
                    name = ref.familiar.rsplit(":", 1)[0]
                    repositories.setdefault(name, {})[ref.tag] = layers[-1].digest.hex
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": index_entries}
        return (json.dumps(index, separators=(",", ":")).encode(),
                json.dumps(legacy, separators=(",", ":")).encode(),
                json.dumps(repositories, separators=(",", ":")).encode())

    def close(self) -> None:
        """Finish the archive and move it onto ``path`` (the commit point)."""
        if self._closed:
            return
        try:
            index, legacy, repositories = self._metadata()
            self._put_bytes("index.json", index)
            self._put_bytes("manifest.json", legacy)
            if repositories != b"{}":
                self._put_bytes("repositories", repositories)
            self._f.write(b"\0" * (2 * tarfile.BLOCKSIZE))
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self._tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Drop the partial archive; ``path`` is left as it was."""
        self._closed = True
        self._f.close()
        self._tmp.unlink(missing_ok=True)
