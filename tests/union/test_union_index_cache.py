"""A union with an index cache reads each layer's headers once: later unions over the same layers are
built from the cached member lists, give the same tree, and still read file contents from the layer."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

import pytest
from hostile import TarLayer, d, dev, f, fifo, hl, opq, raw_tar, sym, tar, wh

from layerkit.errors import LayerkitError
from layerkit.store.layerindex import LayerIndexCache
from layerkit.tarfs.limits import Limits
from layerkit.union import Union


class CountedLayer(TarLayer):
    """A layer with the identity a cache keys on (digest, diff ID) that counts its reads."""

    def __init__(self, data: bytes, id: str = "") -> None:
        super().__init__(data, id)
        self.digest = self.diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
        self.opened = 0

    def open_tar(self) -> BinaryIO:
        self.opened += 1
        return super().open_tar()


BASE = tar(d("etc"), f("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), f("etc/motd", "hi"), d("usr"),
           d("usr/lib"), f("usr/lib/a.so", "A", uid=7, gid=8, mode=0o4755), sym("lib", "usr/lib"),
           hl("usr/lib/b.so", "usr/lib/a.so"), dev("dev/null"), fifo("run/pipe"),
           f("bin/ping", "P", pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}))
UPPER = tar(wh("etc/motd"), opq("usr"), d("usr"), f("usr/new", "n"), f("etc/passwd", "changed\n"))


def snapshot(u: Union) -> list[tuple[object, ...]]:
    """Everything the merged view says about every path, in walk order."""
    return [(n.path, n.layer, n.entry) for n in u.walk()] + [(lf.layer, lf) for lf in u.layer_fates()]


def test_a_second_union_reads_no_layer_and_gives_the_same_tree(tmp_path: Path) -> None:
    cache = LayerIndexCache(tmp_path)
    layers = [CountedLayer(BASE, "base"), CountedLayer(UPPER, "upper")]
    first = Union(layers, index_cache=cache)
    assert [layer.opened for layer in layers] == [1, 1]
    second = Union(layers, index_cache=cache)
    assert [layer.opened for layer in layers] == [1, 1]
    assert snapshot(second) == snapshot(first) == snapshot(Union([TarLayer(BASE), TarLayer(UPPER)]))


def test_contents_still_come_from_the_layer(tmp_path: Path) -> None:
    cache = LayerIndexCache(tmp_path)
    Union([CountedLayer(BASE), CountedLayer(UPPER)], index_cache=cache)
    layers = [CountedLayer(BASE), CountedLayer(UPPER)]
    u = Union(layers, index_cache=cache)
    assert u.read_bytes("/etc/passwd") == b"changed\n"
    assert u.read_bytes("/bin/ping") == b"P"
    assert [layer.opened for layer in layers] == [1, 1]  # each read streamed its layer, the index none


def test_a_layer_without_a_digest_or_diff_id_is_always_read(tmp_path: Path) -> None:
    cache = LayerIndexCache(tmp_path)
    plain = CountedLayer(BASE)
    del plain.diff_id
    Union([plain], index_cache=cache)
    Union([plain], index_cache=cache)
    assert plain.opened == 2 and not list(tmp_path.iterdir())


def test_a_layer_that_fails_to_read_caches_nothing(tmp_path: Path) -> None:
    cache = LayerIndexCache(tmp_path)
    truncated = CountedLayer(raw_tar(end=False) + BASE[:700])
    with pytest.raises(LayerkitError):
        Union([truncated], index_cache=cache)
    assert not list(tmp_path.iterdir())


def test_other_limits_read_the_layer_again(tmp_path: Path) -> None:
    cache = LayerIndexCache(tmp_path)
    layer = CountedLayer(BASE)
    Union([layer], index_cache=cache)
    with pytest.raises(LayerkitError, match="entries"):
        Union([layer], index_cache=cache, limits=Limits(max_entries=3))  # not served by the looser list
    assert layer.opened == 2
