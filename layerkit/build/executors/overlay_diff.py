"""An overlayfs upper directory as layer changes (the change set of a step run on overlayfs).

The upper dir *is* the change set, spelled in overlayfs' dialect, which is turned into OCI form:

- a 0/0 character device is a deletion → ``.wh.NAME``;
- a directory with ``trusted.overlay.opaque=y`` (``user.overlay.opaque=y`` under ``userxattr``)
  replaced its lower namesake → the directory plus ``.wh..wh..opq``;
- a copied-up file or directory whose metadata (and, for files, bytes) equal the version the lower
  dirs show changed nothing (``chown`` to the same owner, a rewrite with identical bytes and mtime)
  → dropped; an unchanged directory is written only as the parent of something that changed;
- fuse-overlayfs speaks a dialect of it: an opaque directory carries ``user.fuseoverlayfs.opaque=y``
  (or ``trusted.overlay.opaque``) plus a ``.wh..wh..opq`` file and a ``.wh..opq`` 0/0 node, and a
  deletion it could not ``mknod`` is a ``.wh.NAME`` file — all read as the same changes; it also
  marks every *new* directory opaque, which hides nothing: an opaque marker is written only where
  the lower dirs show something;
- overlayfs bookkeeping xattrs (``trusted.overlay.*``, ``*.fuseoverlayfs.*``) never reach the layer; content xattrs such
  as ``security.capability`` do. Hard links, setuid bits, fifos and devices come through as-is
  (:class:`~.tree_diff.ChangeSet` resolves link groups).

The executor mounts with ``metacopy=off`` (a chmod must copy the data up, or the upper file would
be an empty shell) and ``redirect_dir=off`` (a renamed lower directory is copied, never a redirect
xattr this reader would have to follow).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from ...tarfs.entry import Entry, EntryType
from ...tarfs.tree import DEFAULT_XATTR_FILTER, walk_tree
from ...tarfs.whiteout import OPAQUE_WHITEOUT, WHITEOUT_PREFIX
from .snapshots import OPAQUE_XATTR, USER_OPAQUE_XATTR
from .tree_diff import ChangeSet, _same_meta, entry_at, same_content

__all__ = [
    "MOUNT_OPTIONS",
    "USERXATTR_MOUNT_OPTIONS",
    "LowerView",
    "is_overlay_whiteout",
    "overlay_changes",
    "restore_copy_up_times",
]

#: options every overlay mount of a step uses (see the module docstring)
MOUNT_OPTIONS = "index=off,metacopy=off,redirect_dir=off"
#: the same in a user namespace: ``user.overlay.*`` xattrs; the kernel takes ``redirect_dir=off``
#: as "follow" there, which ``userxattr`` forbids, so "nofollow" (renamed directories are copied)
USERXATTR_MOUNT_OPTIONS = "userxattr,index=off,metacopy=off,redirect_dir=nofollow"


FUSE_OPAQUE_XATTR = "user.fuseoverlayfs.opaque"  # fuse-overlayfs' own marker when unprivileged
_OPAQUE_XATTRS = (OPAQUE_XATTR, USER_OPAQUE_XATTR, FUSE_OPAQUE_XATTR)


def is_overlay_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _keep_xattr(name: str) -> bool:
    return DEFAULT_XATTR_FILTER(name) and ".fuseoverlayfs." not in name


def _is_opaque(host: str, xattrs: dict[str, bytes] | None = None) -> bool:
    if xattrs is None:
        try:
            names = os.listxattr(host, follow_symlinks=False)
        except OSError:
            return False
        xattrs = {n: os.getxattr(host, n, follow_symlinks=False) for n in names if n in _OPAQUE_XATTRS}
    return any(xattrs.get(n) == b"y" for n in _OPAQUE_XATTRS)


class LowerView:
    """What a stack of overlay lower dirs (newest first) shows at a path, without mounting them."""

    def __init__(self, lowerdirs: Sequence[str | os.PathLike[str]]) -> None:
        self.lowers = [os.fspath(d) for d in lowerdirs]

    def lookup(self, path: str) -> tuple[str, os.stat_result] | None:
        """``(host_path, lstat)`` of the visible lower version of ``path``, or None."""
        parts = path.split("/")
        for low in self.lowers:
            stop_after = False
            host = low
            missing = False
            for comp in parts[:-1]:
                host = os.path.join(host, comp)
                try:
                    st = os.lstat(host)
                except FileNotFoundError:
                    missing = True
                    break
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a whiteout or a non-directory hides everything below in lower layers
                if _is_opaque(host):
                    stop_after = True
            if not missing:
                host = os.path.join(low, path)
                try:
                    st = os.lstat(host)
                except FileNotFoundError:
                    pass
                else:
                    return None if is_overlay_whiteout(st) else (host, st)
            if stop_after:
                return None
        return None


def restore_copy_up_times(upper_dir: str | os.PathLike[str], lowerdirs: Sequence[str | os.PathLike[str]]) -> None:
    """Undo fuse-overlayfs' copy-up side effect: unlike the kernel, it does not restore a copied-up
    directory's times after creating a child in it, so every ancestor of a modified file would look
    touched. A copied-up directory holding only copied-up children — names all the lower's, nothing
    added, nothing deleted, not opaque — gets the lower's mtime back. (A ``touch DIR`` by a step
    that also modified something inside DIR is lost.)"""
    upper = os.fspath(upper_dir)
    lower = LowerView(lowerdirs)
    for entry, host in walk_tree(upper, xattrs=False):
        if entry.type is not EntryType.DIR:
            continue
        path = "" if entry.path == "." else entry.path
        found = lower.lookup(path) if path else (os.fspath(lowerdirs[0]), os.lstat(lowerdirs[0]))
        if found is None or not stat.S_ISDIR(found[1].st_mode) or _is_opaque(host):
            continue
        names = [n for n in os.listdir(host) if n != WHITEOUT_PREFIX + ".opq"]
        if not names:  # copied up for a child made and removed again: a real change of the directory
            continue
        if any(n.startswith(WHITEOUT_PREFIX) or is_overlay_whiteout(os.lstat(os.path.join(host, n)))
               or lower.lookup(f"{path}/{n}" if path else n) is None for n in names):
            continue
        mtime = found[1].st_mtime_ns
        os.utime(host, ns=(mtime, mtime), follow_symlinks=False)


def overlay_changes(upper_dir: str | os.PathLike[str], lowerdirs: Sequence[str | os.PathLike[str]]) -> ChangeSet:
    """The change set held by ``upper_dir`` over ``lowerdirs`` (newest first)."""
    upper = os.fspath(upper_dir)
    lower = LowerView(lowerdirs)
    cs = ChangeSet(upper)
    opaque: set[str] = set()

    def hides_lower(path: str) -> bool:
        """An opaque marker matters only over something the lower dirs show (fuse-overlayfs marks
        every new directory); over a lower file it stays, as Docker and BuildKit write it."""
        return lower.lookup(path) is not None
    for entry, host in walk_tree(upper, xattr_filter=None):
        path = entry.path
        if path == ".":
            continue
        head, _, name = path.rpartition("/")
        if name.startswith(WHITEOUT_PREFIX):  # fuse-overlayfs markers (no step can make such a name in a layer)
            if name == OPAQUE_WHITEOUT:
                if (head or ".") not in opaque and hides_lower(head or "."):  # also marked by xattr
                    opaque.add(head or ".")
                    cs.opaque(head or ".")
            elif name != WHITEOUT_PREFIX + ".opq":
                cs.whiteout(f"{head}/{name[len(WHITEOUT_PREFIX):]}" if head else name[len(WHITEOUT_PREFIX):])
            continue
        raw = entry.xattrs
        entry.xattrs = {k: v for k, v in raw.items() if _keep_xattr(k)}
        # whiteouts may share one inode (the kernel's whiteout cache): walk_tree calls later ones hard links
        if entry.type in (EntryType.CHAR, EntryType.HARDLINK) and is_overlay_whiteout(os.lstat(host)):
            cs.whiteout(path)
            continue
        if entry.type is EntryType.DIR:
            if _is_opaque(host, raw):
                cs.add(entry, host)
                if hides_lower(path):
                    opaque.add(path)
                    cs.opaque(path)
                continue
            found = lower.lookup(path)
            if found is not None and stat.S_ISDIR(found[1].st_mode) and _same_meta(entry, entry_at(path, *found)):
                cs.context(path)
            else:
                cs.add(entry, host)
            continue
        if entry.type is EntryType.HARDLINK:  # judged like any file; ChangeSet regroups links
            entry.type, entry.linkname, entry.size = EntryType.FILE, "", os.lstat(host).st_size
        found = lower.lookup(path)
        if found is not None and _unchanged_copy_up(entry, host, path, found):
            st = os.lstat(host)
            if st.st_nlink > 1:
                cs.unchanged_link(entry, host, st)
            continue
        cs.add(entry, host)
    return cs


def _unchanged_copy_up(entry: Entry, host: str, path: str, found: tuple[str, os.stat_result]) -> bool:
    low_host, low_st = found
    if stat.S_IFMT(low_st.st_mode) != stat.S_IFMT(os.lstat(host).st_mode):
        return False
    low = entry_at(path, low_host, low_st)
    if not _same_meta(entry, low):
        return False
    return not stat.S_ISREG(low_st.st_mode) or same_content(low_host, host)
