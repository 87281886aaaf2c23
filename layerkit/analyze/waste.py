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
    layer: int
    size: int
    hidden_by: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "size": self.size, "hiddenBy": self.hidden_by, "reason": self.reason}


@dataclass
class WastedPath:
    path: str
    bytes: int = 0
    copies: list[WastedCopy] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": "/" + self.path, "bytes": self.bytes, "copies": [c.to_json() for c in self.copies]}


@dataclass(frozen=True)
class DiveFigures:
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


def _dive_trees(union: Union) -> tuple[list[_D], list[int]]:
    trees, sizes = [], []
    for i in range(len(union.layers)):
        items = []
        total = 0
        for node in union.versions(i):
            if node.path == ".":
                continue
            e = node.entry
            t = e.type
            size = e.size if t is EntryType.FILE else 0
            total += size
            items.append((node.path, size, t is EntryType.DIR))
        # header size 0: whiteout markers carry no data
        items.extend((marker, 0, False) for marker in union.whiteouts(i))
        trees.append(_layer_tree(items))
        sizes.append(total)
    return trees, sizes


def dive_figures(union: Union) -> DiveFigures:
    trees, layer_sizes = _dive_trees(union)
    return _efficiency(trees, layer_sizes)


class _Abort(Exception):
    pass


def _efficiency(trees: list[_D], layer_sizes: Iterable[int]) -> DiveFigures:
    # path -> [cumulative, minimum, count]
    seen: dict[str, list[int]] = {}
    # the stacked tree starts as the first layer's (dive copies it; nothing else reads that tree)
    stacked = trees[0] if trees else _D()
    previous: list[tuple[str, _D]] = []
    for idx, tree in enumerate(trees):
        if idx > 0:
            _stack(stacked, previous)
        visit = tree.visit()  # before any stacking touches it (the first tree is the stacked one)
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
        previous = visit
    total = sum(r[0] for r in seen.values())
    score = 1.0 if total == 0 else sum(r[1] for r in seen.values()) / total
    wasted = sum(r[0] for r in seen.values() if r[2] >= 2)
    sizes = list(layer_sizes)
    user = sum(sizes[1:])
    return DiveFigures(score, wasted, wasted / user if user else None, sum(sizes), user)
