"""COPY and ADD semantics: sources in, the entries of one layer out — a port of BuildKit's file
copy (fsutil ``copy.Copy`` driven by the Dockerfile frontend's ``dispatchCopy``).

Rules reproduced (each was checked against ``docker build``):

- sources are resolved inside their root with symlinks followed (``fs.RootPath``); wildcards use
  Go ``filepath.Match`` on the path below the first wildcard component; a wildcard matching nothing
  copies nothing, a literal source that is missing is an error;
- a directory source copies its *contents*; a file onto an existing directory (or a dest ending in
  ``/``) lands inside it, else it becomes the dest path; missing parents are created ``0755`` owned
  by the ``--chown`` user; the dest path follows symlinks of the image being built;
- copied entries keep mode and mtime; owner is the source's (``0:0`` for the context) unless
  ``--chown``; ``--chmod`` (octal or symbolic) applies to every copied entry but not to created
  parents; hard links inside one copy stay hard links;
- every existing directory the step writes into is part of the layer with its current metadata,
  as an overlay diff shows it (BuildKit and Docker both do this);
- ADD extracts local tar archives (plain, gzip, bzip2, xz, zstd) into the dest directory.

The work is split so a cache hit is cheap: :func:`fingerprint_sources` walks and hashes the matched
context sources (through the stat cache) without touching the image; only on a miss does
:class:`CopyPlanner` read the parent image's tree and plan entries, and :meth:`CopyPlan.write`
stream them into a ``LayerWriter``.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ..errors import BuildError, LayerkitError
from ..tarfs.entry import Entry, EntryType
from ..tarfs.paths import SymlinkLoopError, clean_member, resolve_in_root
from ..tarfs.writer import LayerWriter, layer_order_key
from .dockerignore import PatternMatcher, go_match, has_wildcards

__all__ = [
    "CopyPlan",
    "CopyPlanner",
    "CopyRequest",
    "CopySourceError",
    "ImageFS",
    "SourceFS",
    "apply_chmod",
    "expand_wildcards",
    "fingerprint_sources",
    "is_archive",
    "parse_chmod",
]

MAX_SYMLINKS = 255


class CopySourceError(BuildError):
    """A COPY/ADD source that is missing or unusable (the builder prefixes ``file:line``)."""


class SourceFS(Protocol):
    """A tree COPY reads from: the build context or another image's filesystem."""

    name: str

    def resolve(self, path: str, *, follow_last: bool = True) -> str | None: ...

    def lstat(self, path: str) -> Entry | None: ...

    def listdir(self, path: str) -> list[str]: ...

    def open(self, path: str) -> BinaryIO: ...

    def host_path(self, path: str) -> str | None: ...


# -- an image's filesystem as a source -------------------------------------------------------------


class ImageFS:
    """``COPY --from``: a stage's or an image's merged filesystem (``layerkit.union.Union``)."""

    def __init__(self, union: Any, name: str) -> None:
        self.union = union
        self.name = name

    def resolve(self, path: str, *, follow_last: bool = True) -> str | None:
        try:
            node = self.union.stat(path, follow=follow_last)
        except (OSError, LayerkitError):
            return None
        return str(node.path)

    def lstat(self, path: str) -> Entry | None:
        try:
            node = self.union.stat(path)
        except (OSError, LayerkitError):
            return None
        e: Entry = node.entry
        entry = replace(e, path=node.path, xattrs=dict(e.xattrs))
        if e.type is EntryType.HARDLINK:  # materialised: the link target may not be copied along
            entry.type, entry.linkname, entry.size = EntryType.FILE, "", node.size
        return entry

    def listdir(self, path: str) -> list[str]:
        names: list[str] = self.union.listdir(path, follow=False)
        return sorted(names, key=lambda n: n.encode("utf-8", "surrogateescape"))

    def open(self, path: str) -> BinaryIO:
        stream: BinaryIO = self.union.open(path)
        return stream

    def host_path(self, path: str) -> str | None:
        return None

    def link_identity(self, path: str) -> tuple[int, int] | None:
        """The (layer, member) whose bytes ``path`` shows: paths hard-linked in the image share it."""
        try:
            content = self.union.stat(path).content
        except (OSError, LayerkitError):
            return None
        return None if content is None else (content.layer, content.seq)


# -- chmod ---------------------------------------------------------------------------------------------

_SYMBOLIC_OP = re.compile(r"([-+=])([ugo]|[rwxXst]*)")


def parse_chmod(spec: str) -> Callable[[int, bool], int]:
    """``--chmod`` as a function ``(mode, is_dir) -> mode``: octal replaces the permission bits,
    symbolic (``u+x,go-w``, ``a=rX``) edits them like chmod(1)."""
    if re.fullmatch(r"[0-7]{1,4}", spec):
        value = int(spec, 8)
        return lambda mode, is_dir: (mode & ~0o7777) | value
    clauses = []
    for part in spec.split(","):
        ops = []
        m = re.match(r"[ugoa]*", part)
        assert m is not None
        who_seen = m.group(0)
        pos = m.end()
        while pos < len(part):
            m2 = _SYMBOLIC_OP.match(part, pos)
            if m2 is None:
                raise BuildError(f"invalid --chmod={spec}: use an octal mode like 0755 or a symbolic one like u+rwx")
            ops.append((m2.group(1), m2.group(2)))
            pos = m2.end()
        if not ops:
            raise BuildError(f"invalid --chmod={spec}: use an octal mode like 0755 or a symbolic one like u+rwx")
        clauses.append((who_seen or "a", ops))

    def apply(mode: int, is_dir: bool) -> int:
        for who, ops in clauses:
            mask = 0
            for w in "a" if "a" in who else who:
                mask |= {"u": 0o4700, "g": 0o2070, "o": 0o0007, "a": 0o6777}[w]
            for op, perms in ops:
                bits = 0
                if perms in ("u", "g", "o"):
                    shift = {"u": 6, "g": 3, "o": 0}[perms]
                    v = (mode >> shift) & 7
                    bits = v << 6 | v << 3 | v
                else:
                    for p in perms:
                        if p == "r":
                            bits |= 0o444
                        elif p == "w":
                            bits |= 0o222
                        elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
                            bits |= 0o111
                        elif p == "s":
                            bits |= 0o6000
                        elif p == "t":
                            bits |= 0o1000
                bits &= mask | (0o1000 if "t" in perms and ("o" in who or "a" in who) else 0)
                if op == "+":
                    mode |= bits
                elif op == "-":
                    mode &= ~bits
                else:
                    mode = (mode & ~(mask & 0o7777)) | bits
        return mode

    return apply


def apply_chmod(spec: str, mode: int, is_dir: bool = False) -> int:
    return parse_chmod(spec)(mode, is_dir)


# -- wildcards and fingerprints ------------------------------------------------------------------------


def _split_wildcards(path: str) -> tuple[str, str]:
    """BuildKit's ``splitWildcards``: the literal head and the part from the first wildcard on."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    head: list[str] = []
    tail: list[str] = []
    for p in parts:
        if tail or has_wildcards(p):
            tail.append(p)
        else:
            head.append(p)
    return "/".join(head) or ".", "/".join(tail)


def expand_wildcards(fs: SourceFS, pattern: str) -> list[str] | None:
    """The source paths ``pattern`` names, in walk order; None for a literal path (no wildcard).

    Like ``resolveWildcards``: walk below the literal head, match the rest against each relative
    path, and do not descend into a matched directory.
    """
    head, tail = _split_wildcards(pattern)
    if not tail:
        return None
    base = fs.resolve(head)
    if base is None:
        return []
    base_entry = fs.lstat(base)
    if base_entry is None or not base_entry.is_dir():
        return []
    depth = tail.count("/") + 1
    unbounded = "**" in tail
    out: list[str] = []

    def walk(rel: str, level: int) -> None:
        d = base if not rel else (rel if base == "." else f"{base}/{rel}")
        for name in fs.listdir(d):
            r = f"{rel}/{name}" if rel else name
            path = r if base == "." else f"{base}/{r}"
            if go_match(tail, r):
                out.append(path)
                continue
            e = fs.lstat(path)
            if e is not None and e.is_dir() and (unbounded or level + 1 < depth):
                walk(r, level + 1)

    walk("", 0)
    return out


def fingerprint_sources(
    fs: Any, patterns: list[str], *, excludes: tuple[str, ...] = (), parents: bool = False
) -> str:
    """A digest of everything COPY would read from the build context: every matched entry below
    each source (after ``.dockerignore`` and ``--exclude``) with its relative path, type, mode,
    size, link target and content sha256 — never mtime or inode. Raises CopySourceError for a
    missing literal source."""
    h = hashlib.sha256()
    exclude = PatternMatcher.from_patterns(list(excludes)) if excludes else None
    for pattern in patterns:
        h.update(b"\x00src\x00" + pattern.encode("utf-8", "surrogateescape"))
        matches = _matches(fs, pattern, parents)
        for top in matches:
            real = fs.resolve(top)
            if real is None:
                raise CopySourceError(f"{top!r} not found in the build context")
            walk_lstat = getattr(fs, "walk_lstat", None)
            if walk_lstat is not None:  # the build context: one lstat per entry, no Entry objects
                prune = exclude.matches if exclude is not None else None
                for path, rel, host, st in walk_lstat(real, prune):
                    kind = _STAT_KINDS.get(stat.S_IFMT(st.st_mode))
                    if kind is None:
                        fs.lstat(path)  # raises the context's error for sockets and the like
                        continue
                    content = link = ""
                    if kind == "file":
                        content = fs.stat_cache.digest_text(path, host, st)
                    elif kind == "symlink":
                        link = os.readlink(host)
                    size = st.st_size if kind == "file" else 0
                    h.update(_fingerprint_record(top, rel, kind, stat.S_IMODE(st.st_mode), size, link, content))
                continue
            stack = [(real, "")]
            while stack:
                path, rel = stack.pop()
                if exclude is not None and rel and exclude.matches(rel):
                    continue
                e = fs.lstat(path)
                if e is None:
                    continue
                content = str(fs.content_digest(path)) if e.is_file() else ""
                h.update(_fingerprint_record(top, rel, e.type.value, e.mode, e.size, e.linkname, content))
                if e.is_dir():
                    for name in reversed(fs.listdir(path)):
                        stack.append((f"{path}/{name}" if path != "." else name, f"{rel}/{name}" if rel else name))
    return h.hexdigest()


#: lstat file type -> EntryType value, for the types a layer can hold
_STAT_KINDS = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
    stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
}


def _fingerprint_record(top: str, rel: str, kind: str, mode: int, size: int, link: str, content: str) -> bytes:
    return f"\x00{top}\x00{rel}\x00{kind}\x00{mode:o}\x00{size}\x00{link}\x00{content}".encode(
        "utf-8", "surrogateescape"
    )


def _matches(fs: SourceFS, pattern: str, parents: bool) -> list[str]:
    if parents:
        pivot, _ = _parents_split(pattern)
        return [pivot]
    expanded = expand_wildcards(fs, pattern)
    if expanded is None:
        clean = clean_member(pattern.lstrip("/") or ".") if pattern.strip("/") else "."
        if fs.resolve(clean) is None:
            raise CopySourceError(f"{pattern!r} not found: no such file or directory in {fs.name}")
        return [clean]
    return expanded


def _parents_split(pattern: str) -> tuple[str, str]:
    """``--parents``: ``a/./b/*.txt`` keeps paths relative to ``a``; without ``/./`` to the root."""
    p = pattern.lstrip("/")
    if "/./" in p:
        pivot, rest = p.split("/./", 1)
        return clean_member(pivot) if pivot else ".", rest
    if p.startswith("./"):
        return ".", p[2:]
    return ".", p


# -- archives ------------------------------------------------------------------------------------------


def _decompressor(head: bytes) -> Callable[[BinaryIO], BinaryIO]:
    """The decoder for an archive's first bytes: bzip2 and xz from the stdlib, gzip/zstd/plain
    through tarfs (the one place codecs live)."""
    if head[:3] == b"BZh":
        import bz2  # only ADD of a .bz2 archive needs it

        return lambda f: bz2.BZ2File(f)  # type: ignore[return-value]
    if head[:6] == b"\xfd7zXZ\x00":
        import lzma  # only ADD of a .xz archive needs it

        return lambda f: lzma.LZMAFile(f)  # type: ignore[return-value]
    from ..tarfs.compression import open_decompressed

    return lambda f: open_decompressed(f)


def _open_archive(fs: SourceFS, path: str) -> BinaryIO | None:
    """An uncompressed stream of the tar at ``path``, or None when it is not a tar (BuildKit:
    the decompressed stream must start with a valid tar header)."""
    f = fs.open(path)
    head = f.read(6)
    opener = _decompressor(head)
    f.close()
    raw = fs.open(path)
    try:
        stream = opener(raw)
        block = stream.read(512)
    except (OSError, EOFError, ValueError, LayerkitError):  # not in the format its magic claimed
        raw.close()
        return None
    if not _is_tar_header(block):
        raw.close()
        return None
    return _Prefixed(block, stream)  # type: ignore[return-value]


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512 or block == bytes(512):
        return False
    try:
        stored = int(block[148:156].split(b"\x00", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return stored == computed


class _Prefixed(io.RawIOBase):
    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._rest.close()
        super().close()


def is_archive(fs: SourceFS, path: str) -> bool:
    stream = _open_archive(fs, path)
    if stream is None:
        return False
    stream.close()
    return True


# -- planning --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyRequest:
    """One COPY/ADD after expansion. ``dest`` is absolute with its trailing ``/`` kept."""

    sources: tuple[str, ...]
    dest: str
    inline: tuple[tuple[str, bytes], ...] = ()  # heredoc files: (name, content)
    chown: tuple[int, int] | None = None
    chmod: str | None = None
    excludes: tuple[str, ...] = ()
    parents: bool = False
    unpack: bool = False  # ADD: extract local archives
    mtime_ns: int = 0  # for created parents and inline files
    inline_mode: int = 0o644


@dataclass
class _Planned:
    """One member of a COPY layer and where its bytes come from."""

    entry: Entry
    fs: SourceFS | None = None
    src: str = ""
    data: bytes | None = None
    spool: str | None = None
    lazy: bool = False  # a parent created only for what is below it (``--parents``/include walks)


@dataclass
class CopyPlan:
    """The entries one step writes, keyed by path; lower directories it touches are added at write."""

    planned: dict[str, _Planned] = field(default_factory=dict)
    touched: dict[str, Entry] = field(default_factory=dict)
    spool_dir: str | None = None

    def entries(self) -> list[Entry]:
        out = [p.entry for p in self.planned.values()]
        out.extend(e for path, e in self.touched.items() if path not in self.planned)
        out.sort(key=lambda e: layer_order_key(e.path))
        return out

    def write(self, writer: LayerWriter) -> int:
        """Stream every entry into ``writer`` in canonical order; returns the entry count."""
        count = 0
        try:
            for entry in self.entries():
                p = self.planned.get(entry.path)
                if p is None or not entry.is_file() or entry.size == 0:
                    writer.add(entry)
                elif p.data is not None:
                    writer.add(entry, io.BytesIO(p.data))
                elif p.spool is not None:
                    writer.add_file_from_path(entry, p.spool)
                else:
                    assert p.fs is not None
                    host = p.fs.host_path(p.src)
                    if host is not None:
                        writer.add_file_from_path(entry, host)
                    else:
                        with p.fs.open(p.src) as f:
                            writer.add(entry, f)
                count += 1
        finally:
            self.cleanup()
        return count

    def cleanup(self) -> None:
        if self.spool_dir is not None:
            shutil.rmtree(self.spool_dir, ignore_errors=True)
            self.spool_dir = None


class CopyPlanner:
    """Plans COPY/ADD onto a destination tree: the parent image's union (``None`` for scratch or
    ``--link``) plus what this step already planned."""

    def __init__(self, lower: Any | None, *, tmp_dir: Path | None = None) -> None:
        self.lower = lower
        self.plan = CopyPlan()
        self._tmp_dir = tmp_dir
        self._inodes: dict[tuple[object, ...], str] = {}

    # -- the destination view ------------------------------------------------------------------------
    def _dlstat(self, path: str) -> Entry | None:
        p = self.plan.planned.get(path)
        if p is not None:
            return p.entry
        if path == ".":
            return Entry(".", EntryType.DIR, 0o755)
        return self._lower_entry(path)

    def _lower_entry(self, path: str) -> Entry | None:
        """What the parent image has at ``path`` (intermediate symlinks followed, as the union does)."""
        if self.lower is None:
            return None
        try:
            node = self.lower.stat(path)
        except (OSError, LayerkitError):
            return None
        return node.entry  # type: ignore[no-any-return]

    def _dresolve(self, path: str, *, follow_last: bool = True) -> tuple[str, bool]:
        """Resolve ``path`` in the destination (symlinks inside the root). Returns the resolved
        path and whether it exists; a missing component ends resolution (the rest is appended)."""

        def lookup(cand: str) -> tuple[bool, str | None] | None:
            e = self._dlstat(cand)
            return None if e is None else (e.is_dir(), e.linkname if e.is_symlink() else None)

        try:
            found = resolve_in_root(path, lookup, follow_last=follow_last, max_links=MAX_SYMLINKS)
        except SymlinkLoopError:
            raise CopySourceError(f"resolving {path!r} in the image: too many levels of symbolic links") from None
        if found.not_dir:
            raise CopySourceError(f"cannot copy to {'/' + path!r}: {'/' + found.not_dir!r} is not a directory")
        if found.found:
            return found.path, True
        prefix = [] if found.path == "." else [found.path]
        return "/".join(prefix + [c for c in found.rest if c != ".."]), False

    def _touch_parents(self, path: str) -> None:
        parent = path.rpartition("/")[0]  # paths here are clean: dirname without posixpath's generality
        while parent and parent != ".":
            if parent in self.plan.planned or parent in self.plan.touched:
                break
            e = self._dlstat(parent)
            if e is not None:
                self.plan.touched[parent] = replace(e, path=parent)
            parent = parent.rpartition("/")[0]

    def _put(self, planned: _Planned) -> None:
        path = planned.entry.path
        self.plan.planned[path] = planned
        self._touch_parents(path)

    def mkdir_all(self, path: str, req: CopyRequest) -> str:
        """``MkdirAll(path, 0755, chown, utime)`` in the destination; returns the resolved path."""
        resolved, _ = self._dresolve(path)
        if resolved == ".":
            return resolved
        parts = resolved.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            e = self._dlstat(sub)
            if e is None:
                uid, gid = req.chown or (0, 0)
                self._put(_Planned(Entry(sub, EntryType.DIR, 0o755, uid, gid, mtime_ns=req.mtime_ns)))
            elif not e.is_dir():
                raise CopySourceError(f"cannot create directory {'/' + resolved!r}: {'/' + sub!r} is not a directory")
        return resolved

    # -- copying ---------------------------------------------------------------------------------------
    def add(self, fs: SourceFS | None, req: CopyRequest) -> None:
        """Plan one COPY/ADD (all its sources) onto the destination."""
        chmod = parse_chmod(req.chmod) if req.chmod else None
        exclude = PatternMatcher.from_patterns(list(req.excludes)) if req.excludes else None
        dest = req.dest
        for name, data in req.inline:
            e = Entry(name, EntryType.FILE, req.inline_mode, size=len(data), mtime_ns=req.mtime_ns)
            self._copy_top(_Planned(e, data=data), name, dest, req, chmod, is_dir=False)
        if fs is None:
            return
        for pattern in req.sources:
            if req.parents:
                self._copy_parents(fs, pattern, dest, req, chmod, exclude)
                continue
            for src in _matches(fs, pattern, False):
                if exclude is not None and src != "." and exclude.matches(posixpath.basename(src)):
                    continue
                real = fs.resolve(src)
                if real is None:
                    raise CopySourceError(f"{src!r} not found: no such file or directory in {fs.name}")
                if req.unpack and self._maybe_unpack(fs, real, dest, req):
                    continue
                top = fs.lstat(real)
                assert top is not None
                base = posixpath.basename(src) if src != "." else ""
                self._copy_top(_Planned(top, fs=fs, src=real), base, dest, req, chmod, is_dir=top.is_dir(),
                               exclude=exclude)

    def _copy_top(self, item: _Planned, base: str, dest: str, req: CopyRequest,
                  chmod: Callable[[int, bool], int] | None, *, is_dir: bool,
                  exclude: PatternMatcher | None = None) -> None:
        """``ensureDstPath`` + ``prepareTargetDir`` + ``copy`` for one resolved source (so a wildcard
        matching nothing creates nothing, not even the destination)."""
        if dest.endswith("/"):
            self.mkdir_all(dest, req)
        else:
            self.mkdir_all(posixpath.dirname(dest.rstrip("/")) or "/", req)
        target, exists = self._dresolve(dest.rstrip("/") or "/")
        dest_entry = self._dlstat(target) if exists else None
        if not is_dir and dest_entry is not None and dest_entry.is_dir():
            target = base if target == "." else f"{target}/{base}"
        if is_dir and dest_entry is None:
            self.mkdir_all(target, req)
        else:
            self.mkdir_all(posixpath.dirname(target) or "/", req)
        if is_dir:
            assert item.fs is not None
            self._copy_tree(item.fs, item.src, target, "", req, chmod, exclude, overwrite=False)
        else:
            self._copy_leaf(item, target, req, chmod)

    def _meta(self, e: Entry, target: str, req: CopyRequest, chmod: Callable[[int, bool], int] | None) -> Entry:
        uid, gid = req.chown if req.chown is not None else (e.uid, e.gid)
        mode = e.mode
        if chmod is not None and not e.is_symlink():
            mode = chmod(mode, e.is_dir()) & 0o7777
        # a new Entry field by field: dataclasses.replace costs more than the rest of planning a file
        return Entry(target, e.type, mode, uid, gid, e.size, e.mtime_ns, e.linkname, e.devmajor, e.devminor,
                     dict(e.xattrs))

    def _copy_leaf(self, item: _Planned, target: str, req: CopyRequest,
                   chmod: Callable[[int, bool], int] | None, *, below_new: bool = False) -> None:
        if below_new:  # the parent image has nothing here: only this step's plan can
            planned = self.plan.planned.get(target)
            existing = None if planned is None else planned.entry
        else:
            existing = self._dlstat(target)
        if existing is not None and existing.is_dir() and not item.entry.is_dir():
            raise CopySourceError(f"cannot replace directory {'/' + target!r} with a {item.entry.type.value}")
        entry = self._meta(item.entry, target, req, chmod)
        identity = getattr(item.fs, "link_identity", None)
        found = identity(item.src) if identity is not None and entry.is_file() else None
        key = None if found is None else (type(item.fs).__name__, *found)
        if key is not None:  # hard links copied together stay hard links (as BuildKit keeps them)
            first = self._inodes.get(key)
            if first is not None and first in self.plan.planned:
                entry = replace(entry, type=EntryType.HARDLINK, linkname=first, size=0)
            else:
                self._inodes[key] = target
        self._put(_Planned(entry, fs=item.fs, src=item.src, data=item.data, spool=item.spool))

    def _copy_tree(self, fs: SourceFS, src: str, target: str, rel: str, req: CopyRequest,
                   chmod: Callable[[int, bool], int] | None, exclude: PatternMatcher | None,
                   *, overwrite: bool, below_new: bool = False) -> None:
        """Copy ``src`` (and what is below it) to ``target``. ``below_new``: the parent image has
        nothing at ``target``'s parent, so nothing below it either (no lookup in the image)."""
        e = fs.lstat(src)
        if e is None:
            return
        if not e.is_dir():
            self._copy_leaf(_Planned(e, fs=fs, src=src), target, req, chmod, below_new=below_new)
            return
        planned = self.plan.planned.get(target)
        if planned is not None:
            existing: Entry | None = planned.entry
            lower = None if below_new or target == "." else self._lower_entry(target)
        elif target == ".":
            existing = lower = Entry(".", EntryType.DIR, 0o755)
        else:
            existing = lower = None if below_new else self._lower_entry(target)
        if existing is None or overwrite:
            if existing is not None and not existing.is_dir():
                raise CopySourceError(f"cannot copy directory {src!r} to non-directory {'/' + target!r}")
            self._put(_Planned(self._meta(e, target, req, chmod)))
        elif not existing.is_dir():
            raise CopySourceError(f"cannot copy to non-directory {'/' + target!r}")
        children_new = lower is None and target != "."
        for name in fs.listdir(src):
            child_rel = f"{rel}/{name}" if rel else name
            if exclude is not None and exclude.matches(child_rel):
                continue
            child_src = name if src == "." else f"{src}/{name}"
            child_target = name if target == "." else f"{target}/{name}"
            self._copy_tree(fs, child_src, child_target, child_rel, req, chmod, exclude, overwrite=True,
                            below_new=children_new)

    def _copy_parents(self, fs: SourceFS, pattern: str, dest: str, req: CopyRequest,
                      chmod: Callable[[int, bool], int] | None, exclude: PatternMatcher | None) -> None:
        """``--parents``: copy what ``rest`` matches below ``pivot``, keeping the relative path."""
        pivot, rest = _parents_split(pattern)
        root = fs.resolve(pivot)
        if root is None:
            raise CopySourceError(f"{pattern!r} not found: no such file or directory in {fs.name}")
        rest_parts = [p for p in rest.split("/") if p not in ("", ".")]
        if not has_wildcards(rest) and fs.resolve(f"{root}/{rest}" if root != "." else rest) is None:
            raise CopySourceError(f"{pattern!r} not found: no such file or directory in {fs.name}")
        base_target = self.mkdir_all(dest, req)
        found = self._walk_parents(fs, root, "", rest_parts, base_target, req, chmod, exclude)
        if not found and not has_wildcards(rest):
            raise CopySourceError(f"{pattern!r} not found: no such file or directory in {fs.name}")

    def _walk_parents(self, fs: SourceFS, src: str, rel: str, parts: list[str], target: str, req: CopyRequest,
                      chmod: Callable[[int, bool], int] | None, exclude: PatternMatcher | None) -> bool:
        found = False
        depth = rel.count("/") + 1 if rel else 0
        for name in fs.listdir(src):
            child_rel = f"{rel}/{name}" if rel else name
            child_src = name if src == "." else f"{src}/{name}"
            child_target = name if target == "." else f"{target}/{name}"
            if exclude is not None and exclude.matches(child_rel):
                continue
            if _full_match(parts, child_rel):
                self._copy_tree(fs, child_src, child_target, child_rel, req, chmod, exclude, overwrite=True)
                found = True
                continue
            e = fs.lstat(child_src)
            if e is not None and e.is_dir() and _prefix_match(parts, depth, name):
                before = set(self.plan.planned)
                if self._dlstat(child_target) is None:
                    self._put(_Planned(self._meta(e, child_target, req, chmod), lazy=True))
                if self._walk_parents(fs, child_src, child_rel, parts, child_target, req, chmod, exclude):
                    found = True
                else:  # nothing below matched: drop what this walk created speculatively
                    for path in set(self.plan.planned) - before:
                        del self.plan.planned[path]
        return found

    def _maybe_unpack(self, fs: SourceFS, real: str, dest: str, req: CopyRequest) -> bool:
        """ADD of a local archive: extract it into ``dest`` (a directory, created if needed)."""
        top = fs.lstat(real)
        if top is None or not top.is_file():
            return False
        stream = _open_archive(fs, real)
        if stream is None:
            return False
        from ..tarfs.reader import iter_entries

        target = self.mkdir_all(dest, req)
        if self.plan.spool_dir is None:
            tmp = self._tmp_dir
            if tmp is not None:
                tmp.mkdir(parents=True, exist_ok=True)
            self.plan.spool_dir = tempfile.mkdtemp(prefix="add-", dir=tmp)
        n = len(self.plan.planned)
        with stream:
            for i, (entry, content) in enumerate(iter_entries(stream, layer=f"archive {real}")):
                if entry.path == ".":
                    continue
                path = entry.path if target == "." else f"{target}/{entry.path}"
                e = replace(entry, path=path, xattrs=dict(entry.xattrs))
                if req.chown is not None:
                    e.uid, e.gid = req.chown
                if e.is_hardlink():
                    e.linkname = e.linkname if target == "." else f"{target}/{e.linkname}"
                # parents missing from the archive are created like Untar does (0755, root)
                self.mkdir_all("/" + posixpath.dirname(path) if "/" in path else "/", req)
                spool = None
                if e.is_file() and content is not None and e.size:
                    spool = f"{self.plan.spool_dir}/{n + i}"
                    with open(spool, "wb") as out:
                        shutil.copyfileobj(content, out, 1 << 20)
                self._put(_Planned(e, spool=spool))
        return True


def _full_match(parts: list[str], rel: str) -> bool:
    return go_match("/".join(parts), rel) or ("**" in parts and _doublestar(parts, rel.split("/")))


def _doublestar(parts: list[str], comps: list[str]) -> bool:
    if not parts:
        return not comps
    if parts[0] == "**":
        return any(_doublestar(parts[1:], comps[i:]) for i in range(len(comps) + 1))
    return bool(comps) and go_match(parts[0], comps[0]) and _doublestar(parts[1:], comps[1:])


def _prefix_match(parts: list[str], depth: int, name: str) -> bool:
    """Could a path below directory component ``name`` (at ``depth``) still match ``parts``?"""
    if "**" in parts[: depth + 1]:
        return True
    return depth < len(parts) - 1 and go_match(parts[depth], name)
