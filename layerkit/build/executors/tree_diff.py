"""A step's filesystem change as layer entries: the change set, and a before/after tree comparison.

:class:`ChangeSet` is what every executor fills: added/modified paths (with the host file that
holds their bytes), deletions, opaque directories, and *context* directories (unchanged parents
that must still be written because something under them is — as containerd's and Docker's diff
writers include parents). :meth:`ChangeSet.write` emits them in canonical layer order; files that
share an inode become one FILE plus HARDLINK entries, the first path in layer order being the
file. A link whose other names did not change is stored as a full file (its target is in a lower
layer, where a tar hard link cannot point).

:func:`diff_trees` compares a *before* tree (the parent's rootfs, left untouched) with the *after*
tree the step ran in (a copy of it). Entries are equal when type, mode, owner, size, mtime_ns, link
target, device number and xattrs agree; for regular files whose metadata agree but whose ctime is
not older than the copy (``since_ns``, from :func:`fs_clock_ns`) — written and then given back its old
mtime — the contents are compared too. It is the diff for executors that cannot use overlayfs
(rootless, bwrap).
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...tarfs.entry import Entry, EntryType
from ...tarfs.tree import DEFAULT_XATTR_FILTER, entry_from_stat, read_xattrs
from ...tarfs.whiteout import opaque_path, whiteout_path
from ...tarfs.writer import layer_order_key

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ...tarfs.writer import LayerWriter

__all__ = ["ChangeSet", "diff_trees", "entry_at", "filtered_xattrs", "same_content"]

_ADD, _WHITEOUT, _OPAQUE = 0, 1, 2


def filtered_xattrs(host_path: str, keep: Callable[[str], bool] = DEFAULT_XATTR_FILTER) -> dict[str, bytes]:
    return {k: v for k, v in read_xattrs(host_path).items() if keep(k)}


def entry_at(member: str, host_path: str, st: os.stat_result | None = None) -> Entry:
    """The layer entry for ``host_path`` as ``member``: lstat, symlink target, content xattrs."""
    st = st or os.lstat(host_path)
    link = os.readlink(host_path) if stat.S_ISLNK(st.st_mode) else ""
    return entry_from_stat(member, st, linkname=link, xattrs=filtered_xattrs(host_path))


def same_content(a: str, b: str) -> bool:
    """Byte-for-byte equality of two regular files (sizes already known equal)."""
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def _same_meta(a: Entry, b: Entry) -> bool:
    return (
        a.type is b.type
        and a.mode == b.mode
        and a.uid == b.uid
        and a.gid == b.gid
        and a.size == b.size
        and a.mtime_ns == b.mtime_ns
        and a.linkname == b.linkname
        and a.devmajor == b.devmajor
        and a.devminor == b.devminor
        and a.xattrs == b.xattrs
    )


@dataclass
class _Item:
    """One path of a snapshot diff: what changed and the entry describing it."""

    kind: int
    entry: Entry | None = None
    host: str = ""
    inode: tuple[int, int] | None = None


class ChangeSet:
    """Collects a step's changes relative to ``root_dir`` (the tree holding the new content)."""

    def __init__(self, root_dir: str) -> None:
        self.root_dir = root_dir
        self._items: dict[str, list[_Item]] = {}
        self._context: set[str] = set()
        self._linked: dict[tuple[int, int], list[_Item]] = {}
        #: adjusts each written entry (e.g. owner mapping of a rootless run); None = as read
        self.fix_entry: Callable[[Entry], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, entry: Entry, host_path: str, st: os.stat_result | None = None) -> None:
        """Record ``entry`` (as read from ``host_path``) as added or modified."""
        inode = None
        if entry.type is EntryType.HARDLINK:  # links are decided again in layer order (entries())
            st = st or os.lstat(host_path)
            entry.type, entry.linkname, entry.size = EntryType.FILE, "", st.st_size
        if entry.type is EntryType.FILE:
            st = st or os.lstat(host_path)
            if st.st_nlink > 1:
                inode = (st.st_dev, st.st_ino)
        self._items.setdefault(entry.path, []).append(_Item(_ADD, entry, host_path, inode))

    def unchanged_link(self, entry: Entry, host_path: str, st: os.stat_result) -> None:
        """An unchanged file with other names: written only if another name of its inode is, so a
        link made to it (``ln lower new``) stays a link, as Docker and BuildKit write it."""
        entry.type, entry.linkname, entry.size = EntryType.FILE, "", st.st_size
        self._linked.setdefault((st.st_dev, st.st_ino), []).append(_Item(_ADD, entry, host_path, (st.st_dev, st.st_ino)))

    def whiteout(self, path: str) -> None:
        self._items.setdefault(whiteout_path(path), []).append(_Item(_WHITEOUT, None, path))

    def opaque(self, dir_path: str) -> None:
        self._items.setdefault(opaque_path(dir_path), []).append(_Item(_OPAQUE, None, dir_path))

    def context(self, dir_path: str) -> None:
        """An unchanged directory: written only if something below it is."""
        self._context.add(dir_path)

    def discard(self, path: str) -> None:
        """Forget ``path`` and everything recorded under it (mount points, for instance)."""
        prefix = path + "/"
        for key in [k for k in self._items if k == path or k.startswith(prefix)]:
            del self._items[key]
        wh = whiteout_path(path)
        self._items.pop(wh, None)

    def paths(self) -> list[str]:
        """Member paths that will be written (parents not included), in layer order."""
        return sorted(self._items, key=layer_order_key)

    def entries(self) -> list[tuple[Entry, str]]:
        """``(entry, host_path)`` in layer order, parents included and hard links resolved.
        Whiteout and opaque entries come with an empty host path."""
        out: list[tuple[str, _Item]] = []
        for path, items in self._items.items():
            out.append((path, items[-1]))
        emitted = {item.inode for _, item in out if item.inode is not None}
        for inode in emitted & self._linked.keys():
            out.extend((item.entry.path, item) for item in self._linked[inode] if item.entry is not None)
        have = {p for p, _ in out}
        for path, _ in list(out):
            parent = path.rpartition("/")[0]
            while parent and parent not in have:
                have.add(parent)
                host = os.path.join(self.root_dir, parent)
                out.append((parent, _Item(_ADD, entry_at(parent, host), host)))
                parent = parent.rpartition("/")[0]
        out.sort(key=lambda pi: layer_order_key(pi[0]))
        first: dict[tuple[int, int], str] = {}
        result: list[tuple[Entry, str]] = []
        for path, item in out:
            if item.kind == _WHITEOUT:
                result.append((Entry(path, EntryType.FILE, mode=0o644), ""))
                continue
            if item.kind == _OPAQUE:
                result.append((Entry(path, EntryType.FILE, mode=0o644), ""))
                continue
            entry = item.entry
            assert entry is not None
            if self.fix_entry is not None:
                self.fix_entry(entry)
            if item.inode is not None:
                target = first.get(item.inode)
                if target is None:
                    first[item.inode] = path
                else:
                    entry.type, entry.linkname, entry.size = EntryType.HARDLINK, target, 0
            result.append((entry, item.host))
        return result

    def write(self, writer: LayerWriter, entries: list[tuple[Entry, str]] | None = None) -> None:
        """Emit everything (or ``entries``, from :meth:`entries`) into ``writer`` (the ``fill``
        callback of a ``WriteLayer``)."""
        for entry, host in self.entries() if entries is None else entries:
            if entry.type is EntryType.FILE and host and entry.size:
                writer.add_file_from_path(entry, host)
            else:
                writer.add(entry)


def fs_clock_ns(directory: str | os.PathLike[str]) -> int:
    """Now, by the clock the filesystem under ``directory`` stamps ctimes with: the ctime of a file
    made there. (The kernel stamps from a coarse clock that can trail ``time.time_ns()`` by a tick,
    so a file written just after a ``time.time_ns()`` reading may carry an older ctime.)"""
    fd, path = tempfile.mkstemp(prefix=".clock-", dir=directory)
    try:
        return os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)
        os.unlink(path)


def diff_trees(before_dir: str, after_dir: str, *, since_ns: int | None = None,
               changes: ChangeSet | None = None, skip: Callable[[str], bool] | None = None) -> ChangeSet:
    """The changes turning ``before_dir`` into ``after_dir`` (see the module docstring).

    ``since_ns``: when the after tree was made (:func:`fs_clock_ns` once the copy is done); regular
    files changed (ctime) since then whose metadata match are compared byte by byte (a file copied in
    the same clock tick is compared too: only the cost of a read). ``None`` compares every
    same-looking file's content.
    ``skip(member)`` leaves a path (and what is under it) out of the comparison.
    """
    cs = changes if changes is not None else ChangeSet(after_dir)
    stack = [""]
    while stack:
        rel = stack.pop()
        bdir = os.path.join(before_dir, rel) if rel else before_dir
        adir = os.path.join(after_dir, rel) if rel else after_dir
        before = {e.name: e for e in os.scandir(bdir)}
        after = {e.name: e for e in os.scandir(adir)}
        for name in sorted(before.keys() | after.keys()):
            member = f"{rel}/{name}" if rel else name
            if skip is not None and skip(member):
                continue
            b, a = before.get(name), after.get(name)
            if a is None:
                cs.whiteout(member)
                continue
            ast = a.stat(follow_symlinks=False)
            if stat.S_ISSOCK(ast.st_mode):  # a tar cannot hold sockets (Docker drops them too)
                continue
            if b is None:
                _add_subtree(cs, member, a.path, ast, skip)
                continue
            bst = b.stat(follow_symlinks=False)
            if stat.S_IFMT(bst.st_mode) != stat.S_IFMT(ast.st_mode):
                # a non-directory hides a lower directory; a directory replaces a lower file
                _add_subtree(cs, member, a.path, ast, skip)
                continue
            aentry = entry_at(member, a.path, ast)
            bentry = entry_at(member, b.path, bst)
            if stat.S_ISDIR(ast.st_mode):
                if _same_meta(aentry, bentry):
                    cs.context(member)
                else:
                    cs.add(aentry, a.path, ast)
                stack.append(member)
                continue
            if _same_meta(aentry, bentry):
                doubt = since_ns is None or ast.st_ctime_ns >= since_ns
                if not (stat.S_ISREG(ast.st_mode) and doubt and not same_content(b.path, a.path)):
                    if stat.S_ISREG(ast.st_mode) and ast.st_nlink > 1:
                        cs.unchanged_link(aentry, a.path, ast)
                    continue
            cs.add(aentry, a.path, ast)
    return cs


def _add_subtree(cs: ChangeSet, member: str, host: str, st: os.stat_result,
                 skip: Callable[[str], bool] | None) -> None:
    cs.add(entry_at(member, host, st), host, st)
    if not stat.S_ISDIR(st.st_mode):
        return
    stack = [(member, host)]
    while stack:
        m, h = stack.pop()
        for d in sorted(os.scandir(h), key=lambda d: d.name):
            child = f"{m}/{d.name}"
            if skip is not None and skip(child):
                continue
            dst = d.stat(follow_symlinks=False)
            if stat.S_ISSOCK(dst.st_mode):
                continue
            cs.add(entry_at(child, d.path, dst), d.path, dst)
            if stat.S_ISDIR(dst.st_mode):
                stack.append((child, d.path))
