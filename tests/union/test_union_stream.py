"""``unpack`` streams each layer once, newest first; the tree and the report are exactly those of the
index-first unpack (``unpack(Union(layers))``), and whatever the single pass cannot decide alone steps
back to the index-first way."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile import CASES, Case, TarLayer, d, dev, f, fifo, hl, opq, sym, tar, wh

from layerkit.errors import LayerError
from layerkit.union import Union
from layerkit.union.readahead import READ_AHEAD_FROM, LayerStreams
from layerkit.union.unpack import unpack


class Counting(TarLayer):
    """A layer that records every read of itself in a shared list."""

    def __init__(self, data: bytes, ident: str, opened: list[int]) -> None:
        super().__init__(data, ident)
        self.opened = opened

    def open_tar(self) -> Any:
        self.opened.append(int(self.id[1:]))
        return super().open_tar()


def _layers(blobs: list[bytes], opened: list[int] | None = None) -> list[TarLayer]:
    sink: list[int] = [] if opened is None else opened
    return [Counting(b, f"L{i}", sink) for i, b in enumerate(blobs)]


def _tree(root: Path) -> dict[str, Any]:
    """Every path with its type, mode, owner, size, mtime, link target, content hash and xattrs;
    plus which paths share an inode."""
    out: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    todo = [root]  # iteratively: the corpus nests deeper than the recursion limit
    while todo:
        p = todo.pop()
        st = p.lstat()
        rel = str(p.relative_to(root))
        if stat.S_ISDIR(st.st_mode):
            todo.extend(Path(e.path) for e in os.scandir(p))
        data = ""
        if stat.S_ISREG(st.st_mode):
            data = hashlib.sha256(p.read_bytes()).hexdigest()
            inodes.setdefault(st.st_ino, []).append(rel)
        link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
        xattrs = {} if stat.S_ISLNK(st.st_mode) else {k: os.getxattr(p, k) for k in os.listxattr(p)}
        out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, link, data, xattrs)
    out["<links>"] = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return out


@pytest.fixture
def shm() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="lk-union-stream-", dir="/dev/shm"))
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=True)  # trees nest beyond shutil's recursion


def _both(blobs: list[bytes], shm: Path, **kw: Any) -> tuple[Any, Any]:
    """(streamed, index-first) outcomes: (result, tree) or (error type, message)."""
    outcomes = []
    for name in ("stream", "index"):
        target = shm / name
        try:
            if name == "index":
                target.mkdir(parents=True)  # what unpack does before it indexes
                result = unpack(Union(_layers(blobs)), target, **kw)
            else:
                result = unpack(_layers(blobs), target, **kw)
        except Exception as exc:  # noqa: BLE001 - compared below
            outcomes.append((type(exc), str(exc), sorted(os.listdir(target)) if target.exists() else None))
        else:
            outcomes.append((result, _tree(target)))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_corpus_same_as_index_first(case: Case, shm: Path) -> None:
    streamed, indexed = _both(case.layers, shm)
    assert streamed == indexed


@pytest.mark.parametrize("case", [c for c in CASES if not c.error], ids=[c.name for c in CASES if not c.error])
def test_hostile_corpus_rootless_report_same_as_index_first(case: Case, shm: Path) -> None:
    streamed, indexed = _both(case.layers, shm, rootless=True, no_privileged_bits=True)
    assert streamed == indexed


#: stacks the single pass decides alone (each layer read once), with what they exercise
SINGLE_PASS = {
    "links-in-layer": [tar(d("bin"), f("bin/busybox", "bb", mode=0o4755), hl("bin/sh", "bin/busybox"),
                           hl("bin/ls", "bin/sh"))],
    "link-to-a-file-hidden-with-its-link": [tar(f("a", "1"), hl("b", "a")), tar(wh("a"), wh("b"))],
    "implicit-dirs-stay-when-child-deleted": [tar(f("x/y/z", "1")), tar(wh("x/y/z"))],
    "implicit-over-lower-file": [tar(f("p", "file"), d("q", 0o700)), tar(f("p/x", "1"), f("q/y", "2"))],
    "file-between-dirs": [tar(d("p", 0o700), f("p/a", "a")), tar(f("p", "f")), tar(f("p/x", "1"))],
    "dir-metadata-from-the-top": [tar(d("p", 0o700, mtime=5), f("p/a", "a")), tar(d("p", 0o750, mtime=7))],
    "dir-repeated-in-layer": [tar(d("p", 0o700), f("p/a", "a"), d("p", 0o711))],
    "explicit-after-implicit": [tar(f("p/a", "a"), d("p", 0o701))],
    "opaque-keeps-metadata": [tar(d("p", 0o700), f("p/a", "a"), d("p/s"), f("p/s/t", "t")),
                              tar(opq("p"), f("p/b", "b"))],
    "whiteout-then-recreate": [tar(d("p"), f("p/a", "a")), tar(wh("p"), f("p/b", "b"))],
    "root-metadata": [tar(d(".", 0o711), f("a", "a")), tar(d(".", 0o755, mtime=9))],
    "symlinks-devices-fifos": [tar(sym("l", "/etc"), dev("n"), fifo("p")), tar(wh("l"), sym("m", "x"))],
    "xattrs-and-refusals": [tar(d("x", pax={"SCHILY.xattr.user.d": "1", "SCHILY.xattr.trusted.overlay.opaque": "y"}),
                                f("x/f", "f", pax={"SCHILY.xattr.user.note": "hi", "SCHILY.xattr.trusted.x": "t"}),
                                sym("x/l", "f", pax={"SCHILY.xattr.user.l": "1"}))],
    "setuid-report-order": [tar(f("b/su", "s", mode=0o4755), f("a/wall", "w", mode=0o2755)),
                            tar(f("c/sg", "g", mode=0o6755), f("a/x", "x"))],
}

#: stacks the single pass leaves to the index (each needs the layers below first)
STEP_BACK = {
    "link-to-lower-layer": [tar(f("orig", "payload")), tar(hl("l1", "orig"))],
    "link-to-hidden-original": [tar(f("orig", "p"), hl("l1", "orig"), hl("l2", "orig")), tar(wh("orig"))],
    "file-repeated-in-layer": [tar(f("a", "1"), f("a", "2"))],
    "type-change-in-layer": [tar(f("a/b", "1"), f("a", "2"))],
}


@pytest.mark.parametrize("name", list(SINGLE_PASS))
def test_single_pass_reads_each_layer_once(name: str, shm: Path) -> None:
    blobs = SINGLE_PASS[name]
    opened: list[int] = []
    unpack(_layers(blobs, opened), shm / "once")
    assert opened == list(reversed(range(len(blobs))))
    for rootless in (False, True):
        streamed, indexed = _both(blobs, shm / str(rootless), rootless=rootless, no_privileged_bits=rootless)
        assert streamed == indexed


@pytest.mark.parametrize("name", list(STEP_BACK))
def test_what_one_pass_cannot_decide_steps_back(name: str, shm: Path) -> None:
    blobs = STEP_BACK[name]
    opened: list[int] = []
    unpack(_layers(blobs, opened), shm / "back")
    n = len(blobs)
    assert opened[0] == n - 1, "the single pass starts at the newest layer"
    runs = [opened[k : k + n] for k in range(1, len(opened))]
    assert list(range(n)) in runs, "then the index reads every layer, oldest first"
    streamed, indexed = _both(blobs, shm)
    assert streamed == indexed


class Big(Counting):
    """A layer whose blob counts as big (``size``), so the single pass reads it ahead in a thread."""

    def __init__(self, data: bytes, ident: str, opened: list[int]) -> None:
        super().__init__(data, ident, opened)
        self.size = max(len(data), READ_AHEAD_FROM)


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "layerkit-read-ahead" and t.is_alive()]


@pytest.mark.parametrize("name", list(SINGLE_PASS) + list(STEP_BACK))
def test_layers_read_ahead_give_the_same_tree(name: str, shm: Path) -> None:
    blobs = {**SINGLE_PASS, **STEP_BACK}[name]
    opened: list[int] = []
    big = [Big(b, f"L{i}", opened) for i, b in enumerate(blobs)]
    unpack(big, shm / "ahead")
    _, indexed = _both(blobs, shm / "plain")
    assert _tree(shm / "ahead") == indexed[1]
    assert not _read_ahead_threads()


def test_the_next_big_layer_is_read_ahead_while_the_ones_above_it_are_written(shm: Path) -> None:
    opened: list[int] = []
    blobs = [tar(d("bin"), f("bin/sh", "base")), tar(f("a", "1")), tar(f("b", "2")), tar(wh("a"))]
    layers = [Big(blobs[0], "L0", opened)] + [Counting(b, f"L{i}", opened) for i, b in enumerate(blobs) if i]
    unpack(layers, shm / "t")
    assert opened == [0, 3, 2, 1], "the base is opened first, to read ahead; then newest first, each layer once"
    assert sorted(os.listdir(shm / "t")) == ["b", "bin"]
    assert not _read_ahead_threads()


def test_a_layer_read_ahead_is_stopped_when_the_pass_steps_back(shm: Path) -> None:
    opened: list[int] = []
    blobs = [tar(f("orig", "payload"), f("pad", "x" * 100_000)), tar(f("z", "1")), tar(hl("l1", "orig"))]
    layers = [Big(blobs[0], "L0", opened)] + [Counting(b, f"L{i}", opened) for i, b in enumerate(blobs) if i]
    unpack(layers, shm / "t")
    assert opened[:2] == [0, 2], "the base was being read ahead when the hard link made the pass step back"
    assert os.stat(shm / "t" / "l1").st_ino == os.stat(shm / "t" / "orig").st_ino
    assert not _read_ahead_threads()


def test_layer_streams_start_the_base_reading_before_unpack_is_called(shm: Path) -> None:
    opened: list[int] = []
    blobs = [tar(d("bin"), f("bin/sh", "base")), tar(f("a", "1")), tar(wh("a"))]
    layers = [Big(blobs[0], "L0", opened)] + [Counting(b, f"L{i}", opened) for i, b in enumerate(blobs) if i]
    streams = LayerStreams(layers)
    assert opened == [0], "the base is being read already"
    unpack(streams, shm / "t")
    assert opened == [0, 2, 1], "and is not opened again"
    assert sorted(os.listdir(shm / "t")) == ["bin"]
    assert not _read_ahead_threads()


def test_unpack_closes_the_streams_it_is_given_when_it_refuses_the_target(shm: Path) -> None:
    (shm / "full").mkdir()
    (shm / "full" / "x").write_text("")
    streams = LayerStreams([Big(tar(f("a", "1")), "L0", [])])
    with pytest.raises(LayerError, match="not empty"):
        unpack(streams, shm / "full")
    assert not _read_ahead_threads()


class Unopenable(Big):
    """A big layer whose blob is gone: opening it fails."""

    def open_tar(self) -> Any:
        super().open_tar()
        raise LayerError(f"layer {self.id}: blob not found")


def test_a_layer_that_cannot_be_read_ahead_fails_in_its_turn_as_without_streams(shm: Path) -> None:
    blobs = [tar(f("a", "1")), tar(f("b", "2"))]
    streams = LayerStreams([Unopenable(blobs[0], "L0", []), Counting(blobs[1], "L1", [])])  # does not raise
    with pytest.raises(LayerError, match="L0: blob not found"):
        unpack(streams, shm / "a")
    with pytest.raises(LayerError, match="L0: blob not found"):
        unpack([Unopenable(blobs[0], "L0", []), Counting(blobs[1], "L1", [])], shm / "b")


@pytest.mark.skipif(os.geteuid() != 0, reason="owners other than the caller's need root")
def test_a_symlink_keeps_its_own_metadata_whatever_is_written_after_it(shm: Path) -> None:
    blobs = [tar(d("etc"), sym("etc/link", "target", mtime=1_000_000, uid=7, gid=8),
                 f("etc/later", "x", mtime=2_000_000)),
             tar(sym("top", "etc/link", mtime=3_000_000), f("etc/newer", "y"))]
    unpack(_layers(blobs), shm / "t")
    link, top = os.lstat(shm / "t" / "etc" / "link"), os.lstat(shm / "t" / "top")
    assert (link.st_mtime, link.st_uid, link.st_gid) == (1_000_000, 7, 8)
    assert top.st_mtime == 3_000_000 and os.readlink(shm / "t" / "top") == "etc/link"
    streamed, indexed = _both(blobs, shm / "both")
    assert streamed == indexed
