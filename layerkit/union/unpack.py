"""Write a merged rootfs (or one layer onto a tree) to disk, never touching anything outside it.

:func:`unpack` reads every layer exactly once, newest first, and writes as it reads: what a layer
shows is decided from the layers above it (their whiteouts, opaque markers, non-directories and
directories, gathered as hiding flags per path while they streamed), so every surviving path is
written once, nothing a higher layer hides is ever written, and there is no intermediate state.
Directories are made as entries need them (0700), their modes and times applied last, deepest
first. Hard links are made as they are met, to the original written earlier in the same layer.

What one streaming pass cannot decide alone — a hard link to a lower layer or to a hidden original,
a path repeated in one layer with another type, and every malformed or hostile layer — makes it
step back: the target is emptied and the stack is indexed first (:class:`~layerkit.union.tree.Union`,
every layer read for its headers) and then written top-down from the index, which gives the exact
same tree, report and errors as it always did; only such images pay a second read.

:func:`apply_layer` is the bottom-up counterpart for the builder's snapshot cache: one layer stream
onto an existing tree, whiteouts applied to lower content only, with the same path rules as the
index (a lower non-directory in the way of a member becomes a directory; writing through a
non-directory planted by the same layer is refused).

Policy, explicit for every privileged thing a layer can carry:

- as root (the default): owners, setuid/setgid bits, ``security.capability`` and device nodes are
  kept, for a runnable rootfs. A root that cannot create device nodes (a container without
  ``CAP_MKNOD``, root in a user namespace) is refused with an error pointing at ``--rootless``.
- not root: refused up front unless ``rootless`` is asked for (owners and devices need root).
- ``rootless``: no chown (every file belongs to the caller); device nodes are *skipped* and
  reported; only ``user.*`` xattrs are written (so ``security.capability`` is skipped and
  reported). Setuid/setgid bits are kept: the builder's rootless rootfs must show a step the
  image's real modes. ``layerkit unpack --rootless`` adds ``no_privileged_bits``.
- ``no_privileged_bits``: setuid/setgid bits of regular files are stripped and reported in
  :attr:`UnpackResult.stripped`; ``security.capability`` is not written and reported in
  :attr:`UnpackResult.skipped` (directory setgid, which only steers group inheritance, is kept).

``trusted.overlay.*`` xattrs are never written: they steer overlayfs when the tree is later used as a
lower dir. Every write goes through :class:`~layerkit.union.safefs.SafeRoot` with symlink-free
parent resolution.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from ..errors import InvalidWhiteoutError, LayerError, UnsafePathError
from ..tarfs.entry import Entry, EntryType
from ..tarfs.limits import default_limits
from ..tarfs.paths import parent
from ..tarfs.reader import Limits, iter_entries
from ..tarfs.whiteout import (
    WHITEOUT_PREFIX,
    is_opaque,
    is_whiteout_meta,
    whiteout_target,
)
from .layers import compressed_size, implicit_dir, is_image, layer_label
from .readahead import LayerStreams
from .safefs import SafeRoot, copy_to_fd

if TYPE_CHECKING:  # pragma: no cover
    from .tree import Node, Union

__all__ = ["Progress", "SkippedEntry", "StrippedBits", "UnpackResult", "apply_layer", "unpack"]

#: ``progress(stage, done, total)``: stage "index" counts layers, "write" counts content bytes.
Progress = Callable[[str, int, int], None]


class SkippedEntry(NamedTuple):
    """An entry or xattr the policy (or the filesystem) left out, and why."""

    path: str
    layer: int | str
    reason: str


class StrippedBits(NamedTuple):
    """A file written without the privileged mode bits (``setuid``, ``setgid``) it had in the image."""

    path: str
    layer: int | str
    bits: tuple[str, ...]


@dataclass
class UnpackResult:
    """What an unpack wrote, and what its policy left out or changed."""

    files: int = 0  # regular files written (hard links counted apart)
    dirs: int = 0
    bytes: int = 0
    skipped: list[SkippedEntry] = field(default_factory=list)  # entries and xattrs not written, and why
    stripped: list[StrippedBits] = field(default_factory=list)  # setuid/setgid removed by policy
    symlinks: int = 0
    hardlinks: int = 0
    specials: int = 0  # device nodes and fifos
    removed: int = 0  # apply_layer: paths removed by whiteouts or replacement


class _Policy(NamedTuple):
    """What the caller allows: owners and devices (root) or not, privileged mode bits or not."""

    rootless: bool
    no_privileged_bits: bool

    def mode(self, entry: Entry) -> int:
        """The mode to set: setuid/setgid of a regular file stripped when the policy says so."""
        if self.no_privileged_bits and entry.type is EntryType.FILE:
            return entry.mode & 0o1777
        return entry.mode & 0o7777

    def xattr_refusal(self, key: str) -> str | None:
        if key.startswith(("trusted.overlay.", "user.overlay.")):
            return "overlayfs control attribute"
        if key == "security.capability" and (self.rootless or self.no_privileged_bits):
            return "file capabilities are a privileged bit"
        if self.rootless and not key.startswith("user."):
            return "only user.* attributes can be set without root"
        return None


def _policy(rootless: bool, no_privileged_bits: bool) -> _Policy:
    if not rootless and os.geteuid() != 0:
        raise LayerError(
            "unpacking as a non-root user: file owners and device nodes need root; pass rootless=True "
            "(layerkit unpack --rootless) to own every file yourself and skip device nodes"
        )
    return _Policy(rootless, no_privileged_bits)


class _Writer:
    """Creates entries and applies their metadata inside a SafeRoot, per policy, counting."""

    def __init__(self, root: SafeRoot, policy: _Policy, result: UnpackResult,
                 creator: tuple[int, int] | None = None) -> None:
        self.root = root
        self.policy = policy
        self.result = result
        # (uid, gid) every entry this writer creates already has, when known: no chown is needed
        # for the entries that want exactly that owner (most of a rootfs belongs to root:root)
        self.creator = creator
        # the streaming unpack writes in another order than the index-first one; each report line
        # gets the sort key of the step that made it there, so the report keeps its order
        self.key: tuple[Any, ...] = ()
        self.skip_keys: list[tuple[Any, ...]] = []
        self.strip_keys: list[tuple[Any, ...]] = []

    def skip(self, path: str, layer: int | str, reason: str) -> None:
        self.result.skipped.append(SkippedEntry(_display(path), layer, reason))
        self.skip_keys.append(self.key)

    def sort_report(self) -> None:
        """Put the report in the index-first unpack's order (stable: one step's lines stay together)."""
        r = self.result
        r.skipped = [e for _, e in sorted(zip(self.skip_keys, r.skipped), key=lambda t: t[0])]
        r.stripped = [e for _, e in sorted(zip(self.strip_keys, r.stripped), key=lambda t: t[0])]

    def mode(self, path: str, entry: Entry, layer: int | str) -> int:
        mode = self.policy.mode(entry)
        gone = entry.mode & ~mode & 0o6000
        if gone:
            bits = ("setuid",) * bool(gone & 0o4000) + ("setgid",) * bool(gone & 0o2000)
            self.result.stripped.append(StrippedBits(_display(path), layer, bits))
            self.strip_keys.append(self.key)
        return mode

    def write_file(self, path: str, entry: Entry, content: BinaryIO, layer: int | str) -> None:
        fd = self.root.create_file(path, 0o600)
        try:
            self.result.bytes += copy_to_fd(content, fd)
            if not self.policy.rootless and (entry.uid, entry.gid) != self.creator:
                os.fchown(fd, entry.uid, entry.gid)
            os.fchmod(fd, self.mode(path, entry, layer))  # after chown, which clears setuid
            for key, value in entry.xattrs.items():
                self._setxattr(lambda k, v: os.setxattr(fd, k, v), path, key, value, layer)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
        self.result.files += 1

    def make(self, path: str, entry: Entry, layer: int | str) -> bool:
        """Create a directory, symlink, device or fifo; False when policy skipped it."""
        t = entry.type
        if t is EntryType.DIR:
            if path != ".":
                self.root.mkdir(path, 0o700)
            self.result.dirs += 1
        elif t is EntryType.SYMLINK:
            self.root.symlink(path, entry.linkname)
            self.result.symlinks += 1
        elif t is EntryType.CHAR or t is EntryType.BLOCK:
            if self.policy.rootless:
                self.skip(path, layer, f"{t.value} device {entry.devmajor}:{entry.devminor} needs root")
                return False
            try:
                self.root.mknod(path, "char" if t is EntryType.CHAR else "block", 0o600, entry.devmajor, entry.devminor)
            except PermissionError as exc:
                raise LayerError(
                    f"unpacking {_display(path)} from layer {layer}: creating a {t.value} device: {exc.strerror}; "
                    "this root cannot make device nodes (a container without CAP_MKNOD, or a user namespace): "
                    "unpack with --rootless to skip them"
                ) from exc
            self.result.specials += 1
        elif t is EntryType.FIFO:
            self.root.mkfifo(path, 0o600)
            self.result.specials += 1
        else:  # pragma: no cover - files and links have their own paths
            raise AssertionError(t)
        return True

    def meta(self, path: str, entry: Entry, layer: int | str) -> None:
        """Owner, mode, xattrs and times of a non-file entry (never following a symlink)."""
        root = self.root
        owner = None
        if not self.policy.rootless and (path == "." or (entry.uid, entry.gid) != self.creator):
            owner = (entry.uid, entry.gid)  # the root directory was there before
        mode = None if entry.type is EntryType.SYMLINK else self.mode(path, entry, layer)
        root.set_attrs(path, owner=owner, mode=mode, mtime_ns=entry.mtime_ns)
        for key, value in entry.xattrs.items():  # after the chown, which clears file capabilities
            self._setxattr(lambda k, v: root.setxattr(path, k, v), path, key, value, layer)

    def _setxattr(self, setter: Callable[[str, bytes], None], path: str, key: str, value: bytes, layer: int | str) -> None:
        why = self.policy.xattr_refusal(key)
        if why is None:
            try:
                setter(key, value)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.EINVAL):
                    raise
                why = f"the filesystem refused it ({exc.strerror})"
        self.skip(path, layer, f"xattr {key}: {why}")


def _prepare_target(target_dir: str | os.PathLike[str]) -> str:
    target = os.fspath(target_dir)
    try:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            os.makedirs(target, mode=0o700)
            return target
    except OSError as exc:  # a parent that is a file, no permission, a read-only file system
        raise LayerError(f"unpacking into {target}: {exc.strerror or exc}; pass a directory you can create") from None
    if not stat.S_ISDIR(st.st_mode):
        raise LayerError(f"unpacking into {target}: it exists and is not a directory; pass an empty or new directory")
    if any(os.scandir(target)):
        raise LayerError(f"unpacking into {target}: the directory is not empty; pass an empty or new directory")
    return target


def _display(path: str) -> str:
    return "/" if path == "." else "/" + path


class _Context:
    """Names the layer and entry in every error leaving a write."""

    def __init__(self, labeler: Callable[[int], str] | None = None, label: str = "") -> None:
        self.labeler = labeler
        self.label = label

    def layer_label(self, layer: int | str) -> str:
        if isinstance(layer, int) and self.labeler is not None:
            return self.labeler(layer)
        return str(layer) if layer != "" else self.label

    def fail(self, exc: Exception, path: str, layer: int | str) -> Exception:
        label = self.layer_label(layer)
        if isinstance(exc, UnsafePathError):
            return UnsafePathError(exc.member, exc.reason, exc.layer or label)
        if isinstance(exc, OSError):
            return LayerError(
                f"unpacking {_display(path)} from layer {label}: {exc.strerror or exc}; "
                "the target is incomplete: remove it and retry once the cause is fixed"
            )
        return exc


def unpack(
    image: Any,
    target_dir: str | os.PathLike[str],
    *,
    rootless: bool = False,
    no_privileged_bits: bool = False,
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> UnpackResult:
    """Write the merged rootfs of ``image`` into ``target_dir``, which must be empty or absent.

    ``image`` is an Image, a layer list, a ready :class:`Union`, or :class:`LayerStreams` over the
    layers, already reading ahead (``unpack`` closes them).
    """
    streams = image if isinstance(image, LayerStreams) else None
    try:
        policy = _policy(rootless, no_privileged_bits)
        target = _prepare_target(target_dir)
        # what we create in the empty target belongs to us, unless a setgid target passes its group on
        # (the directories we make stay 0700, setgid-free, until the metadata pass)
        creator = None if os.stat(target).st_mode & stat.S_ISGID else (os.geteuid(), os.getegid())
        with SafeRoot(target, resolve="never") as root:
            if not _is_union(image):
                if streams is None:
                    streams = LayerStreams(image if is_image(image) else list(image))  # a list: read twice if it steps back
                w = _Writer(root, policy, UnpackResult(), creator)
                try:
                    final = _Stream(streams, limits or default_limits(), w, progress).run()
                except Exception:  # noqa: BLE001 - the index-first unpack decides, and reports, exactly
                    root.clear_dir(".")
                else:
                    final()
                    return w.result
            # the index: only for a ready Union or when the single pass steps back
            from .tree import Union

            if isinstance(image, Union):
                union = image
            else:
                index_cb = (lambda done, total: progress("index", done, total)) if progress else None
                union = Union(streams.source if streams is not None else image, limits=limits, progress=index_cb)
            w = _Writer(root, policy, UnpackResult(), creator)
            _write_union(union, w, _Context(union.label), progress)
        return w.result
    finally:
        if streams is not None:
            streams.close()


def _is_union(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`Union`, without importing the index for callers that have none."""
    tree = sys.modules.get(f"{__package__}.tree")
    return tree is not None and isinstance(obj, tree.Union)


#: hiding flags a layer leaves at a path for the layers below it
_SUBTREE = 1  # a whiteout or a non-directory: the path and everything under it
_CHILDREN = 2  # an opaque marker: everything under the path
_NODE = 4  # a directory: the lower version of the path itself (a directory's children stay)
_NONDIR = 8  # an implicit directory: a lower non-directory at the path
_HIDE_NONDIR = _SUBTREE | _NODE | _NONDIR

_IMPLICIT = "implicit"  # a directory a layer's members imply without spelling it out


class _Bail(Exception):
    """Something the streaming pass leaves to the index (see the module docstring)."""


class _Stream:
    """The single top-down pass: each layer streamed once, newest first, written as it is read.

    ``hides`` holds the flags of every layer above the one streaming; a member is visible when no
    flag above hides it (semantics in :mod:`layerkit.union.tree`, restated as what each layer hides
    below itself: whiteouts apply to lower layers only, so a layer's own flags take effect once it
    is done). Each layer keeps the types of its members (``kinds``) to apply the in-layer rules.
    """

    def __init__(self, streams: LayerStreams, limits: Limits, w: _Writer, progress: Progress | None) -> None:
        self.streams = streams
        self.layers = streams.layers
        self.limits = limits
        self.w = w
        self.root = w.root
        self.progress = progress
        self.hides: dict[str, int] = {}
        self.made: dict[str, int] = {".": len(self.layers) - 1}  # directories on disk -> the layer that made them
        self.dir_meta: dict[str, tuple[Entry, int]] = {}  # the metadata each visible directory shows
        self.others: list[tuple[str, Entry, int]] = []  # devices, fifos, symlinks with xattrs: metadata last

    def label(self, i: int) -> str:
        return layer_label(self.layers[i], i)

    def run(self) -> Callable[[], None]:
        """Stream every layer; returns the metadata pass (whose errors the index-first way shares)."""
        n = len(self.layers)
        written = 0
        try:
            for done, i in enumerate(reversed(range(n))):
                written = self._layer(i, written)
                if self.progress is not None:
                    self.progress("index", done + 1, n)
        finally:
            self.streams.close()
        return self._finish

    def _layer(self, i: int, written: int) -> int:
        layer = self.layers[i]
        hides, made, w, root = self.hides, self.made, self.w, self.root
        kinds: dict[str, Any] = {}  # path -> EntryType, or _IMPLICIT
        content: dict[str, str] = {}  # FILE/HARDLINK member -> the FILE member holding its bytes
        on_disk: set[str] = set()  # FILE members written at their own path
        pending: dict[str, int] = {}  # the flags this layer leaves for the layers below
        kid_ok: dict[str, bool] = {}  # directory -> may its children from this layer show?

        def kids_visible(d: str) -> bool:
            """No flag above hides ``d``'s subtree (memoized per directory, iteratively: trees nest deeply)."""
            ok = kid_ok.get(d)
            if ok is not None:
                return ok
            chain = []
            while ok is None:
                chain.append(d)
                if d == ".":
                    ok = True
                    break
                d = parent(d)
                ok = kid_ok.get(d)
            for q in reversed(chain):
                ok = ok and not hides.get(q, 0) & (_CHILDREN if q == "." else _SUBTREE | _CHILDREN)
                kid_ok[q] = ok
            return ok

        def implied(path: str) -> None:
            """Record the missing ancestors of ``path`` as this layer's implicit directories."""
            missing = []
            d = parent(path)
            while d != "." and d not in kinds:
                missing.append(d)
                d = parent(d)
            if kinds.get(d, EntryType.DIR) not in (EntryType.DIR, _IMPLICIT):
                raise _Bail  # a parent this layer made a non-directory: the index refuses it
            for q in reversed(missing):
                kinds[q] = _IMPLICIT
                pending[q] = pending.get(q, 0) | _NONDIR
                if q not in made and kids_visible(parent(q)) and not hides.get(q, 0) & _SUBTREE:
                    root.mkdir(q, 0o700)
                    made[q] = i

        raw, stream = self.streams.open(i)  # a big layer was decompressing while the ones above it were written
        try:
            entries = iter_entries(stream, layer=self.label(i), limits=self.limits, compressed_size=compressed_size(layer))
            for seq, (entry, data) in enumerate(entries):
                path = entry.path
                if WHITEOUT_PREFIX in path:
                    d, _, name = path.rpartition("/")
                    if WHITEOUT_PREFIX in d and any(c.startswith(WHITEOUT_PREFIX) for c in d.split("/")):
                        raise _Bail
                    if name.startswith(WHITEOUT_PREFIX):
                        if is_opaque(path):
                            d = d or "."
                            pending[d] = pending.get(d, 0) | _CHILDREN
                        elif not is_whiteout_meta(path):
                            target = whiteout_target(path)  # InvalidWhiteoutError: the index reports it
                            pending[target] = pending.get(target, 0) | _SUBTREE
                        continue
                t = entry.type
                if path == ".":
                    if t is not EntryType.DIR:
                        raise _Bail
                    kinds["."] = t
                    pending["."] = pending.get(".", 0) | _NODE
                    if not hides.get(".", 0) & _NODE:
                        self.dir_meta["."] = (entry, i)
                    continue
                d = parent(path)
                pk = kinds.get(d)
                if pk is not EntryType.DIR and pk is not _IMPLICIT and d != ".":
                    implied(path)
                prev = kinds.get(path)
                if prev is not None and not (t is EntryType.DIR and (prev is EntryType.DIR or prev is _IMPLICIT)):
                    raise _Bail  # a path repeated in one layer with another type: the index orders it
                f = hides.get(path, 0)
                visible = kids_visible(d) and not f & _SUBTREE
                if t is EntryType.DIR:
                    kinds[path] = t
                    pending[path] = pending.get(path, 0) | _NODE
                    if visible:
                        if path not in made:
                            root.mkdir(path, 0o700)
                            made[path] = i
                        if not f & _NODE:
                            self.dir_meta[path] = (entry, i)
                    continue
                kinds[path] = t
                pending[path] = pending.get(path, 0) | _SUBTREE
                visible = visible and not f & _HIDE_NONDIR
                if t is EntryType.FILE:
                    content[path] = path
                    if visible:
                        w.key = (2, -i, seq)
                        w.write_file(path, entry, data, i)  # type: ignore[arg-type]
                        on_disk.add(path)
                        written += entry.size
                        if self.progress is not None:
                            self.progress("write", written, written)
                elif t is EntryType.HARDLINK:
                    c = content.get(entry.linkname)
                    if c is None or entry.linkname == path:
                        raise _Bail  # a lower layer's file, a non-file or itself: the index decides
                    content[path] = c
                    if visible:
                        if c not in on_disk:
                            raise _Bail  # its original is hidden: the index picks the path for the bytes
                        root.link(path, c)
                        w.result.hardlinks += 1
                elif t is EntryType.SYMLINK and not entry.xattrs:
                    if visible:  # nothing made later changes a symlink: its metadata goes on now
                        w.make(path, entry, i)
                        w.meta(path, entry, i)
                elif visible:
                    w.key = (1, _walk_key(path))
                    if w.make(path, entry, i):
                        self.others.append((path, entry, i))
        finally:
            if stream is not raw:
                stream.close()
            raw.close()
        for path, flags in pending.items():
            hides[path] = hides.get(path, 0) | flags
        return written

    def _finish(self) -> None:
        """Metadata of devices, fifos and symlinks with xattrs, then of directories deepest first."""
        w = self.w
        ctx = _Context(self.label)
        w.sort_report()
        w.key = (9,)
        for path, entry, i in sorted(self.others, key=lambda o: _walk_key(o[0])):
            _guard(ctx, path, i, partial(w.meta, path, entry, i))
        for path in sorted(self.made, key=_walk_key, reverse=True):
            entry, i = self.dir_meta.get(path) or (implicit_dir(path), self.made[path])
            _guard(ctx, path, i, partial(w.meta, path, entry, i))
        w.result.dirs = len(self.made)


def _walk_key(path: str) -> tuple[str, ...]:
    """The index's walk order (depth first, children sorted by name) as a sort key."""
    return () if path == "." else tuple(path.split("/"))


def _write_union(union: Union, w: _Writer, ctx: _Context, progress: Progress | None) -> None:
    dirs: list[Node] = []
    others: list[Node] = []
    # content plan: layer -> seq -> (path to write, metadata entry); links: (path, existing path)
    plan: dict[int, dict[int, tuple[str, Entry]]] = {}
    links: list[tuple[Node, str]] = []
    first_link: dict[int, str] = {}  # id(content node) -> path written for a hidden original
    total = 0
    for node in union.walk():
        t = node.entry.type
        if t is EntryType.DIR:
            dirs.append(node)
            continue
        c = node.content
        if c is None:
            others.append(node)
        elif t is EntryType.FILE:
            plan.setdefault(node.layer, {})[node.seq] = (node.path, node.entry)
            total += node.entry.size
        elif union.shows(c):  # original visible: written at its own path, link to it
            links.append((node, c.path))
        elif id(c) in first_link:
            links.append((node, first_link[id(c)]))
        else:  # original hidden: its bytes (and inode metadata) land at this link path
            first_link[id(c)] = node.path
            plan.setdefault(c.layer, {})[c.seq] = (node.path, c.entry)
            total += c.entry.size

    for node in dirs:  # preorder: parents first; 0700 until the metadata pass
        _guard(ctx, node.path, node.layer, partial(w.make, node.path, node.entry, node.layer))
    made = [n for n in others if _guard(ctx, n.path, n.layer, partial(w.make, n.path, n.entry, n.layer))]

    done = 0
    for layer in sorted(plan, reverse=True):  # newest first
        wanted = plan[layer]
        stream = union.layers[layer].open_tar()
        try:
            label = union.label(layer)
            size = compressed_size(union.layers[layer])
            for seq, (entry, content) in enumerate(iter_entries(stream, layer=label, limits=union.limits,
                                                                compressed_size=size)):
                job = wanted.get(seq)
                if job is None:
                    continue
                path, meta = job
                assert content is not None, "the index planned content for a non-file"
                _guard(ctx, path, layer, partial(w.write_file, path, meta, content, layer))
                done += meta.size
                if progress is not None:
                    progress("write", done, total)
        finally:
            stream.close()

    for node, existing in links:
        _guard(ctx, node.path, node.layer, partial(w.root.link, node.path, existing))
        w.result.hardlinks += 1
    for node in made:
        _guard(ctx, node.path, node.layer, partial(w.meta, node.path, node.entry, node.layer))
    for node in reversed(dirs):  # deepest first: a read-only or timed dir is finished after its children
        _guard(ctx, node.path, node.layer, partial(w.meta, node.path, node.entry, node.layer))


def _guard(ctx: _Context, path: str, layer: int | str, op: Callable[[], Any]) -> Any:
    try:
        return op()
    except (UnsafePathError, OSError) as exc:
        raise ctx.fail(exc, path, layer) from exc


# ------------------------------------------------------------------------------------------------
# one layer onto an existing tree (bottom-up)


def apply_layer(
    layer_stream: BinaryIO,
    target_dir: str | os.PathLike[str],
    *,
    layer: str = "",
    rootless: bool = False,
    no_privileged_bits: bool = False,
    limits: Limits | None = None,
) -> UnpackResult:
    """Apply one uncompressed layer tar onto the tree at ``target_dir`` (created when absent).

    Whiteouts hide only what was there before this layer, wherever they sit in the tar; paths are
    never resolved through symlinks (a lower symlink where this layer needs a directory is
    replaced by one, as overlayfs shows it).
    """
    policy = _policy(rootless, no_privileged_bits)
    target = os.fspath(target_dir)
    os.makedirs(target, exist_ok=True)
    result = UnpackResult()
    ctx = _Context(label=layer)
    with SafeRoot(target, resolve="never") as root:
        ap = _Applier(_Writer(root, policy, result), ctx, layer)
        for entry, content in iter_entries(layer_stream, layer=layer, limits=limits):
            _guard(ctx, entry.path, layer, partial(ap.apply, entry, content))
        ap.finish()
    return result


class _Applier:
    def __init__(self, w: _Writer, ctx: _Context, layer: str) -> None:
        self.w = w
        self.root = w.root
        self.ctx = ctx
        self.layer = layer
        self.created: dict[str, EntryType] = {}  # paths this layer made (last type wins)
        self.touched: set[str] = set()  # ancestors of what this layer made
        self.dirs: dict[str, Entry] = {}  # directory metadata, applied at the end

    # -- whiteouts: lower content only ---------------------------------------------------------------

    def _whiteout(self, entry: Entry) -> None:
        path = entry.path
        if is_opaque(path):
            d = parent(path)
            st = self._lstat(d)
            if st is None or not stat.S_ISDIR(st.st_mode):
                return
            for name in self.root.listdir(d):
                self._remove_lower(name if d == "." else f"{d}/{name}")
            return
        if is_whiteout_meta(path):
            return
        try:
            target = whiteout_target(path)
        except InvalidWhiteoutError as exc:
            raise UnsafePathError(path, f"invalid whiteout: {exc}") from None
        self._remove_lower(target)

    def _lstat(self, path: str) -> os.stat_result | None:
        try:
            return self.root.lstat(path)
        except UnsafePathError:  # a lower symlink in the way: lexically nothing is there
            return None

    def _remove_lower(self, path: str) -> None:
        """Remove ``path`` except what this layer created in it (iteratively)."""
        stack = [path]
        while stack:
            p = stack.pop()
            if p in self.created or p in self.touched:
                if self.created.get(p, EntryType.DIR) is EntryType.DIR:
                    st = self._lstat(p)
                    if st is not None and stat.S_ISDIR(st.st_mode):
                        stack.extend(f"{p}/{n}" for n in self.root.listdir(p))
                continue
            if self._lstat(p) is not None and self.root.remove(p):
                self.w.result.removed += 1

    # -- members -----------------------------------------------------------------------------------

    def apply(self, entry: Entry, content: BinaryIO | None) -> None:
        path = entry.path
        if WHITEOUT_PREFIX in path:
            parts = path.split("/")
            if any(c.startswith(WHITEOUT_PREFIX) for c in parts[:-1]):
                raise UnsafePathError(path, "a parent component is a whiteout name")
            if parts[-1].startswith(WHITEOUT_PREFIX):
                self._whiteout(entry)
                return
        if path == ".":
            if not entry.is_dir():
                raise UnsafePathError("/", f"the image root must be a directory, not a {entry.type.value}")
            self.dirs["."] = entry
            return
        self._ensure_parents(path)
        st = self.root.lstat(path)
        if st is not None:
            if stat.S_ISDIR(st.st_mode) and entry.is_dir():
                self.created[path] = EntryType.DIR
                self.dirs[path] = entry
                return
            if entry.is_hardlink() and entry.linkname == path:
                raise UnsafePathError(path, "hard link to itself")
            self.root.remove(path)
            self.w.result.removed += 1
            if stat.S_ISDIR(st.st_mode):
                self._forget(path)
        t = entry.type
        if t is EntryType.FILE:
            assert content is not None
            self.w.write_file(path, entry, content, self.layer)
        elif t is EntryType.HARDLINK:
            self.root.link(path, entry.linkname)
            self.w.result.hardlinks += 1
        else:
            if self.w.make(path, entry, self.layer):
                if t is EntryType.DIR:
                    self.dirs[path] = entry
                else:
                    self.w.meta(path, entry, self.layer)
        self.created[path] = t

    def _forget(self, path: str) -> None:
        """A replaced subtree: what this layer made below it is gone too."""
        prefix = path + "/"
        for p in [p for p in self.created if p.startswith(prefix)]:
            del self.created[p]
            self.dirs.pop(p, None)
        self.touched = {p for p in self.touched if not p.startswith(prefix)}
        self.dirs.pop(path, None)

    def _ensure_parents(self, path: str) -> None:
        d = parent(path)
        if d == "." or d in self.touched or self.created.get(d) is EntryType.DIR:
            return
        cur = ""
        for comp in d.split("/"):
            cur = comp if not cur else f"{cur}/{comp}"
            if cur in self.touched:
                continue
            st = self.root.lstat(cur)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                kind = self.created.get(cur)
                if kind is not None:
                    raise UnsafePathError(
                        path, f"its parent {cur!r} is a {kind.value} created earlier in the same layer; writing through it is refused"
                    )
                self.root.remove(cur)  # a lower non-directory: overlayfs shows this layer's directory
                self.w.result.removed += 1
                st = None
            if st is None:
                self.root.mkdir(cur, 0o755)
            self.touched.add(cur)

    def finish(self) -> None:
        for path in sorted(self.dirs, key=lambda p: p.count("/") + (p != "."), reverse=True):
            entry = self.dirs[path]
            _guard(self.ctx, path, self.layer, partial(self.w.meta, path, entry, self.layer))
