"""The merged view of a layer stack, indexed from tar headers alone (no extraction, no content read).

Semantics are overlayfs / OCI image-spec layer.md, applied layer by layer, oldest first, into an
in-memory tree of headers:

- ``DIR/.wh.NAME`` removes ``DIR/NAME`` and its subtree as left by the *lower* layers;
  ``DIR/.wh..wh..opq`` removes every lower child of ``DIR``. Whiteouts of a layer are applied before
  its other entries, whatever their tar order, so they never hide siblings from the same layer.
  Whiteouts never create anything (a whiteout under a missing parent or under a lower symlink hides
  nothing: paths are looked up lexically, never through a symlink).
- A non-directory over a directory removes the whole lower subtree; a directory over a directory
  merges (the upper metadata wins); a directory over a non-directory replaces it.
- Every member's ancestors are directories *in its own layer*, as in an overlay upper dir: a missing
  ancestor, or a lower non-directory in the way, becomes an implicit directory (0755 root:root, mtime
  0 — exactly what Docker's overlay2 driver shows at runtime). A member below a non-directory that
  the *same* layer created (``ln -s /etc d`` then ``d/passwd``) is refused: writing through a
  symlink planted in the same layer is the classic extraction escape.
- Duplicates within a layer: the last one wins (Docker's extraction removes what was there).
- Hard links resolve when they are met, against the members before them in the same layer over the
  lower layers, and must name a regular file (or a hard link to one): never a directory, a symlink,
  a device or a path through a symlink. A link keeps pointing at its content even when a higher
  layer later hides the original path.

Indexing bottom-up with a dict was measured against a top-down pass with hiding sets: both read
every header once; bottom-up is simpler to get exactly right (hard links resolve against the state
"as of" their layer) and costs ~1.4 µs more per entry, noise beside tar parsing. Unpack and export
still *write* top-down from this index: each surviving file exactly once, nothing hidden ever.

Memory is O(entries): one :class:`Node` per member version plus the visible tree.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from ..digest import CHUNK
from ..errors import (
    InvalidWhiteoutError,
    LayerkitError,
    TarFormatError,
    UnsafePathError,
)
from ..tarfs.entry import Entry, EntryType
from ..tarfs.limits import default_limits
from ..tarfs.paths import SymlinkLoopError, parent, resolve_in_root
from ..tarfs.reader import Limits, iter_entries
from ..tarfs.whiteout import (
    WHITEOUT_PREFIX,
    is_opaque,
    is_whiteout_meta,
    whiteout_target,
)
from .layers import compressed_size, implicit_dir, is_image, layer_label

__all__ = [
    "Fate", "IndexCache", "LayerFate", "LayerLike", "Node", "Union", "compressed_size", "implicit_dir", "is_image",
    "layer_label",
]

#: Symlink hops allowed while resolving a path in the view (Linux's MAXSYMLINKS).
MAX_SYMLINKS = 40


class Fate(str, enum.Enum):
    """What became of one layer's version of a path in the merged view."""

    VISIBLE = "visible"
    OVERWRITTEN = "overwritten"  # replaced by a later entry (same or higher layer) at that path or above it
    WHITED_OUT = "whited-out"  # removed by a ``.wh.`` entry of a higher layer
    OPAQUE_HIDDEN = "opaque-hidden"  # removed by an opaque marker of a higher layer


class LayerLike(Protocol):
    """Anything :class:`Union` can index: ``layerkit.image.Layer`` or a test double."""

    def open_tar(self) -> BinaryIO: ...


class Node:
    """One layer's version of one path. The visible ones make up the merged view.

    ``layer`` is the layer index (0 = base), ``seq`` the member's ordinal in that layer's tar
    (``-1`` for implicit directories, which no member spells out). ``content`` is the FILE version
    whose bytes a FILE or HARDLINK shows (itself for a file), ``None`` for other types. ``by`` is the
    layer that hid this version (``None`` while visible).
    """

    __slots__ = ("by", "content", "entry", "fate", "implicit", "layer", "path", "seq")

    def __init__(self, path: str, layer: int, seq: int, entry: Entry, implicit: bool = False) -> None:
        self.path = path
        self.layer = layer
        self.seq = seq
        self.entry = entry
        self.fate = Fate.VISIBLE
        self.by: int | None = None
        self.content: Node | None = None
        self.implicit = implicit

    @property
    def type(self) -> EntryType:
        return self.entry.type

    def is_dir(self) -> bool:
        return self.entry.type is EntryType.DIR

    @property
    def size(self) -> int:
        """Bytes of content this version shows (a hard link shows its target's)."""
        return self.content.entry.size if self.content is not None else 0

    def __repr__(self) -> str:
        return f"<Node {self.path!r} {self.entry.type.value} layer={self.layer} {self.fate.value}>"

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        doc: dict[str, Any] = {
            "path": "/" if self.path == "." else "/" + self.path,
            "type": e.type.value,
            "mode": f"{e.mode:04o}",
            "uid": e.uid,
            "gid": e.gid,
            "size": self.size,
            "mtime_ns": e.mtime_ns,
            "layer": self.layer,
            "fate": self.fate.value,
        }
        if e.linkname:
            doc["linkname"] = e.linkname
        if e.is_device():
            doc["device"] = [e.devmajor, e.devminor]
        if self.by is not None:
            doc["hidden_by"] = self.by
        if self.implicit:
            doc["implicit"] = True
        return doc


@dataclass
class LayerFate:
    """Per-layer tally of what its entries became (whiteout markers counted apart)."""

    layer: int
    visible: int = 0
    overwritten: int = 0
    whited_out: int = 0
    opaque_hidden: int = 0
    visible_bytes: int = 0
    hidden_bytes: int = 0  # content bytes this layer ships that nobody can see: wasted space
    whiteouts: int = 0


_ROOT = "."


class IndexCache(Protocol):
    """Where member lists of layers are kept between unions (the store's
    :class:`~layerkit.store.layerindex.LayerIndexCache`)."""

    def load(self, digest: str, diff_id: str, limits: Limits) -> list[Entry] | None: ...

    def save(self, digest: str, diff_id: str, limits: Limits, entries: Sequence[Entry]) -> None: ...


class Union:
    """The merged view of an image's layers (or of any sequence of objects with ``open_tar()``).

    Paths are image paths; ``"/a/b"``, ``"a/b"`` and ``"./a/b"`` are the same. Lookups never follow
    symlinks unless asked (``follow=True``), and then only inside the image root (an absolute target
    or a ``..`` at the top resolves against the image's ``/``, as ``RESOLVE_IN_ROOT`` does).

    With an ``index_cache``, a layer with a digest and a diff ID is indexed from its cached member
    list when there is one, and its list is cached after it is read; file contents are always read
    from the layer itself.
    """

    def __init__(
        self,
        source: Any,
        *,
        limits: Limits | None = None,
        progress: Callable[[int, int], None] | None = None,
        index_cache: IndexCache | None = None,
    ) -> None:
        layers: Sequence[LayerLike] = source.layers if is_image(source) else list(source)
        self.image = source if is_image(source) else None
        self.layers: tuple[LayerLike, ...] = tuple(layers)
        self.limits = limits or default_limits()  # one value for every read of these layers
        self._index_cache = index_cache
        root = Node(_ROOT, 0, -1, implicit_dir(_ROOT), implicit=True)
        self._view: dict[str, Node] = {_ROOT: root}
        self._kids: dict[str, set[str]] = {_ROOT: set()}
        self._history: dict[str, list[Node]] = {_ROOT: [root]}
        self._by_layer: list[list[Node]] = []
        self._fates: list[LayerFate] | None = None
        self._whiteouts: list[list[str]] = []
        for i, layer in enumerate(self.layers):
            if progress is not None:
                progress(i, len(self.layers))
            self._index_layer(i, layer)
        if progress is not None:
            progress(len(self.layers), len(self.layers))

    @classmethod
    def from_image(cls, image: Any, *, limits: Limits | None = None) -> Union:
        return cls(image, limits=limits)

    # ------------------------------------------------------------------------------------------
    # indexing

    def label(self, index: int) -> str:
        return layer_label(self.layers[index], index) if 0 <= index < len(self.layers) else str(index)

    def _index_layer(self, i: int, layer: LayerLike) -> None:
        label = self.label(i)
        whiteouts: list[tuple[int, Entry]] = []
        members: list[tuple[int, Entry]] = []
        for seq, entry in enumerate(self._members(layer, label)):
            if WHITEOUT_PREFIX in entry.path and entry.name.startswith(WHITEOUT_PREFIX):
                whiteouts.append((seq, entry))
            else:
                members.append((seq, entry))
        self._by_layer.append([])
        self._whiteouts.append([])
        for _seq, entry in whiteouts:  # first: they hide lower layers only (image-spec layer.md)
            self._apply_whiteout(i, entry, label)
        for seq, entry in members:
            self._apply_entry(i, seq, entry, label)

    def _members(self, layer: LayerLike, label: str) -> list[Entry]:
        """The layer's members in tar order: from the index cache, or read (and then cached)."""
        cache = self._index_cache
        digest, diff_id = getattr(layer, "digest", None), getattr(layer, "diff_id", None)
        if cache is None or not digest or not diff_id:
            return self._read_members(layer, label)
        key = (str(digest), str(diff_id), self.limits)
        listed = cache.load(*key)
        if listed is None:
            listed = self._read_members(layer, label)
            cache.save(*key, listed)
        return listed

    def _read_members(self, layer: LayerLike, label: str) -> list[Entry]:
        stream = layer.open_tar()
        try:
            entries = iter_entries(stream, layer=label, limits=self.limits, compressed_size=compressed_size(layer),
                                   content=False)
            return [entry for entry, _content in entries]  # to the end: digest and diff ID verified
        finally:
            stream.close()

    def _apply_whiteout(self, i: int, entry: Entry, label: str) -> None:
        path = entry.path
        self._check_ancestors(path, label)
        if is_opaque(path):
            d = parent(path)
            self._whiteouts[i].append(path)
            node = self._view.get(d)
            if node is not None and node.is_dir():
                for name in list(self._kids[d]):
                    self._remove(_join(d, name), Fate.OPAQUE_HIDDEN, i)
            return
        if is_whiteout_meta(path):  # aufs bookkeeping (.wh..wh.plnk …): not a deletion, never shown
            return
        try:
            target = whiteout_target(path)
        except InvalidWhiteoutError as exc:
            raise UnsafePathError(path, f"invalid whiteout: {exc}", label) from None
        self._whiteouts[i].append(path)
        if target in self._view:
            self._remove(target, Fate.WHITED_OUT, i)

    def _check_ancestors(self, path: str, label: str) -> None:
        """Refuse members below a whiteout name: ``.wh.x/y`` is nothing a layer may spell."""
        if WHITEOUT_PREFIX in path:
            for comp in path.split("/")[:-1]:
                if comp.startswith(WHITEOUT_PREFIX):
                    raise UnsafePathError(path, f"a parent component {comp!r} is a whiteout name", label)

    def _apply_entry(self, i: int, seq: int, entry: Entry, label: str) -> None:
        path = entry.path
        if path == _ROOT:
            if not entry.is_dir():
                raise UnsafePathError("/", f"the image root must be a directory, not a {entry.type.value}", label)
            node = Node(_ROOT, i, seq, entry)
            self._replace_dir(self._view[_ROOT], node, i)
            return
        head, sep, name = path.rpartition("/")
        d = head if sep else _ROOT
        up = self._view.get(d)
        if up is None or up.entry.type is not EntryType.DIR or WHITEOUT_PREFIX in path:
            self._check_ancestors(path, label)
            self._ensure_parents(i, path, label)
        elif entry.type is EntryType.FILE and path not in self._view:
            # the common case, inlined (tens of thousands per layer): a new file in a visible directory
            node = Node(path, i, seq, entry)
            node.content = node
            self._by_layer[i].append(node)
            self._history.setdefault(path, []).append(node)
            self._view[path] = node
            self._kids[d].add(name)
            return
        node = Node(path, i, seq, entry)
        if entry.type is EntryType.FILE:
            node.content = node
        elif entry.type is EntryType.HARDLINK:
            node.content = self._link_target(path, entry.linkname, label)
        self._by_layer[i].append(node)
        self._history.setdefault(path, []).append(node)
        old = self._view.get(path)
        if old is not None:
            if old.is_dir() and node.is_dir():
                self._replace_dir(old, node, i, record=False)
                return
            self._remove(path, Fate.OVERWRITTEN, i)
        self._insert(node)

    def _link_target(self, path: str, linkname: str, label: str) -> Node:
        target = self._view.get(linkname)
        if target is None:
            raise UnsafePathError(
                path,
                f"hard link target {linkname!r} does not exist in this or a lower layer "
                "(links are never resolved through symlinks)",
                label,
            )
        if linkname == path:
            raise UnsafePathError(path, "hard link to itself", label)
        if target.content is None:
            raise UnsafePathError(
                path, f"hard link target {linkname!r} is a {target.entry.type.value}; only regular files can be linked", label
            )
        return target.content

    def _ensure_parents(self, i: int, path: str, label: str) -> None:
        d = parent(path)
        node = self._view.get(d)
        if node is not None and node.is_dir():
            return  # invariant: a visible dir's ancestors are visible dirs
        parts = path.split("/")[:-1]
        cur = _ROOT
        for comp in parts:
            cur = comp if cur == _ROOT else f"{cur}/{comp}"
            node = self._view.get(cur)
            if node is not None and node.is_dir():
                continue
            if node is not None:
                if node.layer == i and not node.implicit:
                    raise UnsafePathError(
                        path,
                        f"its parent {cur!r} is a {node.entry.type.value} created earlier in the same layer; "
                        "writing through it is refused",
                        label,
                    )
                self._remove(cur, Fate.OVERWRITTEN, i)
            imp = Node(cur, i, -1, implicit_dir(cur), implicit=True)
            self._history.setdefault(cur, []).append(imp)
            self._insert(imp)

    def _insert(self, node: Node) -> None:
        path = node.path
        self._view[path] = node
        self._kids[parent(path)].add(path.rpartition("/")[2])
        if node.is_dir():
            self._kids[path] = set()

    def _replace_dir(self, old: Node, new: Node, i: int, record: bool = True) -> None:
        """A directory over a directory: the upper metadata wins, children stay."""
        old.fate = Fate.OVERWRITTEN
        old.by = i
        self._view[new.path] = new
        if record:
            self._by_layer[i].append(new)
            self._history.setdefault(new.path, []).append(new)

    def _remove(self, path: str, fate: Fate, by: int) -> None:
        """Drop ``path`` and its subtree from the view (iteratively: layers may nest deeply)."""
        self._kids[parent(path)].discard(path.rpartition("/")[2])
        stack = [path]
        while stack:
            p = stack.pop()
            node = self._view.pop(p)
            node.fate = fate
            node.by = by
            kids = self._kids.pop(p, None)
            if kids:
                stack.extend(_join(p, k) for k in kids)

    # ------------------------------------------------------------------------------------------
    # the view

    def _lookup(self, path: str, follow: bool = False) -> Node:
        node = self._view.get(_norm(path))
        if node is not None and not (follow and node.entry.type is EntryType.SYMLINK):
            return node
        found = self._resolve(path, follow)
        if found is None:
            raise FileNotFoundError(f"{_display(path)}: no such file or directory in the image")
        return self._view[found]

    def _resolve(self, path: str, follow_last: bool) -> str | None:
        """Resolve ``path`` inside the view, following symlinks within the image root only."""

        def lookup(cand: str) -> tuple[bool, str | None] | None:
            node = self._view.get(cand)
            if node is None:
                return None
            return node.is_dir(), node.entry.linkname if node.entry.type is EntryType.SYMLINK else None

        try:
            found = resolve_in_root(path, lookup, follow_last=follow_last, max_links=MAX_SYMLINKS)
        except SymlinkLoopError:
            raise OSError(40, f"{_display(path)}: too many levels of symbolic links in the image") from None
        return found.path if found.found else None  # the root resolves to "." (_ROOT)

    def exists(self, path: str, *, follow: bool = False) -> bool:
        try:
            self._lookup(path, follow)
        except (FileNotFoundError, OSError):
            return False
        return True

    def stat(self, path: str, *, follow: bool = False) -> Node:
        """The visible node at ``path`` (``lstat`` semantics unless ``follow``)."""
        return self._lookup(path, follow)

    def realpath(self, path: str) -> str:
        """``path`` with every symlink resolved inside the image root (``"/"``-prefixed)."""
        return _display(self._lookup(path, follow=True).path)

    def listdir(self, path: str = "/", *, follow: bool = True) -> list[str]:
        node = self._lookup(path, follow)
        if not node.is_dir():
            raise NotADirectoryError(f"{_display(path)}: not a directory in the image")
        return sorted(self._kids[node.path])

    def walk(self, top: str = "/") -> Iterator[Node]:
        """Every visible node under ``top`` (itself first), depth-first, children sorted by name."""
        start = self._lookup(top)
        stack = [start.path]
        while stack:
            p = stack.pop()
            node = self._view[p]
            yield node
            kids = self._kids.get(p)
            if kids:
                base = "" if p == _ROOT else p + "/"
                stack.extend(base + k for k in sorted(kids, reverse=True))

    def shows(self, node: Node) -> bool:
        """True when ``node`` is the version the view shows at its path."""
        return self._view.get(node.path) is node

    def __len__(self) -> int:
        return len(self._view)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and _norm(path) in self._view

    # -- attribution -----------------------------------------------------------------------------

    def provider(self, path: str) -> int:
        """Index of the layer providing the visible ``path``."""
        return self._lookup(path).layer

    def history(self, path: str) -> list[Node]:
        """Every layer's version of ``path`` (implicit directories included), oldest first."""
        return list(self._history.get(_norm(path), ()))

    def hidden(self, path: str) -> list[int]:
        """Layers whose version of ``path`` exists but is not what the view shows."""
        return sorted(
            {n.layer for n in self._history.get(_norm(path), ()) if n.fate is not Fate.VISIBLE and not n.implicit}
        )

    def versions(self, layer: int) -> list[Node]:
        """Every member of ``layer`` (whiteouts aside) with its fate, in tar order."""
        return list(self._by_layer[layer])

    def whiteouts(self, layer: int) -> list[str]:
        """The whiteout and opaque markers ``layer`` carries (member paths)."""
        return list(self._whiteouts[layer])

    def layer_fates(self) -> list[LayerFate]:
        """What became of each layer's members (counts and bytes); computed once, the index is final."""
        if self._fates is not None:
            return self._fates
        out = []
        for i, nodes in enumerate(self._by_layer):
            f = LayerFate(i, whiteouts=len(self._whiteouts[i]))
            for n in nodes:
                size = n.entry.size if n.entry.type is EntryType.FILE else 0
                if n.fate is Fate.VISIBLE:
                    f.visible += 1
                    f.visible_bytes += size
                else:
                    f.hidden_bytes += size
                    if n.fate is Fate.OVERWRITTEN:
                        f.overwritten += 1
                    elif n.fate is Fate.WHITED_OUT:
                        f.whited_out += 1
                    else:
                        f.opaque_hidden += 1
            out.append(f)
        self._fates = out
        return out

    # -- content -----------------------------------------------------------------------------------

    def open(self, path: str) -> BinaryIO:
        """The bytes of the regular file at ``path`` (symlinks followed inside the image).

        The providing layer is streamed again up to the member; the rest of it is read when the
        member is consumed to its end, so the layer's digest is verified before EOF is returned.
        """
        node = self._lookup(path, follow=True)
        if node.content is None:
            if node.is_dir():
                raise IsADirectoryError(f"{_display(path)}: is a directory in the image")
            raise LayerkitError(f"reading {_display(path)}: it is a {node.entry.type.value}, not a regular file")
        return self.open_member(node.content.layer, node.content.seq)

    def open_member(self, layer: int, seq: int) -> BinaryIO:
        """A reader over the content of member ``seq`` of ``layer`` (see :meth:`open`)."""
        return _MemberReader(self.layers[layer], self.label(layer), seq, self.limits)  # type: ignore[return-value]

    def read_bytes(self, path: str) -> bytes:
        with self.open(path) as f:
            return f.read()


class _MemberReader(io.RawIOBase):
    """Streams one layer to member ``seq``, serves its content, then drains the layer (verifying)."""

    def __init__(self, layer: LayerLike, label: str, seq: int, limits: Limits | None) -> None:
        self._stream = layer.open_tar()
        self._it = iter_entries(self._stream, layer=label, limits=limits, compressed_size=compressed_size(layer))
        self._content: BinaryIO | None = None
        try:
            for n, (entry, content) in enumerate(self._it):
                if n == seq:
                    if content is None:
                        raise TarFormatError(f"layer {label}: member {seq} ({entry.path!r}) has no content")
                    self._content = content
                    break
            else:
                raise TarFormatError(f"layer {label}: member {seq} vanished when the layer was read again")
        except BaseException:
            self.close()
            raise

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if self._content is None:
            return b""
        if n is None or n < 0:
            parts = []
            while chunk := self._content.read(CHUNK):
                parts.append(chunk)
            self._finish()
            return b"".join(parts)
        data = self._content.read(n)
        if not data and n:
            self._finish()
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)

    def _finish(self) -> None:
        self._content = None
        for _ in self._it:  # drain: the digest check happens at the layer's EOF
            pass

    def close(self) -> None:
        if not self.closed:
            self._content = None
            self._it.close()  # type: ignore[attr-defined]
            self._stream.close()
        super().close()


def _norm(path: str) -> str:
    if path in ("", "/", "."):
        return _ROOT
    p = path.strip("/")
    p = p.removeprefix("./")
    if "//" in p or "/./" in p or p.endswith("/.") or ".." in p:
        parts = [c for c in p.split("/") if c not in ("", ".")]
        p = "/".join(parts) if parts else _ROOT
    return p or _ROOT


def _join(d: str, name: str) -> str:
    return name if d == _ROOT else f"{d}/{name}"


def _display(path: str) -> str:
    p = _norm(path)
    return "/" if p == _ROOT else "/" + p
