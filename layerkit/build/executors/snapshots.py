"""Unpacked layer snapshots for overlayfs, keyed by chain ID under the store's ``snapshots_dir``.

The layout is containerd's overlay snapshotter's: one directory per layer, ``<snapshots_dir>/<chain-id
hex>/``, holding *only that layer's* entries with its OCI whiteouts turned into overlayfs form — a
0/0 character device for ``.wh.NAME`` and ``trusted.overlay.opaque=y`` on the directory for
``.wh..wh..opq``. Stacking the directories of an image newest-first as ``lowerdir=`` gives the merged
root filesystem with no copying, and a layer shared by many images (same chain ID) is unpacked once.

A snapshot is written into a temp directory beside the final one and renamed into place, so a
crash or a concurrent builder never leaves a half-written snapshot under a chain ID; the loser of
a race discards its copy.

As root, snapshots carry the layer's owners, device nodes and ``trusted.overlay.opaque``. Without
root they are the *userxattr* flavour, kept apart under ``<snapshots_dir>/userxattr/`` for overlayfs
mounted with ``userxattr`` in a user namespace (and fuse-overlayfs): the opaque marker is
``user.overlay.opaque``; whiteouts are still 0/0 character devices (any user may make those since
Linux 5.8); every file belongs to the caller (the image's owners are read back from the layers
when a step's changes are written); device nodes and xattrs an unprivileged user cannot set
(``security.capability``, ``trusted.*``) are left out.
Extraction goes through :class:`layerkit.union.safefs.SafeRoot` with ``resolve="never"``, so a
hostile layer cannot write outside its directory.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from ...errors import LayerError
from ...spec import chain_ids
from ...streams import ReadAhead
from ...tarfs.entry import Entry, EntryType
from ...tarfs.limits import Limits, default_limits
from ...tarfs.paths import clean_member
from ...tarfs.reader import iter_entries
from ...tarfs.tree import DEFAULT_XATTR_FILTER
from ...tarfs.whiteout import opaque_path, whiteout_path
from ...union.safefs import SafeRoot, copy_to_fd
from ...union.unpack import unpack

if TYPE_CHECKING:  # pragma: no cover - typing only
    from collections.abc import Callable, Iterable

    from ...image import Image, Layer
    from ...store import LocalStore
    from ...tarfs.writer import LayerWriter

__all__ = ["OPAQUE_XATTR", "USER_OPAQUE_XATTR", "LowerDirWriter", "SnapshotTee", "Snapshots", "StagedSnapshot",
           "extract_overlay_layer", "match_layer", "unpacked_entry"]

OPAQUE_XATTR = "trusted.overlay.opaque"
USER_OPAQUE_XATTR = "user.overlay.opaque"  # what overlayfs mounted with ``userxattr`` (rootless) writes


def extract_overlay_layer(tar_stream: BinaryIO, target_dir: str, *, layer: str = "",
                          limits: Limits | None = None, compressed_size: int | None = None,
                          userxattr: bool = False, listed: list[Entry] | None = None) -> None:
    """Write one layer's entries into the empty ``target_dir`` in overlayfs lower-dir form, within
    ``limits`` (``None``: the environment's defaults); ``userxattr``: the unprivileged flavour (see
    the module docstring). ``listed`` receives every entry in tar order (a union's member list)."""
    with SafeRoot(target_dir, resolve="never") as safe:
        lower = LowerDirWriter(safe, userxattr=userxattr)
        for entry, content in iter_entries(tar_stream, layer=layer, limits=limits, compressed_size=compressed_size):
            if listed is not None:
                listed.append(entry)
            lower.add(entry, content)
        lower.finish()


class LowerDirWriter:
    """One layer's entries, in layer order, written into an empty directory in overlayfs lower-dir
    form: what :func:`extract_overlay_layer` makes of the layer's tar, entry by entry.

    The target starts empty, so what exists in it is exactly what this writer made (``made``): a
    path not made yet needs no ``lstat`` before it is created, and a regular file gets its owner,
    mode, xattrs and times through the fd it was written with — one path resolution per file
    instead of six (this runs for every file of every layer a RUN step stands on)."""

    def __init__(self, safe: SafeRoot, *, userxattr: bool = False) -> None:
        self.userxattr = userxattr
        self._root: SafeRoot = _Unprivileged(safe) if userxattr else safe  # type: ignore[assignment]
        self._opaque_xattr = USER_OPAQUE_XATTR if userxattr else OPAQUE_XATTR
        self._made: set[str] = set()
        #: directory metadata, applied last: children change mtimes
        self._dirs: list[tuple[str, int, int, int, int]] = []

    def _ensure_parents(self, path: str) -> None:
        head = path.rpartition("/")[0]
        if head and head not in self._made:
            self._ensure_parents(head)
            self._root.mkdir(head, 0o755)
            self._made.add(head)

    def _clear(self, path: str) -> None:
        """Remove what an earlier entry of this layer put at ``path`` (a later one replaces it)."""
        if path in self._made:
            self._root.remove(path)
            prefix = path + "/"
            self._made.difference_update([p for p in self._made if p == path or p.startswith(prefix)])

    def _claim(self, path: str, t: EntryType) -> None:
        """Make room for a new entry at ``path`` (not a whiteout) and record it as made."""
        self._ensure_parents(path)
        if path in self._made:
            old = self._root.lstat(path)
            if old is not None and not (t is EntryType.DIR and stat.S_ISDIR(old.st_mode)):
                self._clear(path)
        self._made.add(path)

    def create_file(self, entry: Entry) -> int:
        """The fd (write-only) of the new regular file ``entry.path``; write its bytes, then
        :meth:`file_done`."""
        self._claim(entry.path, EntryType.FILE)
        return self._root.create_file(entry.path, 0o600)

    def file_done(self, fd: int, entry: Entry) -> None:
        """Owner, mode, xattrs and times of the file just written to ``fd`` (the caller closes it)."""
        _fd_metadata(fd, entry, self.userxattr)

    def add(self, entry: Entry, content: BinaryIO | None) -> None:
        """Write one entry as read from a layer (``content``: a FILE's bytes)."""
        root = self._root
        path = entry.path
        if path == ".":
            self._dirs.append((path, entry.mode, entry.uid, entry.gid, entry.mtime_ns))
            return
        if entry.is_opaque:
            self._ensure_parents(path)
            parent = path.rpartition("/")[0]
            if parent and parent not in self._made:
                root.mkdir(parent, 0o755)
                self._made.add(parent)
            root.setxattr(parent, self._opaque_xattr, b"y")
            return
        if entry.is_whiteout:
            self._ensure_parents(path)
            path = entry.whiteout_target
            self._clear(path)
            root.mknod(path, "char", 0, 0, 0)
            self._made.add(path)
            return
        t = entry.type
        if t is EntryType.FILE:
            assert content is not None
            fd = self.create_file(entry)
            try:
                copy_to_fd(content, fd)
                _fd_metadata(fd, entry, self.userxattr)
            finally:
                os.close(fd)
            return
        self._claim(path, t)
        if t is EntryType.DIR:
            root.mkdir(path, 0o700)
            for key, value in entry.xattrs.items():
                root.setxattr(path, key, value)
            self._dirs.append((path, entry.mode, entry.uid, entry.gid, entry.mtime_ns))
            return
        if t is EntryType.HARDLINK:
            root.link(path, entry.linkname)
            return  # the inode's metadata is the target's
        if t is EntryType.SYMLINK:
            root.symlink(path, entry.linkname)
        elif t is EntryType.CHAR or t is EntryType.BLOCK:
            root.mknod(path, "char" if t is EntryType.CHAR else "block", entry.mode, entry.devmajor, entry.devminor)
        elif t is EntryType.FIFO:
            root.mkfifo(path, entry.mode)
        mode = None if t is EntryType.SYMLINK else entry.mode
        root.set_attrs(path, owner=(entry.uid, entry.gid), mode=mode, mtime_ns=entry.mtime_ns)
        for key, value in entry.xattrs.items():  # after chown, which clears security.capability
            root.setxattr(path, key, value)

    def finish(self) -> None:
        """Apply the directories' metadata, deepest last-written first."""
        root = self._root
        for path, mode, uid, gid, mtime_ns in reversed(self._dirs):
            root.set_attrs(path if path != "." else "", owner=(uid, gid), mode=mode, mtime_ns=mtime_ns)
        self._dirs = []


def _fd_metadata(fd: int, entry: Entry, userxattr: bool) -> None:
    """Owner, mode, xattrs and times of a regular file just written to ``fd``, in the order
    :func:`extract_overlay_layer` applies them by path (see :class:`_Unprivileged` for ``userxattr``)."""
    if not userxattr:
        os.fchown(fd, entry.uid, entry.gid)
    os.fchmod(fd, entry.mode & 0o7777)  # after chown, which clears setuid/setgid
    for key, value in entry.xattrs.items():  # after chown, which clears security.capability
        try:
            os.setxattr(fd, key, value)
        except OSError as exc:
            if not userxattr or exc.errno not in _REFUSED:
                raise
    os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))


def _snapshot_xattr(name: str, is_dir: bool) -> bool:
    """Whether an xattr of an upper dir belongs in a snapshot: what a layer carries, plus the
    opaque marker of a directory (overlayfs' other bookkeeping — origin, impure — never does)."""
    return DEFAULT_XATTR_FILTER(name) or (is_dir and name == OPAQUE_XATTR)


def match_layer(upper: str, written: Iterable[tuple[Entry, str]], clamp_ns: int | None) -> None:
    """Bring the (unmounted) upper dir ``upper`` to what :func:`extract_overlay_layer` makes of
    the layer written from it: no sockets (a tar holds none), no xattrs the layer dropped, and
    each written entry with the times the layer gave it (mtime clamped to ``clamp_ns``; atime =
    mtime, as unpacking sets them)."""
    root_mode = 0o755  # a snapshot's root, as _atomic makes it; a layer never writes "./" from an upper dir
    os.chmod(upper, root_mode)
    restore: list[tuple[str, int, int]] = []
    stack = [upper]
    while stack:
        top = stack.pop()
        with os.scandir(top) as it:
            children = list(it)
        for child in children:
            st = child.stat(follow_symlinks=False)
            if stat.S_ISSOCK(st.st_mode):
                pst = os.lstat(top)
                restore.append((top, pst.st_atime_ns, pst.st_mtime_ns))
                os.unlink(child.path)
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            try:
                names = os.listxattr(child.path, follow_symlinks=False)
            except OSError:
                names = []
            for name in names:
                if not _snapshot_xattr(name, is_dir):
                    os.removexattr(child.path, name, follow_symlinks=False)
            if is_dir:
                stack.append(child.path)
    for path, atime, mtime in reversed(restore):
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
    for entry, host in written:
        if not host:  # whiteouts, opaque markers: already in overlay form
            continue
        mtime = entry.mtime_ns if clamp_ns is None else min(entry.mtime_ns, clamp_ns)
        os.utime(host, ns=(mtime, mtime), follow_symlinks=False)


def unpacked_entry(entry: Entry, clamp_ns: int | None) -> Entry:
    """``entry`` as reading back the layer :class:`~layerkit.tarfs.writer.LayerWriter` writes from
    it gives it: path and hard-link target cleaned, permission bits only, mtime clamped to
    ``clamp_ns``, size and device numbers only where the type has them, no empty xattrs (a PAX
    record with an empty value restores nothing)."""
    t = entry.type
    mtime = entry.mtime_ns if clamp_ns is None or entry.mtime_ns <= clamp_ns else clamp_ns
    if t is EntryType.HARDLINK:
        link = clean_member(entry.linkname)
    else:
        link = entry.linkname if t is EntryType.SYMLINK else ""
    dev = t is EntryType.CHAR or t is EntryType.BLOCK
    return Entry(entry.path if entry.path == "." else clean_member(entry.path), t, entry.mode & 0o7777, entry.uid,
                 entry.gid, entry.size if t is EntryType.FILE else 0, mtime, link,
                 entry.devmajor if dev else 0, entry.devminor if dev else 0,
                 {k: v for k, v in entry.xattrs.items() if v})


class SnapshotTee:
    """Stands in for the :class:`~layerkit.tarfs.writer.LayerWriter` of a layer whose snapshot is
    written at the same time (see :meth:`Snapshots.stage`): each entry goes to the layer and, as
    unpacking the layer would give it, to the snapshot.

    A regular file's bytes are read once, into the layer writer's buffer, and written from that
    same buffer into the snapshot's own new file (:class:`_TeeReader`): the two hold the same
    bytes even if the source changes meanwhile, and a later change to a context file can never
    reach the snapshot (no hard link to it). The layer writer's rules for a source whose size is
    not ``entry.size`` hold: shorter is an error, a longer file is cut. An entry the snapshot
    cannot take (one unpacking would refuse too, such as a path below a symlink from an ADDed
    archive) only drops the snapshot (:attr:`broken`): the layer is written as without it, and a
    step that needs the snapshot unpacks the layer, and reports."""

    def __init__(self, writer: LayerWriter, lower: LowerDirWriter, clamp_ns: int | None) -> None:
        self._writer = writer
        self._lower = lower
        self._clamp_ns = clamp_ns
        self.broken = False

    def add(self, entry: Entry, content: BinaryIO | None = None) -> None:
        self._add(entry, content, None)

    def add_file_from_path(self, entry: Entry, host_path: str) -> None:
        self._add(entry, None, host_path)

    def add_whiteout(self, path: str, *, mtime_ns: int = 0) -> None:
        self.add(Entry(whiteout_path(clean_member(path)), EntryType.FILE, mode=0o644, mtime_ns=mtime_ns))

    def add_opaque(self, dir_path: str, *, mtime_ns: int = 0) -> None:
        self.add(Entry(opaque_path(clean_member(dir_path)), EntryType.FILE, mode=0o644, mtime_ns=mtime_ns))

    def _plain(self, entry: Entry, content: BinaryIO | None, host_path: str | None) -> None:
        if host_path is None:
            self._writer.add(entry, content)
        else:
            self._writer.add_file_from_path(entry, host_path)

    def _add(self, entry: Entry, content: BinaryIO | None, host_path: str | None) -> None:
        if self.broken:
            self._plain(entry, content, host_path)
            return
        seen = unpacked_entry(entry, self._clamp_ns)
        if entry.type is not EntryType.FILE or entry.size == 0 or seen.is_whiteout:
            # a ".wh." file (ADD of such an archive) unpacks as a whiteout: no bytes to share
            self._plain(entry, content, host_path)
            try:
                self._lower.add(seen, io.BytesIO(b""))
            except (OSError, LayerError):
                self.broken = True
            return
        try:
            fd = self._lower.create_file(seen)
        except (OSError, LayerError):
            self.broken = True
            self._plain(entry, content, host_path)
            return
        try:
            if host_path is None:
                if content is None:
                    raise LayerError(f"writing {entry.path!r}: a file of {entry.size} bytes needs content")
                self._writer.add(entry, _TeeReader(content, fd, entry))  # type: ignore[arg-type]
            else:
                self._writer.add_file_from_path(entry, host_path, copy_to=fd)
            self._lower.file_done(fd, seen)
        finally:
            os.close(fd)


class _TeeReader:
    """The bytes of one file from a stream for the layer writer, written on into the snapshot's
    copy (``fd``) as they are read: one read, no second copy. (A host file goes through the
    writer's ``add_file_from_path(copy_to=)`` instead.)"""

    def __init__(self, source: BinaryIO, fd: int, entry: Entry) -> None:
        self._source = source
        self._fd = fd
        self._left = entry.size

    def readinto(self, buf: memoryview) -> int:
        readinto = getattr(self._source, "readinto", None)
        if readinto is not None:
            got = readinto(buf[: self._left]) or 0
        else:
            chunk = self._source.read(min(len(buf), self._left))
            got = len(chunk)
            buf[:got] = chunk
        if not got:
            return 0
        view = buf[:got]
        while view:
            view = view[os.write(self._fd, view):]
        self._left -= got
        return got

    def read(self, n: int = -1) -> bytes:
        """Only the writer's end-of-file check calls this."""
        return self._source.read(n)


class StagedSnapshot:
    """A snapshot being written beside the layer it belongs to (:meth:`Snapshots.stage`): fill it
    through :meth:`tee`, then :meth:`commit` it under the layer's chain ID — or :meth:`discard` it."""

    def __init__(self, snaps: Snapshots, clamp_ns: int | None) -> None:
        self._snaps = snaps
        self._clamp_ns = clamp_ns
        self.dir = Path(tempfile.mkdtemp(prefix=".tmp-copy-", dir=snaps.root))
        self.dir.chmod(0o755)  # as _atomic makes a snapshot's root
        self._safe: SafeRoot | None = SafeRoot(self.dir, resolve="never")
        self._lower = LowerDirWriter(self._safe, userxattr=snaps.userxattr)
        self._tees: list[SnapshotTee] = []

    def tee(self, writer: LayerWriter) -> SnapshotTee:
        tee = SnapshotTee(writer, self._lower, self._clamp_ns)
        self._tees.append(tee)
        return tee

    def commit(self, chain_id: str) -> bool:
        """Finish the directory and move it into place; False (and discarded) when the snapshot
        could not take an entry or one is there already (a concurrent builder's: same content)."""
        final = self._snaps.path(chain_id)
        if any(t.broken for t in self._tees) or final.is_dir():
            self.discard()
            return False
        try:
            self._lower.finish()
        except (OSError, LayerError):
            self.discard()
            return False
        self._close()
        try:
            os.rename(self.dir, final)
        except OSError:
            self.discard()
            return False
        return True

    def discard(self) -> None:
        self._close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _close(self) -> None:
        if self._safe is not None:
            self._safe.close()
            self._safe = None


class _Unprivileged:
    """A SafeRoot for a caller without root: no chown (everything stays the caller's); device nodes
    other than whiteouts and xattrs the kernel refuses are skipped rather than fatal."""

    def __init__(self, root: SafeRoot) -> None:
        self._root = root

    def __getattr__(self, name: str) -> object:
        return getattr(self._root, name)

    def set_attrs(self, path: str, *, owner: tuple[int, int] | None, mode: int | None, mtime_ns: int) -> None:
        self._root.set_attrs(path, owner=None, mode=mode, mtime_ns=mtime_ns)

    def mknod(self, path: str, kind: Literal["char", "block"], mode: int, major: int, minor: int) -> None:
        try:
            self._root.mknod(path, kind, mode, major, minor)
        except PermissionError:
            pass

    def setxattr(self, path: str, key: str, value: bytes) -> None:
        try:
            self._root.setxattr(path, key, value)
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise


#: errors of an xattr an unprivileged caller may not set: skipped in the userxattr flavour
_REFUSED = (errno.EPERM, errno.EACCES, errno.ENOTSUP)


class Snapshots:
    """The per-layer overlay lower directories of a store (see the module docstring)."""

    def __init__(self, store: LocalStore, limits: Limits | None = None, *, userxattr: bool | None = None) -> None:
        self.store = store
        #: the unprivileged flavour (default: when not root)
        self.userxattr = os.geteuid() != 0 if userxattr is None else userxattr
        self.root = Path(store.snapshots_dir) / ("userxattr" if self.userxattr else "")
        if self.userxattr:
            self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.limits = limits

    def path(self, chain_id: str) -> Path:
        return self.root / chain_id.partition(":")[2]

    def empty_dir(self) -> Path:
        """An empty, read-only-by-convention lower dir for images without layers (``FROM scratch``)."""
        path = self.root / "empty"
        path.mkdir(mode=0o755, exist_ok=True)
        return path

    def ensure(self, image: Image) -> list[Path]:
        """Unpack any missing layer of ``image``; its lower dirs, bottom layer first."""
        ids = chain_ids([layer.diff_id for layer in image.layers])
        out: list[Path] = []
        for layer, cid in zip(image.layers, ids):
            final = self.path(cid)
            if not final.is_dir():
                self._unpack(layer, final)
            out.append(final)
        return out

    def lowerdirs(self, image: Image) -> list[Path]:
        """``lowerdir=`` order (newest first); the empty dir for an image without layers."""
        dirs = list(reversed(self.ensure(image)))
        return dirs or [self.empty_dir()]

    def rootfs(self, image: Image) -> Path:
        """The merged root filesystem of ``image`` as one plain tree (``rootfs-<chain id hex>``),
        for executors without overlayfs. Read-only by convention: runs work on a copy. Unpacked
        with ``rootless`` ownership when not root (every file then belongs to the caller)."""
        ids = chain_ids([layer.diff_id for layer in image.layers])
        if not ids:
            return self.empty_dir()
        final = self.root / ("rootfs-" + ids[-1].partition(":")[2])
        if not final.is_dir():
            self._atomic(final, lambda tmp: unpack(image, tmp, rootless=os.geteuid() != 0, limits=self.limits))
        return final

    def adopt(self, upper_dir: Path, chain_id: str, written: Iterable[tuple[Entry, str]], clamp_ns: int | None) -> bool:
        """Make ``upper_dir`` — the kernel overlayfs upper dir of the step that wrote the layer
        ``chain_id``, unmounted — that layer's snapshot, instead of unpacking the layer again later.

        An upper dir is already in lower-dir form; it is brought to what unpacking the layer would
        give (:func:`match_layer`): ``written`` are the ``(entry, host path)`` pairs the layer got
        (:meth:`.tree_diff.ChangeSet.entries`), ``clamp_ns`` the writer's ``SOURCE_DATE_EPOCH``
        clamp. What the layer left out and the upper keeps (copy-ups that changed nothing,
        unchanged parent dirs) shows the lower's own version, so every merged view, and every
        later layer, is the same either way. False when the snapshot exists already or the
        rename fails (another filesystem): the caller removes ``upper_dir`` and the layer is
        unpacked when needed."""
        final = self.path(chain_id)
        if self.userxattr or final.is_dir():
            return False
        match_layer(str(upper_dir), written, clamp_ns)
        try:
            os.rename(upper_dir, final)
        except OSError:  # ENOTEMPTY/EEXIST: a concurrent builder stored it first; EXDEV
            return False
        return True

    def stage(self, clamp_ns: int | None) -> StagedSnapshot:
        """A snapshot written while its layer is (COPY, ADD, WORKDIR: the step knows every entry
        before it writes it), so the next RUN finds its lower dir ready instead of unpacking the
        layer. ``clamp_ns``: the layer writer's ``SOURCE_DATE_EPOCH`` clamp."""
        return StagedSnapshot(self, clamp_ns)

    def _unpack(self, layer: Layer, final: Path) -> None:
        limits = self.limits or default_limits()
        listed: list[Entry] = []

        def fill(tmp: Path) -> None:
            with layer.open_tar() as tar:
                ahead = ReadAhead(tar)
                try:
                    extract_overlay_layer(ahead, str(tmp), layer=str(layer.diff_id), limits=limits,  # type: ignore[arg-type]
                                          compressed_size=layer.size, userxattr=self.userxattr, listed=listed)
                finally:
                    ahead.close()

        self._atomic(final, fill)
        # read to its end (verified): a COPY planned on this layer later need not read it again
        self.store.layer_index.save(str(layer.digest), str(layer.diff_id), limits, listed)

    def _atomic(self, final: Path, fill: Callable[[Path], object]) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-" + final.name[:12] + "-", dir=self.root))
        try:
            tmp.chmod(0o755)  # a rootfs root must be searchable by every user; a layer's "./" may override
            fill(tmp)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if not final.is_dir():  # anything but "a concurrent builder won the race"
                    raise LayerError(f"storing snapshot {final.name}: {exc}") from exc
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
