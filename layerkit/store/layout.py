"""An OCI image layout on disk: content-addressed blobs plus ``index.json`` naming the images.

The layout is spec-conformant (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``), so skopeo, umoci
and containerd read what layerkit writes. layerkit keeps its own state in ``.layerkit/`` inside it
(ingest temp files and lock files), which other tools ignore.

Integrity contract (after umoci's ``oci/cas/dir``):

- A blob is written to a temp file in ``.layerkit/ingest/``, hashed while it is copied in 1 MiB chunks,
  fsynced, checked against the expected digest and size, renamed to ``blobs/<alg>/<hex>`` and the
  directory fsynced. A crash or a bad stream never leaves a blob under a digest it does not have.
- ``put_blob`` is idempotent: an existing blob of the right size is not rewritten (its mtime is
  refreshed so gc's grace period covers the new user).
- ``index.json`` is rewritten whole (temp + fsync + rename) under an exclusive lock; readers need no lock.
- ``open_blob`` returns the raw file; ``Image.open_blob`` wraps it in a verifying reader.

Garbage-collection protocol: a writer holds ``lock()`` (shared) from its first blob until its tag is
set; ``gc`` takes the same lock exclusively, so it runs only when no write is in flight. On top of
that, gc never deletes a blob or temp file modified within its grace period, which protects writers
that do not know the protocol (another tool writing into the same layout).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from .. import mediatypes as mt
from ..digest import CHUNK, Digest, Hasher, VerifyingReader
from ..errors import (
    BlobNotFoundError,
    CorruptStoreError,
    DigestError,
    DigestMismatchError,
    ImageNotFoundError,
    InvalidDigestError,
    InvalidReferenceError,
    ManifestError,
    StoreError,
)
from ..image import Image
from ..spec import (
    ANNOTATION_REF_NAME,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    canonical_json,
    parse_manifest_or_index,
)
from .lock import FileLock

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from .results import CheckResult, GcResult, ImageSummary

__all__ = [
    "GC_GRACE_SECONDS",
    "LAYOUT_VERSION",
    "BlobWriter",
    "OCILayout",
]

LAYOUT_VERSION = "1.0.0"
#: gc keeps unreferenced blobs and temp files younger than this (seconds).
GC_GRACE_SECONDS = 600.0
#: JSON documents (manifests, indexes, configs) larger than this are refused rather than loaded.
MAX_JSON_SIZE = 64 << 20

_STATE = ".layerkit"
_REF_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
#: image-spec annotations.md, ``org.opencontainers.image.ref.name``
_REF_NAME_RE = rf"^{_REF_COMPONENT}(?:/{_REF_COMPONENT})*$"  # compiled by ``re`` on first use


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    import tempfile  # with shutil, bz2, lzma and random: 7 ms that readers of the store never need

    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _as_digest(value: Digest | str | Descriptor) -> Digest:
    return value.digest if isinstance(value, Descriptor) else Digest(value)


def _is_digest(text: str) -> bool:
    try:
        Digest(text)
    except InvalidDigestError:
        return False
    return True



class BlobWriter:
    """A write-only sink that becomes a blob on ``commit``: hashes and counts as bytes pass, so the
    digest is known without reading the file back. Use through ``OCILayout.blob_writer()``."""

    def __init__(self, layout: OCILayout, algorithm: str = "sha256") -> None:
        self._layout = layout
        layout._ingest_dir.mkdir(parents=True, exist_ok=True)
        import tempfile
        from pathlib import Path

        fd, tmp = tempfile.mkstemp(dir=layout._ingest_dir, prefix="blob-", suffix=".tmp")
        self._tmp = Path(tmp)
        self._file: IO[bytes] = os.fdopen(fd, "wb", buffering=CHUNK)
        self._hasher = Hasher(self._file, algorithm)
        self._closed = False

    # --- file-like sink ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._hasher.size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._hasher.write(memoryview(data).cast("B"))

    def tell(self) -> int:
        return self._hasher.size

    def flush(self) -> None:
        self._file.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._closed

    # --- outcome ----------------------------------------------------------------------------------

    def digest(self) -> Digest:
        return self._hasher.digest()

    def commit(
        self, expected: Descriptor | Digest | str | None = None, size: int | None = None
    ) -> tuple[Digest, int]:
        """Make the bytes written so far a blob. With ``expected`` (a descriptor, or a digest plus
        ``size``) they must match, else ``DigestMismatchError`` and nothing is stored."""
        if self._closed:
            raise StoreError(f"committing blob {self._tmp.name}: the writer is already closed")
        want_size = size
        want: Digest | None = None
        if isinstance(expected, Descriptor):
            want, want_size = expected.digest, expected.size
        elif expected is not None:
            want = Digest(expected)
        actual = self.digest()
        try:
            if want is not None and (want != actual or (want_size is not None and want_size != self.size)):
                shown = str(actual)
                if want_size not in (None, self.size):
                    shown += f" ({self.size} bytes, expected {want_size})"
                raise DigestMismatchError(want, shown, "blob")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._layout._install(self._tmp, actual, self.size)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return actual, self.size

    def abort(self) -> None:
        """Throw the bytes away (idempotent); used on errors and when leaving without ``commit``."""
        if not self._closed:
            self._closed = True
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class OCILayout:
    """An OCI image layout directory; implements ``BlobSource`` so ``Image`` can read from it.

    Reading goes by plain path strings: ``pathlib`` costs a command ~4 ms to import, and a read of a
    layout needs none of it. The :class:`~pathlib.Path` attributes (``root`` …) are made on first use.
    """

    def __init__(self, root: str | os.PathLike[str], create: bool = False) -> None:
        self._dir = os.fspath(root)
        #: human-readable origin for messages (``BlobSource.name``)
        self.name = f"oci:{self._dir.rstrip('/') or '/'}"
        self._index_json = os.path.join(self._dir, "index.json")
        state = os.path.join(self._dir, _STATE)
        self._index_lock = FileLock(os.path.join(state, "index.lock"), "index")
        self._ingest_lock = FileLock(os.path.join(state, "ingest.lock"), "gc")
        layout_file = os.path.join(self._dir, "oci-layout")
        if create and not os.path.isfile(layout_file):
            self._create()
        try:
            with open(layout_file, "rb") as f:
                raw = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise StoreError(
                f"opening {self.name}: not an OCI image layout (no oci-layout file); "
                "check the path or write an image there first"
            ) from None
        try:
            version = json.loads(raw).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
        if version != LAYOUT_VERSION:
            raise CorruptStoreError(
                f"opening {self.name}: oci-layout declares imageLayoutVersion {version!r}; "
                f"only {LAYOUT_VERSION!r} is supported"
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._dir}>"

    @cached_property
    def root(self) -> Path:
        from pathlib import Path

        return Path(self._dir)

    @cached_property
    def _blobs_dir(self) -> Path:
        return self.root / "blobs"

    @cached_property
    def _state_dir(self) -> Path:
        return self.root / _STATE

    @cached_property
    def _ingest_dir(self) -> Path:
        return self._state_dir / "ingest"

    @cached_property
    def _index_file(self) -> Path:
        from pathlib import Path

        return Path(self._index_json)

    def _create(self) -> None:
        (self._blobs_dir / "sha256").mkdir(parents=True, exist_ok=True)
        with self._index_lock.exclusive():
            if not self._index_file.exists():
                index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
                _atomic_write(self._index_file, canonical_json(index), self._state_dir)
            layout_file = self.root / "oci-layout"
            if not layout_file.exists():  # written last: its presence means "a complete layout"
                layout_doc = canonical_json({"imageLayoutVersion": LAYOUT_VERSION})
                _atomic_write(layout_file, layout_doc, self._state_dir)

    # --- locking ------------------------------------------------------------------------------------

    @contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the writers' (shared) lock: gc waits until it is released. Wrap a whole write —
        from the first blob to the tag — so nothing written is collected before it is reachable."""
        with self._ingest_lock.shared(timeout):
            yield

    # --- blobs -------------------------------------------------------------------------------------

    def blob_path(self, digest: Digest | str) -> Path:
        from pathlib import Path

        return Path(self._blob_file(Digest(digest)))

    def _blob_file(self, digest: Digest) -> str:
        return f"{self._dir}/blobs/{digest.algorithm}/{digest.hex}"

    def has_blob(self, digest: Digest | str | Descriptor) -> bool:
        """Whether the blob is stored (for a descriptor: with the size it promises)."""
        try:
            st = os.stat(self._blob_file(_as_digest(digest)))
        except FileNotFoundError:
            return False
        return not isinstance(digest, Descriptor) or st.st_size == digest.size

    def open_blob(self, descriptor: Descriptor | Digest | str) -> BinaryIO:
        """The raw stored bytes (not verified here: ``Image.open_blob`` verifies as it reads)."""
        digest = _as_digest(descriptor)
        try:
            return open(self._blob_file(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(digest, self.name) from None

    def read_blob(self, descriptor: Descriptor, *, what: str = "blob") -> bytes:
        """A small blob (a JSON document), verified against its digest and size."""
        if descriptor.size > MAX_JSON_SIZE:
            raise ManifestError(f"reading {what} {descriptor.digest}: {descriptor.size} bytes is too large")
        with VerifyingReader(self.open_blob(descriptor), descriptor.digest, descriptor.size, what=what,
                             source=self.name) as f:
            return f.read()

    @contextmanager
    def blob_writer(self, algorithm: str = "sha256") -> Iterator[BlobWriter]:
        """A sink for producers that stream (a layer writer): write, then ``commit()``. Leaving the
        block without committing (or with an exception) removes the temp file."""
        with self.lock():
            writer = BlobWriter(self, algorithm)
            try:
                yield writer
            finally:
                if not writer.closed:
                    writer.abort()

    def put_blob(self, stream: BinaryIO | IO[bytes], expected: Descriptor | None = None) -> tuple[Digest, int]:
        """Copy ``stream`` into a blob and return its digest and size. With ``expected``, the bytes
        must match it (``DigestMismatchError`` otherwise, nothing stored); when that blob is
        already here, the stream is not read at all."""
        if expected is not None and self._reuse(expected.digest, expected.size):
            return expected.digest, expected.size
        algorithm = expected.digest.algorithm if expected is not None else "sha256"
        limit = expected.size + 1 if expected is not None else None  # one byte more reveals an overrun
        with self.blob_writer(algorithm) as w:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            readinto = getattr(stream, "readinto", None)
            while limit is None or w.size < limit:
                want = CHUNK if limit is None else min(CHUNK, limit - w.size)
                if readinto is not None:
                    n = readinto(view[:want])
                    if not n:
                        break
                    w.write(view[:n])
                else:
                    data = stream.read(want)
                    if not data:
                        break
                    w.write(data)
            return w.commit(expected)

    def put_json(self, doc: Any) -> tuple[Digest, int]:
        """Store a JSON document: ``bytes`` as given (their digest is what references use), anything
        else rendered canonically."""
        data = doc if isinstance(doc, (bytes, bytearray)) else canonical_json(doc)
        with self.blob_writer() as w:
            w.write(data)
            return w.commit()

    def _reuse(self, digest: Digest, size: int | None) -> bool:
        """True when the blob exists with the right size; refreshes its mtime for gc's grace period."""
        path = self.blob_path(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        if size is not None and st.st_size != size:
            return False  # damaged: let the caller write a verified copy over it
        try:
            os.utime(path)
        except PermissionError:  # a read-only layout we may read but not write: reuse is still right
            pass
        return True

    def _install(self, tmp: Path, digest: Digest, size: int) -> None:
        """Rename a verified, fsynced temp file into place. An existing file is replaced too: the new
        bytes are verified, the old ones may have rotted, and readers of the old inode are unaffected."""
        target = self.blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o644)
        os.rename(tmp, target)
        _fsync_dir(target.parent)

    # --- index.json ------------------------------------------------------------------------------

    def _read_index_doc(self) -> dict[str, Any]:
        try:
            with open(self._index_json, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise CorruptStoreError(f"reading {self.name}: index.json is missing; run `layerkit check`") from None
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise CorruptStoreError(f"reading {self.name}/index.json: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
            raise CorruptStoreError(f"reading {self.name}/index.json: not an image index")
        doc.setdefault("manifests", [])
        return doc

    def entries(self) -> list[Descriptor]:
        """Every ``index.json`` entry, tagged or not, in file order."""
        doc = self._read_index_doc()
        try:
            return [Descriptor.from_json(d, f"index.json entry {i}") for i, d in enumerate(doc["manifests"])]
        except ManifestError as exc:
            raise CorruptStoreError(f"reading {self.name}: {exc}") from None

    def normalize_name(self, name: str) -> str:
        """The form a tag is stored under; a plain layout keeps names as given, if the image-spec's
        ``ref.name`` grammar allows them."""
        if not re.match(_REF_NAME_RE, name):
            raise InvalidReferenceError(
                f"invalid tag {name!r} for an OCI layout: use letters, digits and . _ - : @ + / between them"
            )
        return name

    def tags(self) -> dict[str, Descriptor]:
        out: dict[str, Descriptor] = {}
        for d in self.entries():
            name = d.annotations.get(ANNOTATION_REF_NAME)
            if name:
                out[name] = d
        return out

    @contextmanager
    def _edit_index(self) -> Iterator[list[dict[str, Any]]]:
        """Read-modify-write ``index.json`` under the exclusive index lock; written atomically."""
        with self._index_lock.exclusive():
            doc = self._read_index_doc()
            before = list(doc["manifests"])
            entries: list[dict[str, Any]] = list(before)
            yield entries
            if entries == before and doc.get("schemaVersion") == 2 and doc.get("mediaType") == mt.OCI_INDEX:
                return  # nothing changed: no rewrite, no fsync (a no-change rebuild re-tags the same image)
            doc["schemaVersion"] = 2
            doc["mediaType"] = mt.OCI_INDEX
            doc["manifests"] = entries
            _atomic_write(self._index_file, canonical_json(doc), self._state_dir)

    def set_tag(self, name: str, descriptor: Descriptor) -> Descriptor:
        """Point ``name`` at a manifest or index already stored here (replacing any previous target);
        with ``name=""`` add an untagged entry. Refuses if any blob the image needs is missing, so a
        tag never names an incomplete image. Returns the entry as written."""
        missing = self._missing(descriptor)
        if missing:
            raise BlobNotFoundError(
                missing[0], f"{self.name} (tagging {name or descriptor.digest}: write every blob before the tag)"
            )
        name = self.normalize_name(name) if name else ""
        annotations = {k: v for k, v in descriptor.annotations.items() if k != ANNOTATION_REF_NAME}
        if name:
            annotations[ANNOTATION_REF_NAME] = name
        entry = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size, annotations,
                           descriptor.platform, descriptor.urls, descriptor.artifact_type)
        with self._edit_index() as entries:
            if name:  # the name moves here; an untagged entry of this image becomes redundant (kept, it
                # would list the image twice and keep it alive through `rmi` + `gc`)
                def keep(e: dict[str, Any]) -> bool:
                    ref = (e.get("annotations") or {}).get(ANNOTATION_REF_NAME)
                    return ref != name and (bool(ref) or e.get("digest") != entry.digest)

                entries[:] = [e for e in entries if keep(e)]
            else:
                entries[:] = [e for e in entries if e.get("digest") != entry.digest
                              or (e.get("annotations") or {}).get(ANNOTATION_REF_NAME)]
                if any(e.get("digest") == entry.digest for e in entries):
                    return entry  # a tag already keeps this image
            entries.append(entry.to_json())
        return entry

    def remove_tag(self, name_or_digest: str) -> list[Descriptor]:
        """Untag: drop the entry named ``name`` (or every entry of a digest). Blobs stay until gc."""
        key = name_or_digest.partition("@")[2] if "@" in name_or_digest else name_or_digest
        by_digest = _is_digest(key)
        name = "" if by_digest else self.normalize_name(name_or_digest)
        removed: list[Descriptor] = []
        with self._edit_index() as entries:
            keep = []
            for e in entries:
                ref = (e.get("annotations") or {}).get(ANNOTATION_REF_NAME)
                if (by_digest and e.get("digest") == key) or (not by_digest and ref == name):
                    removed.append(Descriptor.from_json(e, "index.json entry"))
                else:
                    keep.append(e)
            entries[:] = keep
        if not removed:
            raise ImageNotFoundError(self._not_found(name_or_digest))
        return removed

    def put_manifest(self, document: Manifest | Index | bytes, name: str = "", *,
                     media_type: str = "", platform: Platform | None = None) -> Descriptor:
        """Store a manifest or index (its exact bytes) and record it in ``index.json`` under
        ``name`` (untagged when empty) — the commit point of a write."""
        if isinstance(document, (Manifest, Index)):
            data, media_type = document.to_bytes(), media_type or document.media_type
        else:
            data = bytes(document)
            media_type = media_type or parse_manifest_or_index(data).media_type
        with self.lock():
            digest, size = self.put_json(data)
            return self.set_tag(name, Descriptor(media_type, digest, size, platform=platform))

    # --- resolving and reading images -------------------------------------------------------------

    def _not_found(self, name: str) -> str:
        tags = sorted(self.tags())
        have = ", ".join(tags) if tags else "none"
        return f"image {name!r} not found in {self.name} (tags: {have})"

    def resolve(self, name_or_digest: str = "") -> Descriptor:
        """The ``index.json`` entry for a tag or digest (``name@digest`` too). An empty name means the
        layout's only entry. A digest not in ``index.json`` (e.g. one platform of a tagged index)
        resolves when its blob is stored."""
        entries = self.entries()
        if not name_or_digest:
            if len(entries) == 1:
                return entries[0]
            tags = sorted(self.tags())
            raise ImageNotFoundError(
                f"choosing an image in {self.name}: it holds {len(entries)} images; name one with a tag "
                f"({', '.join(tags) or 'none tagged'}) or a digest"
            )
        key = name_or_digest.partition("@")[2] if "@" in name_or_digest else name_or_digest
        if _is_digest(key):
            digest = Digest(key)
            for d in entries:
                if d.digest == digest:
                    return d
            if self.has_blob(digest):
                with self.open_blob(digest) as f:
                    data = f.read(MAX_JSON_SIZE + 1)
                try:
                    doc = parse_manifest_or_index(data)
                except ManifestError as exc:
                    raise ImageNotFoundError(f"resolving {digest} in {self.name}: not a manifest ({exc})") from None
                return Descriptor(doc.media_type, digest, len(data))
            raise ImageNotFoundError(self._not_found(name_or_digest))
        found = self.tags().get(self.normalize_name(name_or_digest))
        if found is None:
            found = self._resolve_other(name_or_digest, entries)
        if found is None:
            raise ImageNotFoundError(self._not_found(name_or_digest))
        return found

    def _resolve_other(self, name: str, entries: list[Descriptor]) -> Descriptor | None:
        """Hook for stores that accept more spellings (e.g. a short digest)."""
        return None

    def reference_for(self, name_or_digest: str) -> str:
        """How an image read from here is named in messages and ``Image.reference``."""
        sep = "@" if _is_digest(name_or_digest) else ":"
        return f"{self.name}{sep}{name_or_digest}"

    def image(self, name_or_digest: str = "", platform: Platform | str | None = None) -> Image:
        """The image a tag or digest names. A tag on an index selects ``platform`` (default: this
        host); a single-platform image must match an explicit ``platform``."""
        want = Platform.parse(platform) if isinstance(platform, str) else platform
        desc = self.resolve(name_or_digest)
        reference = self.reference_for(desc.annotations.get(ANNOTATION_REF_NAME) or str(desc.digest))
        index: Index | None = None
        for _depth in range(8):  # an index may nest indexes; bound it against cycles
            raw = self.read_blob(desc, what="manifest")
            try:
                doc = parse_manifest_or_index(raw, desc.media_type)
            except ManifestError as exc:  # name the image: the parser only knows it read "a manifest"
                raise ManifestError(f"{reference}: manifest {desc.digest}: {exc}") from None
            if isinstance(doc, Index):
                index = doc
                desc = doc.select(want)
                continue
            image = Image(doc, self, reference=reference, index=index)
            if want is not None and index is None and not image.platform.matches(want):
                raise ManifestError(
                    f"{reference} is a {image.platform} image, not {want}; drop --platform or pick another image"
                )
            return image
        raise ManifestError(f"{reference}: indexes nested too deeply")

    def _children(self, desc: Descriptor) -> list[Descriptor]:
        """The descriptors a manifest or index references (blobs are verified when read)."""
        if desc.media_type not in mt.MANIFEST_TYPES and desc.media_type not in mt.INDEX_TYPES:
            return []
        doc = json.loads(self.read_blob(desc, what="manifest"))
        if not isinstance(doc, dict):
            raise ManifestError(f"parsing manifest {desc.digest}: not a JSON object")
        out: list[Descriptor] = []
        if isinstance(doc.get("config"), Mapping):
            out.append(Descriptor.from_json(doc["config"], f"config of {desc.digest}"))
        for key in ("layers", "manifests"):
            for i, d in enumerate(doc.get(key) or ()):
                out.append(Descriptor.from_json(d, f"{key}[{i}] of {desc.digest}"))
        return out

    def _missing(self, desc: Descriptor) -> list[Digest]:
        """Blobs the descriptor needs (itself and everything below it) that are not here."""
        missing: list[Digest] = []
        stack, seen = [desc], set()
        while stack:
            d = stack.pop()
            if d.digest in seen:
                continue
            seen.add(d.digest)
            if not self.has_blob(d.digest):
                missing.append(d.digest)
                continue
            stack.extend(self._children(d))
        return missing

    def summaries(self) -> list[ImageSummary]:
        """One summary per ``index.json`` entry (tags sorted, untagged last)."""
        from .results import ImageSummary

        out = []
        for desc in self.entries():
            name = desc.annotations.get(ANNOTATION_REF_NAME, "")
            sizes: dict[Digest, int] = {}
            platforms: list[Platform] = []
            created = ""
            stack = [desc]
            while stack:
                d = stack.pop()
                if d.digest in sizes:
                    continue
                sizes[d.digest] = d.size
                try:  # a damaged image is still listed (`layerkit check` says what is wrong with it)
                    if d.media_type in mt.MANIFEST_TYPES:
                        manifest = Manifest.from_bytes(self.read_blob(d, what="manifest"), d.media_type)
                        config = ImageConfig.from_bytes(self.read_blob(manifest.config, what="config"))
                        platforms.append(config.platform)
                        created = max(created, config.created)
                    stack.extend(reversed(self._children(d)))
                except (StoreError, DigestError, ManifestError):
                    if d.platform is not None:
                        platforms.append(d.platform)
            out.append(ImageSummary(name, desc, created, sum(sizes.values()), tuple(platforms)))
        return sorted(out, key=lambda s: (not s.name, s.name))

    # --- maintenance ---------------------------------------------------------------------------

    def _reachable(self) -> set[Digest]:
        """Every blob reachable from ``index.json``. Refuses (rather than guesses) when a manifest
        that decides what is reachable is missing or unreadable: gc must never delete live data."""
        reachable: set[Digest] = set()
        stack = list(self.entries())
        while stack:
            d = stack.pop()
            if d.digest in reachable:
                continue
            reachable.add(d.digest)
            try:
                stack.extend(self._children(d))
            except (BlobNotFoundError, DigestError, ManifestError, ValueError) as exc:
                raise CorruptStoreError(
                    f"collecting garbage in {self.name}: cannot read {d.digest} ({exc}); "
                    "run `layerkit check` and remove the damaged image first"
                ) from None
        return reachable

    def _blob_files(self) -> Iterator[tuple[Path, Digest | None]]:
        """Every file under ``blobs/`` with the digest its path names (None when it names none)."""
        if not self._blobs_dir.is_dir():
            return
        for algo_dir in sorted(self._blobs_dir.iterdir()):
            if not algo_dir.is_dir():
                yield algo_dir, None
                continue
            for path in sorted(algo_dir.iterdir()):
                try:
                    yield path, Digest(f"{algo_dir.name}:{path.name}")
                except InvalidDigestError:
                    yield path, None

    def gc(self, dry_run: bool = False, *, grace: float = GC_GRACE_SECONDS,
           timeout: float | None = None) -> GcResult:
        """Delete blobs no ``index.json`` entry reaches, and temp files of crashed writers. Waits
        (up to ``timeout``) for running writers; keeps anything modified in the last ``grace`` s."""
        from .results import GcResult

        removed: list[Digest] = []
        kept: list[Digest] = []
        freed = 0
        temps = 0
        with self._ingest_lock.exclusive(timeout):
            reachable = self._reachable()
            cutoff = time.time() - grace
            for path, digest in self._blob_files():
                if digest is None or digest in reachable:
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if st.st_mtime > cutoff:
                    kept.append(digest)
                    continue
                removed.append(digest)
                freed += st.st_size
                if not dry_run:
                    path.unlink(missing_ok=True)
            if self._ingest_dir.is_dir():
                for tmp in self._ingest_dir.iterdir():
                    if tmp.stat().st_mtime <= cutoff:
                        temps += 1
                        if not dry_run:
                            tmp.unlink(missing_ok=True)
            if removed and not dry_run:
                for algo_dir in {self.blob_path(d).parent for d in removed}:
                    _fsync_dir(algo_dir)
        return GcResult(removed, freed, kept, temps, dry_run)

    def check(self, repair: bool = False) -> CheckResult:
        """Re-hash every blob against its name and check that every entry of ``index.json`` is a
        complete, parseable image. ``repair`` deletes corrupt blobs so a new pull stores them again."""
        from .results import CheckResult

        problems: list[str] = []
        corrupt: dict[Digest, str] = {}
        n_blobs = n_bytes = 0
        try:
            version = json.loads((self.root / "oci-layout").read_bytes()).get("imageLayoutVersion")
            if version != LAYOUT_VERSION:
                problems.append(f"oci-layout: imageLayoutVersion is {version!r}, expected {LAYOUT_VERSION!r}")
        except (OSError, ValueError, AttributeError) as exc:
            problems.append(f"oci-layout: unreadable ({exc})")
        for path, digest in self._blob_files():
            rel = path.relative_to(self.root)
            if digest is None:
                problems.append(f"{rel}: not named by a digest")
                continue
            hasher = Hasher(algorithm=digest.algorithm)
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    hasher.write(view[:n])
            n_blobs += 1
            n_bytes += hasher.size
            actual = hasher.digest()
            if actual != digest:
                corrupt[digest] = actual
                problems.append(f"blob {digest} is corrupt: its content hashes to {actual}")
        try:
            entries = self.entries()
        except CorruptStoreError as exc:
            problems.append(str(exc))
            entries = []
        for entry in entries:
            label = entry.annotations.get(ANNOTATION_REF_NAME) or str(entry.digest)
            problems.extend(f"image {label}: {p}" for p in self._check_image(entry, corrupt))
        repaired: list[Digest] = []
        if repair and corrupt:
            with self._ingest_lock.exclusive():
                for digest in corrupt:
                    self.blob_path(digest).unlink(missing_ok=True)
                    repaired.append(digest)
        return CheckResult(not problems, problems, n_blobs, n_bytes, repaired)

    def _check_image(self, entry: Descriptor, corrupt: Mapping[Digest, str]) -> list[str]:
        problems: list[str] = []
        stack: list[tuple[Descriptor, str]] = [(entry, "manifest")]
        seen: set[Digest] = set()
        while stack:
            d, what = stack.pop()
            if d.digest in seen:
                continue
            seen.add(d.digest)
            path = self.blob_path(d.digest)
            if not path.is_file():
                problems.append(f"{what} {d.digest} is missing")
                continue
            if path.stat().st_size != d.size:
                problems.append(f"{what} {d.digest} is {path.stat().st_size} bytes, its descriptor says {d.size}")
                continue
            if d.digest in corrupt:
                problems.append(f"{what} {d.digest} is corrupt")
                continue
            try:
                if d.media_type in mt.INDEX_TYPES or d.media_type in mt.MANIFEST_TYPES:
                    doc = parse_manifest_or_index(self.read_blob(d), d.media_type)
                    if isinstance(doc, Manifest):
                        stack.append((doc.config, "config"))
                        stack.extend((layer, f"layer {i}") for i, layer in enumerate(doc.layers))
                    else:
                        stack.extend((m, "manifest") for m in doc.manifests)
                elif d.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
                    ImageConfig.from_bytes(self.read_blob(d, what="config"))
            except (ManifestError, DigestError) as exc:
                problems.append(f"{what} {d.digest}: {exc}")
        return problems
