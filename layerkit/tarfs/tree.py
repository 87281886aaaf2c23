"""Host directory <-> layer entries: stat to Entry, a deterministic walk, a whole tree as a layer."""

from __future__ import annotations

import os
import stat
from typing import Callable, Iterator

from ..errors import LayerError
from .entry import Entry, EntryType
from .paths import clean_member
from .writer import LayerWriter

__all__ = ["entry_from_stat", "read_xattrs", "walk_tree", "write_tree", "DEFAULT_XATTR_FILTER"]


def _default_xattr_filter(name: str) -> bool:
    """Keep xattrs that belong to the content (``security.capability``, ``user.*``); drop overlayfs
    bookkeeping, which is a layer-format detail of the host, and SELinux labels, which belong to
    the host policy, not the image."""
    return not (
        name.startswith("trusted.overlay.") or name.startswith("user.overlay.") or name == "security.selinux"
    )


DEFAULT_XATTR_FILTER: Callable[[str], bool] = _default_xattr_filter


def entry_from_stat(
    path_in_layer: str, st: os.stat_result, *, linkname: str = "", xattrs: dict[str, bytes] | None = None
) -> Entry:
    """An Entry from ``lstat`` data (ownership numeric, mtime to the nanosecond).

    Sockets and other types a tar cannot hold raise LayerError; ``linkname`` is kept only for
    symlinks (pass a hardlink's first path by building a HARDLINK entry yourself, as walk_tree does).
    """
    m = st.st_mode
    fmt = stat.S_IFMT(m)
    dev = 0
    if fmt == stat.S_IFREG:
        t, size = EntryType.FILE, st.st_size
    elif fmt == stat.S_IFDIR:
        t, size = EntryType.DIR, 0
    elif fmt == stat.S_IFLNK:
        t, size = EntryType.SYMLINK, 0
    elif fmt == stat.S_IFCHR:
        t, size, dev = EntryType.CHAR, 0, st.st_rdev
    elif fmt == stat.S_IFBLK:
        t, size, dev = EntryType.BLOCK, 0, st.st_rdev
    elif fmt == stat.S_IFIFO:
        t, size = EntryType.FIFO, 0
    else:
        raise LayerError(f"{path_in_layer!r}: a {stat.filemode(m)[0]!r}-type file cannot be stored in a layer")
    return Entry(
        path_in_layer,
        t,
        stat.S_IMODE(m),
        st.st_uid,
        st.st_gid,
        size,
        st.st_mtime_ns,
        linkname if t is EntryType.SYMLINK else "",
        os.major(dev) if dev else 0,
        os.minor(dev) if dev else 0,
        xattrs if xattrs is not None else {},
    )


def read_xattrs(host_path: str) -> dict[str, bytes]:
    """All extended attributes of ``host_path`` itself (symlinks not followed), sorted by name;
    empty on filesystems without xattr support or when an attribute vanishes while reading."""
    try:
        names = os.listxattr(host_path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in sorted(names):
        try:
            out[name] = os.getxattr(host_path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _children(dir_host: str) -> list[os.DirEntry[str]]:
    with os.scandir(dir_host) as it:
        items = list(it)
    items.sort(key=lambda d: d.name.encode("utf-8", "surrogateescape"))
    return items


def walk_tree(
    root_dir: str,
    *,
    prefix: str = "",
    xattrs: bool = True,
    xattr_filter: Callable[[str], bool] | None = DEFAULT_XATTR_FILTER,
) -> Iterator[tuple[Entry, str]]:
    """Yield ``(entry, host_path)`` for ``root_dir`` and everything under it, in canonical layer
    order (root first, then depth first with names compared as bytes: ``writer.layer_order_key``).

    Iterative (no recursion limit), ``os.scandir`` + ``lstat``, symlinks never followed. The root
    comes out as ``"."`` (or as ``prefix``). The second and later paths of one inode become
    HARDLINK entries to the first. Sockets are skipped (tar cannot hold them).
    """
    root_dir = os.fspath(root_dir)
    root_member = clean_member(prefix) if prefix else "."
    st = os.lstat(root_dir)
    if not stat.S_ISDIR(st.st_mode):
        raise LayerError(f"{root_dir}: not a directory")
    seen: dict[tuple[int, int], str] = {}

    def xa(host: str) -> dict[str, bytes]:
        if not xattrs:
            return {}
        got = read_xattrs(host)
        if got and xattr_filter is not None:
            got = {k: v for k, v in got.items() if xattr_filter(k)}
        return got

    yield entry_from_stat(root_member, st, xattrs=xa(root_dir)), root_dir
    stack: list[tuple[Iterator[os.DirEntry[str]], str]] = [(iter(_children(root_dir)), root_member)]
    while stack:
        it, parent = stack[-1]
        d = next(it, None)
        if d is None:
            stack.pop()
            continue
        host = d.path
        member = d.name if parent == "." else f"{parent}/{d.name}"
        st = d.stat(follow_symlinks=False)
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFSOCK:
            continue
        if fmt != stat.S_IFDIR and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = seen.get(key)
            if first is not None:
                e = entry_from_stat(member, st, xattrs=xa(host))
                e.type, e.size, e.linkname, e.devmajor, e.devminor = EntryType.HARDLINK, 0, first, 0, 0
                yield e, host
                continue
            seen[key] = member
        link = os.readlink(host) if fmt == stat.S_IFLNK else ""
        yield entry_from_stat(member, st, linkname=link, xattrs=xa(host)), host
        if fmt == stat.S_IFDIR:
            stack.append((iter(_children(host)), member))


def write_tree(
    root_dir: str,
    writer: LayerWriter,
    *,
    prefix: str = "",
    include_root: bool | None = None,
    xattrs: bool = True,
    xattr_filter: Callable[[str], bool] | None = DEFAULT_XATTR_FILTER,
    uid: int | None = None,
    gid: int | None = None,
) -> int:
    """Write a whole directory into ``writer`` in canonical order; returns the entry count.

    The root directory entry (``./``) is omitted by default, as Docker and BuildKit layers do;
    with a ``prefix`` the prefix directory itself is written. ``uid``/``gid`` override ownership
    (e.g. 0/0 for a COPY without ``--chown``).
    """
    if include_root is None:
        include_root = bool(prefix)
    n = 0
    for entry, host in walk_tree(root_dir, prefix=prefix, xattrs=xattrs, xattr_filter=xattr_filter):
        if n == 0 and not include_root:
            n += 1
            continue
        if uid is not None:
            entry.uid = uid
        if gid is not None:
            entry.gid = gid
        if entry.type is EntryType.FILE:
            writer.add_file_from_path(entry, host)
        else:
            writer.add(entry)
        n += 1
    return n - (0 if include_root else 1)
