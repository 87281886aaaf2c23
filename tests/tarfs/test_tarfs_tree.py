"""Host trees as layers: a deterministic walk, hard links, xattrs, special files, and a layer that
GNU tar extracts back to the same tree."""

from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from typing import Iterator

import pytest

from layerkit.mediatypes import Compression
from layerkit.tarfs import EntryType
from layerkit.tarfs.reader import iter_layer
from layerkit.tarfs.tree import entry_from_stat, read_xattrs, walk_tree, write_tree
from layerkit.tarfs.writer import LayerWriter, layer_order_key

GNU_TAR = shutil.which("tar")
ROOT = os.getuid() == 0
CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


@pytest.fixture
def shm() -> Iterator[str]:
    d = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None, prefix="lk-tarfs-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def build(root: str) -> None:
    os.makedirs(f"{root}/a/b")
    os.makedirs(f"{root}/a.d")
    open(f"{root}/a.txt", "wb").write(b"top")
    open(f"{root}/a/b/deep", "wb").write(b"deep" * 1000)
    os.link(f"{root}/a/b/deep", f"{root}/z-hard")
    os.symlink("../a.txt", f"{root}/a/rel")
    os.symlink("/etc/passwd", f"{root}/a/abs")
    os.mkfifo(f"{root}/fifo")
    open(f"{root}/setuid", "wb").write(b"#!")
    os.chmod(f"{root}/setuid", 0o4755)
    os.chmod(f"{root}/a.d", 0o1777)
    open(os.fsdecode(f"{root}/".encode() + b"caf\xe9"), "wb").write(b"latin1 name")
    os.makedirs(f"{root}/" + "L" * 150 + "/" + "M" * 150)
    open(f"{root}/" + "L" * 150 + "/" + "M" * 150 + "/" + "N" * 200, "wb").write(b"long")
    if ROOT:
        os.mknod(f"{root}/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.setxattr(f"{root}/setuid", "security.capability", CAP)
    s = socket.socket(socket.AF_UNIX)
    s.bind(f"{root}/sock")
    s.close()
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            os.utime(os.path.join(dirpath, n), ns=(1_600_000_000_500_000_000,) * 2, follow_symlinks=False)


def test_walk_order_types_and_hardlinks(shm: str) -> None:
    build(shm)
    walked = list(walk_tree(shm))
    paths = [e.path for e, _ in walked]
    assert paths[0] == "."
    assert paths == sorted(paths, key=layer_order_key)
    assert paths.index("a") < paths.index("a/b") < paths.index("a/b/deep") < paths.index("a.d") < paths.index("a.txt")
    ents = {e.path: e for e, _ in walked}
    assert "sock" not in ents
    assert ents["a/b/deep"].type is EntryType.FILE and ents["a/b/deep"].size == 4000
    assert ents["z-hard"].type is EntryType.HARDLINK and ents["z-hard"].linkname == "a/b/deep" and ents["z-hard"].size == 0
    assert ents["a/rel"].linkname == "../a.txt" and ents["a/abs"].linkname == "/etc/passwd"
    assert ents["fifo"].type is EntryType.FIFO
    assert ents["setuid"].mode == 0o4755 and ents["a.d"].mode == 0o1777
    assert ents["a.txt"].mtime_ns == 1_600_000_000_500_000_000
    assert "caf\udce9" in ents
    if ROOT:
        assert ents["null"].type is EntryType.CHAR and (ents["null"].devmajor, ents["null"].devminor) == (1, 3)
        assert ents["setuid"].xattrs == {"security.capability": CAP}
        assert read_xattrs(f"{shm}/setuid")["security.capability"] == CAP


def test_walk_is_iterative_for_deep_trees(shm: str) -> None:
    p = shm
    for _ in range(1200):  # deeper than Python's default recursion limit allows for a recursive walk
        p = os.path.join(p, "d")
        os.mkdir(p)
    assert sum(1 for _ in walk_tree(shm)) == 1201
    subprocess.run(["rm", "-rf", os.path.join(shm, "d")], check=True)  # shutil.rmtree recurses too


def test_prefix_and_entry_from_stat(shm: str) -> None:
    build(shm)
    paths = [e.path for e, _ in walk_tree(f"{shm}/a", prefix="/opt/app/")]
    assert paths[0] == "opt/app" and "opt/app/b/deep" in paths
    e = entry_from_stat("x", os.lstat(f"{shm}/a/rel"), linkname="../a.txt")
    assert e.type is EntryType.SYMLINK and e.linkname == "../a.txt" and e.mode == 0o777
    with pytest.raises(Exception):
        entry_from_stat("s", os.lstat(f"{shm}/sock"))


def layer_of(root: str, **kw: object) -> tuple[bytes, object]:
    out = io.BytesIO()
    w = LayerWriter(out, Compression.GZIP, **kw)  # type: ignore[arg-type]
    write_tree(root, w)
    res = w.close()
    return out.getvalue(), res


def test_write_tree_is_deterministic_and_clamped(shm: str) -> None:
    src = f"{shm}/src"
    os.makedirs(src)
    build(src)
    a, ra = layer_of(src)
    b, rb = layer_of(src)
    assert a == b and ra == rb
    # touching files to other times above SOURCE_DATE_EPOCH does not change the digest
    c, rc = layer_of(src, source_date_epoch=1_500_000_000)
    for dirpath, dirs, files in os.walk(src):
        for n in files:
            os.utime(os.path.join(dirpath, n), ns=(1_650_000_000_123_000_000,) * 2, follow_symlinks=False)
    d, rd = layer_of(src, source_date_epoch=1_500_000_000)
    assert rc.digest == rd.digest  # type: ignore[attr-defined]
    e, _ = layer_of(src)
    assert e != a
    entries = [en for en, _ in iter_layer(io.BytesIO(a))]
    assert entries[0].path == "L" * 150 and "." not in [en.path for en in entries]


@pytest.mark.skipif(GNU_TAR is None, reason="GNU tar not installed")
def test_gnu_tar_extracts_our_layer_to_the_same_tree(shm: str) -> None:
    src = f"{shm}/src"
    os.makedirs(src)
    build(src)
    os.unlink(f"{src}/sock")
    blob, _ = layer_of(src)
    open(f"{shm}/l.tgz", "wb").write(blob)
    dst = f"{shm}/dst"
    os.makedirs(dst)
    subprocess.run([GNU_TAR, "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xzpf", f"{shm}/l.tgz", "-C", dst],  # type: ignore[list-item]
                   check=True)
    want = {e.path: e for e, _ in walk_tree(src)}
    got = {e.path: e for e, _ in walk_tree(dst)}
    assert want.keys() == got.keys()
    for p, e in want.items():
        g = got[p]
        if p == ".":
            continue
        assert (g.type, g.mode, g.size, g.linkname, g.devmajor, g.devminor, g.xattrs) == (
            e.type, e.mode, e.size, e.linkname, e.devmajor, e.devminor, e.xattrs), p
        if e.type is not EntryType.SYMLINK:
            assert g.mtime_ns == e.mtime_ns, p
        if e.type is EntryType.FILE:
            assert open(os.path.join(dst, p), "rb").read() == open(os.path.join(src, p), "rb").read()
