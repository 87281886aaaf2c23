"""Wasted space: bytes a layer stores that the final image never shows — and dive's own figures.

**layerkit's waste** is exact: a regular file's bytes are wasted when its version is not visible in
the merged image (overwritten or deleted by a later layer, hidden by an opaque directory, or under a
directory a later layer replaced). ``reclaimableBytes`` is their sum: what squashing the image would
save in content bytes. Every wasted copy names the layer that hid it.

**dive's figures** (dive 0.13, ``dive/filetree/efficiency.go`` and ``dive/image/image.go``) are
reproduced as dive defines them, quirks included, so CI rules migrate unchanged:

- each layer is a tree of its tar members (``.wh..wh..*`` names, i.e. opaque markers, are dropped;
  missing parents become payload-less nodes); only *leaf* nodes are visited, children sorted;
- a leaf's size is its header size, but a whiteout leaf counts the size of everything below the
  deleted path *if it was a directory* in the layers below (stacked dive-style, a deleted file
  counts 0); a whiteout of a path that does not exist below stops the visit of that layer;
- per path: ``cumulative`` = sum of sizes over layers, ``minimum`` = the smallest;
  ``efficiency = Σ minimum / Σ cumulative`` (1.0 when nothing), ``wastedBytes`` = Σ cumulative of
  paths seen in two or more layers, ``userWastedPercent = wastedBytes / Σ layer sizes after the
  first`` (a layer's size is the sum of its members' header sizes). ``None`` when that is 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..tarfs.entry import EntryType
from ..union import Union
from ..union.tree import Fate

__all__ = ["DiveFigures", "Waste", "WastedCopy", "WastedPath", "dive_figures", "waste"]

_REASON = {Fate.OVERWRITTEN: "overwritten", Fate.WHITED_OUT: "deleted", Fate.OPAQUE_HIDDEN: "opaque"}


@dataclass(frozen=True)
class WastedCopy:
    """One copy of a path that a higher layer hides: the bytes it still ships, and why."""

    layer: int
    size: int
    hidden_by: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "size": self.size, "hiddenBy": self.hidden_by, "reason": self.reason}


@dataclass
class WastedPath:
    """A path shipped more than once in the stack, with every hidden copy."""

    path: str
    bytes: int = 0
    copies: list[WastedCopy] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": "/" + self.path, "bytes": self.bytes, "copies": [c.to_json() for c in self.copies]}


@dataclass(frozen=True)
class DiveFigures:
    """dive's efficiency figures, computed the way dive computes them."""

    efficiency: float
    wasted_bytes: int
    user_wasted_percent: float | None
    size_bytes: int
    user_size_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"efficiency": self.efficiency, "wastedBytes": self.wasted_bytes,
                "userWastedPercent": self.user_wasted_percent}


@dataclass
class Waste:
    """The bytes an image ships but never shows: per layer, per path, and dive's figures."""

    reclaimable_bytes: int
    per_layer: list[int]
    paths: list[WastedPath]
    dive: DiveFigures

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        paths = self.paths if top is None else self.paths[:top]
        return {"reclaimableBytes": self.reclaimable_bytes, "paths": [p.to_json() for p in paths],
                "dive": self.dive.to_json()}


def waste(union: Union) -> Waste:
    """Exact waste per layer and per path (largest first), plus dive's figures."""
    by_path: dict[str, WastedPath] = {}
    per_layer = [f.hidden_bytes for f in union.layer_fates()]
    for i in range(len(union.layers)):
        for node in union.versions(i):
            e = node.entry
            if node.fate is Fate.VISIBLE or e.type is not EntryType.FILE or not e.size:
                continue
            wp = by_path.setdefault(node.path, WastedPath(node.path))
            wp.bytes += e.size
            assert node.by is not None
            wp.copies.append(WastedCopy(i, e.size, node.by, _REASON[node.fate]))
    paths = sorted(by_path.values(), key=lambda p: (-p.bytes, p.path))
    return Waste(sum(per_layer), per_layer, paths, dive_figures(union))


# ------------------------------------------------------------------------------------------------
# dive 0.13


class _D:
    """A dive FileNode: children plus the payload dive looks at (header size, is-dir)."""

    __slots__ = ("children", "is_dir", "size")

    def __init__(self, size: int = 0, is_dir: bool = False) -> None:
        self.children: dict[str, _D] = {}
        self.size = size
        self.is_dir = is_dir

    def ensure_dir(self, path: str) -> _D | None:
        """The node at raw ``path`` (``""`` or ``/a/b``), missing ones created without payload, as
        dive's ``AddPath`` walks to a parent; ``None`` where it would create a ``.wh..wh..`` name."""
        node = self
        if path:
            for name in path[1:].split("/"):
                child = node.children.get(name)
                if child is None:
                    if name.startswith(".wh..wh.."):
                        return None
                    child = node.children[name] = _D()
                node = child
        return node

    def get(self, path: str) -> _D | None:
        node: _D | None = self
        for name in path.split("/"):
            if name:
                node = node.children.get(name) if node is not None else None
        return node

    def remove(self, path: str) -> None:
        parent_path, _, name = path.rpartition("/")
        parent = self.get(parent_path)
        if parent is not None:
            parent.children.pop(name, None)

    def visit(self) -> list[tuple[str, _D]]:
        """Depth-first, children sorted, each node after its children (dive's VisitDepthChildFirst),
        as raw member paths (whiteout prefix kept); iterative: trees nest deeply."""
        out: list[tuple[str, _D]] = []
        stack: list[tuple[_D | None, str, Iterator[tuple[str, _D]]]] = [(None, "", iter(sorted(self.children.items())))]
        while stack:
            node, base, it = stack[-1]
            for name, child in it:
                path = f"{base}/{name}"
                if child.children:
                    stack.append((child, path, iter(sorted(child.children.items()))))
                    break
                out.append((path, child))
            else:
                stack.pop()
                if node is not None:
                    out.append((base, node))
        return out

    def total(self) -> int:
        total, todo = 0, [self]
        while todo:
            node = todo.pop()
            total += node.size
            todo.extend(node.children.values())
        return total


def _dive_path(raw: str) -> str:
    head, _, name = raw.rpartition("/")
    return f"{head}/{name[4:]}" if name.startswith(".wh.") else raw


def _stack(lower: _D, upper: list[tuple[str, _D]]) -> None:
    """dive's ``FileTree.Stack`` of an upper tree (its visit): whiteouts remove, everything else
    (parents included) is added. Consecutive nodes mostly share a parent: it is looked up once."""
    cached: str | None = None
    parent: _D | None = None
    for raw, node in upper:
        head, _, name = raw.rpartition("/")
        if name.startswith(".wh."):
            lower.remove(_dive_path(raw))
            cached = None  # the cached parent may have gone with it
            continue
        if head != cached:
            parent, cached = lower.ensure_dir(head), head
        if parent is None:
            continue
        _add_path(parent, name, node.size, node.is_dir)


def _layer_tree(items: Iterable[tuple[str, int, bool]]) -> _D:
    """One layer as dive sees it: ``AddPath`` of each member (cleaned paths) in order."""
    root = _D()
    dirs: dict[str, _D | None] = {"": root}  # raw parent path -> node (None: not creatable)
    for path, size, is_dir in items:
        head, _, name = path.rpartition("/")
        raw_head = f"/{head}" if head else ""
        if raw_head in dirs:
            parent = dirs[raw_head]
        else:
            parent = dirs[raw_head] = root.ensure_dir(raw_head)
        if parent is None:
            continue
        _add_path(parent, name, size, is_dir)
    return root


def _add_path(parent: _D, name: str, size: int, is_dir: bool) -> None:
    """dive's ``AddPath`` at the last component: a new child, or new facts for an existing one;
    an opaque marker (``.wh..wh..*``) is never added as a file."""
    child = parent.children.get(name)
    if child is None:
        if name.startswith(".wh..wh.."):
            return
        child = parent.children[name] = _D()
    child.size, child.is_dir = size, is_dir


def _dive_layers(union: Union) -> tuple[list[list[tuple[str, int, bool]]], list[list[str]], list[int]]:
    """Per layer: its members as ``(path, header size, is_dir)``, its whiteout markers, its size."""
    layers, markers, sizes = [], [], []
    FILE, DIR = EntryType.FILE, EntryType.DIR
    for i in range(len(union.layers)):
        items = []
        total = 0
        for node in union.versions(i):
            if node.path == ".":
                continue
            e = node.entry
            t = e.type
            size = e.size if t is FILE else 0
            total += size
            items.append((node.path, size, t is DIR))
        layers.append(items)
        markers.append(union.whiteouts(i))
        sizes.append(total)
    return layers, markers, sizes


def dive_figures(union: Union) -> DiveFigures:
    layers, markers, sizes = _dive_layers(union)
    return _efficiency(layers, markers, sizes)


class _Abort(Exception):
    pass


class _Related:
    """Which paths can matter to dive's lookups of whiteout targets in the stacked tree: the
    targets, their ancestors and everything below them. An operation on any other path changes
    neither whether a target exists nor its payload nor its subtree, so the stacked tree needs
    only these (a few nodes instead of every path of every lower layer)."""

    def __init__(self, targets: set[str]) -> None:
        self.targets = targets
        self.ancestors: set[str] = set()
        for t in targets:
            while t:
                self.ancestors.add(t)
                t = t.rpartition("/")[0]
        self.tops = {t.split("/", 2)[1] for t in targets}
        self.below = tuple(t + "/" for t in targets) if len(targets) <= 64 else None

    def __call__(self, raw: str) -> bool:
        """``raw``: a ``/a/b`` path (a whiteout is tested by the path it deletes)."""
        if raw in self.ancestors:
            return True
        if raw.split("/", 2)[1] not in self.tops:
            return False
        if self.below is not None:  # a few targets: one C-level prefix test
            return raw.startswith(self.below)
        head = raw.rpartition("/")[0]
        while head:
            if head in self.targets:
                return True
            head = head.rpartition("/")[0]
        return False


def _efficiency(layers: list[list[tuple[str, int, bool]]], markers: list[list[str]],
                layer_sizes: list[int]) -> DiveFigures:
    """dive's score over the layers' members and whiteout markers. A layer without whiteouts is
    summed from its leaves directly (any order gives the same sums); a layer with whiteouts is
    visited as dive does, in order, against the stack of the layers below, which is built only
    then and only from the paths :class:`_Related` to some whiteout."""
    # path -> [cumulative, minimum, count]
    seen: dict[str, list[int]] = {}
    related = _Related({_dive_path("/" + m) for ms in markers for m in ms})

    def keep(raw: str) -> bool:
        return related(raw) or (".wh." in raw and related(_dive_path(raw)))

    def with_markers(j: int) -> list[tuple[str, int, bool]]:
        # header size 0: whiteout markers carry no data
        return layers[j] + [(m, 0, False) for m in markers[j]]

    # what dive looks a whiteout of layer k up in (its StackTreeRange(trees, 0, k-1)): a copy of
    # the first layer's tree, then layers 0..k-1 stacked on it (the first one twice over, as dive does)
    stacked = _D()
    stages = 0  # stage 0: the copy of the first tree; stage s > 0: layer s-1 stacked
    visits: dict[int, list[tuple[str, _D]]] = {}  # the exact visits of layers with whiteouts

    for idx in range(len(layers)):
        if not markers[idx]:
            _add_leaves(seen, layers[idx])
            continue
        visit = visits[idx] = _layer_tree(with_markers(idx)).visit()
        for stage in range(stages, idx + 1):
            if stage == 0:
                stacked = _layer_tree([it for it in with_markers(0) if keep("/" + it[0])])
            elif stage - 1 in visits:
                _stack(stacked, [(raw, node) for raw, node in visits[stage - 1] if keep(raw)])
            else:  # no whiteouts: only additions, whose order does not matter
                _stack(stacked, _layer_tree([it for it in layers[stage - 1] if keep("/" + it[0])]).visit())
        stages = max(stages, idx + 1)
        try:
            for raw, node in visit:
                if node.children:
                    continue
                name = raw.rpartition("/")[2]
                path = _dive_path(raw) if name.startswith(".wh.") else raw
                rec = seen.get(path)
                if rec is None:  # registered before the whiteout check, as dive does: an aborted
                    rec = seen[path] = [0, -1, 0]  # whiteout leaves its path with a minimum of -1
                if path is not raw:
                    prev = stacked.get(path)
                    if prev is None:
                        raise _Abort  # dive's visitor errors out and skips the rest of this layer
                    size = prev.total() if prev.is_dir else 0
                else:
                    size = node.size
                rec[0] += size
                if rec[1] < 0 or size < rec[1]:
                    rec[1] = size
                rec[2] += 1
        except _Abort:
            pass
    total = sum(r[0] for r in seen.values())
    score = 1.0 if total == 0 else sum(r[1] for r in seen.values()) / total
    wasted = sum(r[0] for r in seen.values() if r[2] >= 2)
    user = sum(layer_sizes[1:])
    return DiveFigures(score, wasted, wasted / user if user else None, sum(layer_sizes), user)


def _add_leaves(seen: dict[str, list[int]], items: list[tuple[str, int, bool]]) -> None:
    """The leaves of a whiteout-free layer's tree (members nothing else is below; the last of
    duplicates wins, as in the tree) added to dive's per-path sums."""
    sizes: dict[str, int] = {}
    inner: set[str] = set()
    for path, size, _is_dir in items:
        sizes[path] = size
        head = path.rpartition("/")[0]
        while head and head not in inner:
            inner.add(head)
            head = head.rpartition("/")[0]
    get = seen.get
    for path, size in sizes.items():
        if path in inner:
            continue
        key = "/" + path
        rec = get(key)
        if rec is None:
            seen[key] = [size, size, 1]
        else:
            rec[0] += size
            if rec[1] < 0 or size < rec[1]:
                rec[1] = size
            rec[2] += 1
