"""The build context: a host directory seen through ``.dockerignore``, plus a persistent stat cache.

COPY/ADD read sources through :class:`BuildContext`: an ignored path does not exist (like a file
``docker build`` never sent), symlinks are resolved inside the context root, and ownership is
``0:0`` (the Docker CLI resets it when it sends the context). Cache keys need a content hash of
every source file; :class:`StatCache` remembers ``(size, mtime_ns, inode, ctime_ns) → sha256`` per
path in the store's cache directory, so a rebuild with nothing changed costs a directory walk.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO

from ..digest import CHUNK, Digest
from ..errors import BuildError, LayerkitError
from ..tarfs.paths import SymlinkLoopError, resolve_in_root
from .dockerignore import PatternMatcher

if TYPE_CHECKING:  # pragma: no cover
    from ..tarfs.entry import Entry

__all__ = ["MAX_SYMLINKS", "BuildContext", "StatCache"]

MAX_SYMLINKS = 255
_CACHE_VERSION = 1


class StatCache:
    """``path → (size, mtime_ns, ino, ctime_ns, digest)`` for one context directory, kept as one
    JSON file under ``cache_dir``. A file whose stat tuple changed is hashed again."""

    def __init__(self, cache_dir: Path | None, context_dir: Path) -> None:
        self._file: Path | None = None
        self._entries: dict[str, list[object]] = {}
        self._dirty = False
        if cache_dir is not None:
            key = hashlib.sha256(str(context_dir.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:32]
            self._file = cache_dir / "context" / f"{key}.json"
            try:
                doc = json.loads(self._file.read_text())
                if doc.get("version") == _CACHE_VERSION:
                    self._entries = doc.get("files", {})
            except (OSError, ValueError, AttributeError):
                self._entries = {}
        self.hits = 0
        self.misses = 0

    def digest(self, rel: str, host: str, st: os.stat_result) -> Digest:
        return Digest(self.digest_text(rel, host, st))

    def digest_text(self, rel: str, host: str, st: os.stat_result) -> str:
        """:meth:`digest` as a plain string: the fingerprint walk calls this per file, and a cached
        value is checked by shape only (a malformed one is a miss, hashed again)."""
        sig = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        cached = self._entries.get(rel)
        if cached is not None and cached[:4] == sig:
            text = cached[4]
            if isinstance(text, str) and len(text) == 71 and text.startswith("sha256:"):
                self.hits += 1
                return text
        self.misses += 1
        text = _sha256_text(host, st.st_size)
        self._entries[rel] = [*sig, text]
        self._dirty = True
        return text

    def save(self) -> None:
        """Persist atomically (best effort: a cache that cannot be written is only slower)."""
        if self._file is None or not self._dirty:
            return
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": _CACHE_VERSION, "files": self._entries}, separators=(",", ":")))
            os.replace(tmp, self._file)
            self._dirty = False
        except OSError:
            pass


def _sha256_text(host: str, size: int) -> str:
    """``sha256:…`` of a regular file the walk stat'ed at ``size`` bytes: a raw fd and reads sized
    from the stat (a small file in one read plus the one that finds its end, even if it grew).
    Not ``digest.sha256_file``: its file object, second fstat and ``Digest`` cost as much as the
    hash of a small file, and the fingerprint walk hashes every context file on a cold build."""
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        h = hashlib.sha256()
        n = size + 1 if size < CHUNK else CHUNK
        while chunk := os.read(fd, n):
            h.update(chunk)
            n = CHUNK
    finally:
        os.close(fd)
    return "sha256:" + h.hexdigest()


class BuildContext:
    """Read-only view of the context directory for COPY/ADD (paths are ``/``-separated, relative,
    the root is ``"."``)."""

    name = "context"

    def __init__(self, root: Path, ignore: PatternMatcher | None = None, *, cache_dir: Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BuildError(f"reading the build context: {self.root} is not a directory; pass an existing directory")
        self.ignore = ignore or PatternMatcher()
        self.stat_cache = StatCache(cache_dir, self.root)
        self._root_str = os.fspath(self.root)
        self._prefix = self._root_str.rstrip("/") + "/"
        self._last_lstat: tuple[str, os.stat_result] | None = None

    # -- paths ---------------------------------------------------------------------------------
    def host(self, rel: str) -> str:
        return self._root_str if rel in ("", ".") else self._prefix + rel

    def excluded(self, rel: str) -> bool:
        if rel in ("", ".") or not self.ignore:
            return False
        return self.ignore.matches(rel)

    def _visible(self, rel: str, st: os.stat_result) -> bool:
        if not self.excluded(rel):
            return True
        # an excluded directory still exists when something below it is re-included
        return stat.S_ISDIR(st.st_mode) and self.ignore.may_include_below(rel)

    def resolve(self, rel: str, *, follow_last: bool = True) -> str | None:
        """``rel`` with symlinks resolved inside the context root (``fs.RootPath``); None when a
        component is missing or ignored."""

        def lookup(cand: str) -> tuple[bool, str | None] | None:
            try:
                st = os.lstat(self.host(cand))
            except OSError:
                return None
            if not self._visible(cand, st):
                return None
            return stat.S_ISDIR(st.st_mode), os.readlink(self.host(cand)) if stat.S_ISLNK(st.st_mode) else None

        try:
            found = resolve_in_root(rel, lookup, follow_last=follow_last, max_links=MAX_SYMLINKS)
        except SymlinkLoopError:
            raise BuildError(f"resolving {rel!r} in the build context: too many levels of symbolic links") from None
        return found.path if found.found else None

    def lstat(self, rel: str) -> Entry | None:
        """Entry for ``rel`` (no symlink followed), owned 0:0; None when missing or ignored."""
        host = self.host(rel)
        try:
            st = os.lstat(host)
        except OSError:
            return None
        if self.ignore and not self._visible(rel, st):
            return None
        link = os.readlink(host) if stat.S_ISLNK(st.st_mode) else ""
        try:
            entry = _tree().entry_from_stat(rel, st, linkname=link, xattrs=_xattrs(host, st))
        except LayerkitError as exc:  # sockets and the like cannot go into a layer
            raise BuildError(f"reading {rel!r} from the build context: {exc}") from None
        entry.uid = entry.gid = 0
        self._last_lstat = (rel, st)
        return entry

    def link_identity(self, rel: str) -> tuple[int, int] | None:
        """What hard links to ``rel`` share (device, inode), or None when it has a single link.
        Right after :meth:`lstat` of ``rel`` (how COPY asks) that call's stat answers: the
        identity belongs to the entry just planned, and the file is not stat'ed twice."""
        last = self._last_lstat
        st = last[1] if last is not None and last[0] == rel else os.lstat(self.host(rel))
        return (st.st_dev, st.st_ino) if st.st_nlink > 1 else None

    def listdir(self, rel: str) -> list[str]:
        """Names in directory ``rel`` that are not ignored, sorted as bytes."""
        base = "" if rel in ("", ".") else rel + "/"
        out = []
        with os.scandir(self.host(rel)) as it:
            for d in it:
                child = base + d.name
                if not self.ignore or not self.excluded(child) or d.is_dir(follow_symlinks=False) and self.ignore.may_include_below(child):
                    out.append(d.name)
        out.sort(key=lambda n: n.encode("utf-8", "surrogateescape"))
        return out

    def content_digest(self, rel: str) -> Digest:
        host = self.host(rel)
        return self.stat_cache.digest(rel, host, os.lstat(host))

    def walk_lstat(
        self, rel: str, prune: Callable[[str], bool] | None = None
    ) -> Iterator[tuple[str, str, str, os.stat_result]]:
        """``(path, rel_below, host_path, lstat)`` for ``rel`` and everything below it, depth first,
        names sorted as bytes: what :meth:`lstat` + :meth:`listdir` show (ignored entries absent), in
        the order a stack walk over them visits. ``prune(rel_below)`` skips an entry and its subtree.

        One ``lstat`` per entry and no xattr reads: this is the COPY fingerprint, i.e. all a
        no-change rebuild does with a large context."""
        host = self.host(rel)
        try:
            st = os.lstat(host)
        except OSError:
            return
        if not self._visible(rel, st):
            return
        yield rel, "", host, st
        if not stat.S_ISDIR(st.st_mode):
            return
        stack = [(iter(self._scan(rel, host)), rel, "")]
        while stack:
            item = next(stack[-1][0], None)
            if item is None:
                stack.pop()
                continue
            name, d = item
            parent, parent_rel = stack[-1][1], stack[-1][2]
            below = f"{parent_rel}/{name}" if parent_rel else name
            if prune is not None and prune(below):
                continue
            try:
                st = d.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since the scan, as lstat() would find
            path = f"{parent}/{name}" if parent != "." else name
            yield path, below, d.path, st
            if stat.S_ISDIR(st.st_mode):
                stack.append((iter(self._scan(path, d.path)), path, below))

    def _scan(self, rel: str, host: str) -> list[tuple[str, os.DirEntry[str]]]:
        """:meth:`listdir` keeping the ``DirEntry`` objects."""
        base = "" if rel in ("", ".") else rel + "/"
        out = []
        with os.scandir(host) as it:
            for d in it:
                if not self.ignore or not self.excluded(base + d.name) or (
                    d.is_dir(follow_symlinks=False) and self.ignore.may_include_below(base + d.name)
                ):
                    out.append((d.name, d))
        out.sort(key=lambda item: item[0].encode("utf-8", "surrogateescape"))
        return out

    def open(self, rel: str) -> BinaryIO:
        return open(self.host(rel), "rb")

    def host_path(self, rel: str) -> str | None:
        return self.host(rel)

    def close(self) -> None:
        self.stat_cache.save()


@functools.cache
def _tree() -> ModuleType:
    """``tarfs.tree``, imported on first use: a COPY that runs needs tarfs; the cache key does not."""
    from ..tarfs import tree

    return tree


def _xattrs(host: str, st: os.stat_result) -> dict[str, bytes]:
    if stat.S_ISLNK(st.st_mode):
        return {}
    try:
        if not os.listxattr(host, follow_symlinks=False):  # the common case, in one system call
            return {}
        got = _tree().read_xattrs(host)
    except OSError:
        return {}
    # BuildKit copies only security.capability and user.* from the context; SELinux labels stay behind
    return {k: v for k, v in got.items() if k == "security.capability" or k.startswith("user.")} if got else {}
