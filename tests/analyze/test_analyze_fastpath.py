"""The fast paths of inspect give exactly the figures of the straightforward computation, and
hashing in a thread verifies every byte as before.

dive's figures: :func:`layerkit.analyze.waste.dive_figures` sums whiteout-free layers from their
leaves and stacks only the paths related to a whiteout; ``reference_dive`` below is the direct
transcription of dive 0.13 (every layer's tree, dive's ``StackTreeRange`` rebuilt in full for each
layer: a copy of the first tree, then layers 0..k-1 stacked on it) that the fast path replaced. Both
run on random layer stacks full of what makes dive quirky: whiteouts of files, directories and
missing paths, opaque markers, files replacing directories, duplicates and implicit parents.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerkit import mediatypes as mt
from layerkit.analyze import inspect_image
from layerkit.analyze.waste import (
    DiveFigures,
    _dive_path,
    _layer_tree,
    _stack,
    dive_figures,
)
from layerkit.digest import ThreadedVerifyingReader
from layerkit.errors import DigestMismatchError, LayerkitError
from layerkit.image import Image
from layerkit.spec import Manifest
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


def test_dive_figures_with_many_whiteouts_equal_the_reference() -> None:
    """Past 64 whiteout targets the related paths are found by walking up each path's parents."""
    lower = _tar([(f"t/d{i}", "d", 0) for i in range(100)] + [(f"t/d{i}/f{j}", "f", i + j) for i in range(100)
                                                             for j in range(3)] + [("t/x", "f", 4)])
    upper = _tar([(f"t/.wh.d{i}", "f", 0) for i in range(0, 100, 2)] + [(f"t/d{i}/.wh.f1", "f", 0) for i in range(1, 60, 2)]
                 + [("t/d3/g", "f", 9)])
    top = _tar([(f"t/.wh.d{i}", "f", 0) for i in range(1, 30, 2)] + [("t/.wh.d0", "f", 0), ("u", "f", 1)])
    union = Union([lower, upper, top])
    assert dive_figures(union) == reference_dive(union)


# --- hashing in a thread: the same verification as VerifyingReader ---------------------------------

ABC = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_threaded_verifying_reader_passes_good_bytes_in_any_chunking() -> None:
    r = ThreadedVerifyingReader(io.BytesIO(b"abc"), ABC, 3)
    assert r.read(1) + r.read(5) + r.read() == b"abc"
    big = bytes(range(256)) * 40_000
    r = ThreadedVerifyingReader(io.BytesIO(big), "sha256:" + hashlib.sha256(big).hexdigest(), len(big), depth=2)
    assert b"".join(iter(lambda: r.read(1 << 20), b"")) == big


def test_threaded_verifying_reader_fails_at_eof_on_a_flipped_byte_truncation_or_overrun() -> None:
    with pytest.raises(DigestMismatchError, match="is corrupt"):
        ThreadedVerifyingReader(io.BytesIO(b"abd"), ABC, 3, source="test").read()
    with pytest.raises(DigestMismatchError):
        ThreadedVerifyingReader(io.BytesIO(b"ab"), ABC, 3).read()
    r = ThreadedVerifyingReader(io.BytesIO(b"abcabc"), ABC, 3)
    with pytest.raises(DigestMismatchError):
        while r.read(2):
            pass
    r = ThreadedVerifyingReader(io.BytesIO(b"abc"), ABC)  # no size: the digest alone decides
    assert r.read(3) == b"abc" and r.read(3) == b""


def test_threaded_verifying_reader_close_before_eof_stops_its_thread() -> None:
    before = threading.active_count()
    r = ThreadedVerifyingReader(io.BytesIO(bytes(10 << 20)), ABC, 10 << 20, depth=1)
    r.read(1 << 20)
    r.read(1 << 20)
    r.close()
    assert threading.active_count() == before


class _Blobs:
    name = "memory"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def open_blob(self, descriptor: Any) -> Any:
        return io.BytesIO(self.blobs[str(descriptor.digest)])


def _image(compress: bool) -> tuple[Image, _Blobs, str]:
    """A one-layer image (uncompressed or gzip) held in memory; returns it, its blobs, the layer digest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(50):
            info = tarfile.TarInfo(f"srv/f{i}")
            payload = hashlib.sha512(bytes([i])).digest() * 300
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    diff_id = "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()
    blob = gzip.compress(buf.getvalue(), mtime=0) if compress else buf.getvalue()
    blobs = _Blobs()
    layer = blobs.put(blob)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                         "history": [{"created_by": "test"}]}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": blobs.put(config), "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP if compress else mt.OCI_LAYER, "digest": layer,
                    "size": len(blob)}],
    }).encode()
    return Image(Manifest.from_bytes(manifest, mt.OCI_MANIFEST), blobs), blobs, layer  # type: ignore[arg-type]


@pytest.mark.parametrize("compress", [False, True])
def test_inspect_reports_a_corrupt_layer_as_a_digest_mismatch(compress: bool) -> None:
    image, blobs, layer = _image(compress)
    assert inspect_image(image).layers[0].files == 50  # intact: read and verified
    data = bytearray(blobs.blobs[layer])
    data[len(data) // 2] ^= 0xFF  # inside a member's content (or the deflate stream)
    blobs.blobs[layer] = bytes(data)
    with pytest.raises(DigestMismatchError, match="layer 0"):
        inspect_image(image)


def test_paused_gc_restores_the_callers_setting() -> None:
    import gc

    from layerkit.analyze.sizes import paused_gc

    assert gc.isenabled()
    with pytest.raises(ValueError), paused_gc():
        assert not gc.isenabled()
        raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc(), paused_gc():
            pass
        assert not gc.isenabled()  # paused by the caller: left paused
    finally:
        gc.enable()
