"""The fast paths of inspect give exactly the figures of the straightforward computation.

dive's figures: :func:`layerkit.analyze.waste.dive_figures` sums whiteout-free layers from their
leaves and stacks only the paths related to a whiteout; ``reference_dive`` below is the direct
transcription of dive 0.13 (every layer's tree, dive's ``StackTreeRange`` rebuilt in full for each
layer: a copy of the first tree, then layers 0..k-1 stacked on it) that the fast path replaced. Both
run on random layer stacks full of what makes dive quirky: whiteouts of files, directories and
missing paths, opaque markers, files replacing directories, duplicates and implicit parents.
"""

from __future__ import annotations

import io
import tarfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerkit.analyze.waste import (
    DiveFigures,
    _dive_path,
    _layer_tree,
    _stack,
    dive_figures,
)
from layerkit.errors import LayerkitError
from layerkit.tarfs.entry import EntryType
from layerkit.union import Union


def reference_dive(union: Union) -> DiveFigures:
    layers, sizes = [], []
    for i in range(len(union.layers)):
        items = []
        for node in union.versions(i):
            if node.path != ".":
                e = node.entry
                items.append((node.path, e.size if e.type is EntryType.FILE else 0, e.type is EntryType.DIR))
        sizes.append(sum(size for _p, size, _d in items))
        layers.append(items + [(m, 0, False) for m in union.whiteouts(i)])
    visits = [_layer_tree(items).visit() for items in layers]
    seen: dict[str, list[int]] = {}
    for idx, visit in enumerate(visits):
        stacked = _layer_tree(layers[0])  # StackTreeRange(trees, 0, idx - 1): a copy of the first tree,
        for j in range(idx):
            _stack(stacked, visits[j])  # then layers 0..idx-1 stacked on it
        for raw, node in visit:
            if node.children:
                continue
            name = raw.rpartition("/")[2]
            path = _dive_path(raw) if name.startswith(".wh.") else raw
            rec = seen.setdefault(path, [0, -1, 0])
            if path is not raw:
                prev = stacked.get(path)
                if prev is None:
                    break
                size = prev.total() if prev.is_dir else 0
            else:
                size = node.size
            rec[0] += size
            if rec[1] < 0 or size < rec[1]:
                rec[1] = size
            rec[2] += 1
    total = sum(r[0] for r in seen.values())
    score = 1.0 if total == 0 else sum(r[1] for r in seen.values()) / total
    wasted = sum(r[0] for r in seen.values() if r[2] >= 2)
    user = sum(sizes[1:])
    return DiveFigures(score, wasted, wasted / user if user else None, sum(sizes), user)


class _Layer:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def open_tar(self) -> Any:
        return io.BytesIO(self.data)


def _tar(members: list[tuple[str, str, int]]) -> _Layer:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, size in members:
            info = tarfile.TarInfo(name)
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, "x"
                tar.addfile(info)
            else:
                info.size = size
                tar.addfile(info, io.BytesIO(bytes(size)))
    return _Layer(buf.getvalue())


_NAMES = st.sampled_from(["a", "b", "c", "a/b", "a/c", "a/b/c", "a/b/d", "b/a", "c/c/c", "a/b/c/d"])
_MEMBER = st.one_of(
    st.tuples(_NAMES, st.sampled_from(["f", "d", "l"]), st.integers(0, 50)),
    st.tuples(_NAMES.map(lambda p: "/".join([*p.split("/")[:-1], ".wh." + p.split("/")[-1]])),
              st.just("f"), st.just(0)),
    st.tuples(_NAMES.map(lambda p: p + "/.wh..wh..opq"), st.just("f"), st.just(0)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_MEMBER, max_size=8), min_size=1, max_size=5))
def test_dive_figures_equal_the_reference(stack: list[list[tuple[str, str, int]]]) -> None:
    try:
        union = Union([_tar(members) for members in stack])
    except LayerkitError:
        return  # stacks the union refuses (a member below a same-layer file): nothing to compare
    assert dive_figures(union) == reference_dive(union)


def test_dive_figures_of_a_whiteout_over_a_big_lower_layer() -> None:
    """Only paths related to a whiteout are stacked, yet a deleted directory still counts its whole
    lower subtree, and a whiteout of a missing path still ends its layer's visit."""
    dirs = [("big", "d", 0)] + [(f"big/d{i}", "d", 0) for i in range(30)]
    lower = _tar(dirs + [(f"big/d{i}/f{j}", "f", 10) for i in range(30) for j in range(30)] + [("other/x", "f", 7)])
    upper = _tar([("big/.wh.d3", "f", 0), ("other/y", "f", 1)])
    missing = _tar([("big/.wh.nope", "f", 0), ("zz", "f", 5)])
    union = Union([lower, upper, missing])
    got = dive_figures(union)
    assert got == reference_dive(union)
    # 900 files of 10 bytes, /other/x, then /big/d3 deleted: its 300 bytes count once more; /other/y;
    # /big/nope is missing below: registered with a minimum of -1, and /zz after it is never visited
    assert got.efficiency == (9000 + 7 + 300 + 1 - 1) / (9000 + 7 + 300 + 1)
