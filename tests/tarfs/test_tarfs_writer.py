"""LayerWriter specification: exact round trips, interoperability with GNU tar and Python tarfile,
bit-for-bit determinism, and refusal of what a layer must not contain."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import threading
from typing import Iterator

import pytest

from layerkit.errors import InvalidWhiteoutError, LayerError, UnsafePathError
from layerkit.mediatypes import DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, Compression, detect_compression
from layerkit.tarfs import Entry, EntryType
from layerkit.tarfs.reader import iter_layer
from layerkit.tarfs.writer import LayerWriter, layer_order_key, sorted_entries

GNU_TAR = shutil.which("tar")
GZIP_CLI = shutil.which("gzip")
CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # cap_net_raw+ep
T0 = 1_700_000_000_000_000_000


@pytest.fixture
def shm() -> Iterator[str]:
    d = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None, prefix="lk-tarfs-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sample() -> list[tuple[Entry, bytes | None]]:
    long_dir = "d" * 120
    return [
        (Entry("bin", EntryType.DIR, 0o755, mtime_ns=T0), None),
        (Entry("bin/ping", EntryType.FILE, 0o4755, size=4, mtime_ns=T0 + 123_456_789, xattrs={"security.capability": CAP}), b"ELF!"),
        (Entry("bin/ping6", EntryType.HARDLINK, 0o4755, mtime_ns=T0, linkname="bin/ping"), None),
        (Entry("bin/sh", EntryType.SYMLINK, 0o777, mtime_ns=T0, linkname="/bin/busybox"), None),
        (Entry("dev", EntryType.DIR, 0o755, mtime_ns=T0), None),
        (Entry("dev/null", EntryType.CHAR, 0o666, mtime_ns=T0, devmajor=1, devminor=3), None),
        (Entry("dev/sda", EntryType.BLOCK, 0o660, gid=6, mtime_ns=T0, devmajor=8, devminor=0), None),
        (Entry("dev/pipe", EntryType.FIFO, 0o600, mtime_ns=T0), None),
        (Entry(long_dir, EntryType.DIR, 0o1777, mtime_ns=T0), None),
        (Entry(long_dir + "/" + "f" * 250, EntryType.FILE, 0o640, uid=1000, gid=1000, size=3, mtime_ns=T0), b"abc"),
        (Entry("home", EntryType.DIR, 0o755, mtime_ns=T0), None),
        (Entry("home/caf\udce9", EntryType.FILE, 0o600, uid=3_000_000, gid=3_000_001, size=1, mtime_ns=T0), b"\xe9"),
        (Entry("home/ü-utf8", EntryType.FILE, 0o644, size=0, mtime_ns=T0), b""),
        (Entry("home/link-long", EntryType.SYMLINK, 0o777, mtime_ns=T0, linkname="../" + "t" * 200), None),
    ]


def write(entries: list[tuple[Entry, bytes | None]], comp: Compression = Compression.GZIP, **kw: object) -> tuple[bytes, object]:
    out = io.BytesIO()
    w = LayerWriter(out, comp, **kw)  # type: ignore[arg-type]
    for e, data in entries:
        w.add(e, io.BytesIO(data) if data is not None else None)
    res = w.close()
    return out.getvalue(), res


def read(blob: bytes) -> list[tuple[Entry, bytes | None]]:
    return [(e, c.read() if c is not None else None) for e, c in iter_layer(io.BytesIO(blob))]


@pytest.mark.parametrize("comp", list(Compression))
@pytest.mark.parametrize("threads", [1, 2])
def test_round_trip_is_exact(comp: Compression, threads: int) -> None:
    entries = sample()
    blob, res = write(entries, comp, threads=threads)
    assert detect_compression(blob[:4]) is comp
    assert read(blob) == entries
    assert res.size == len(blob)  # type: ignore[attr-defined]
    assert res.digest == "sha256:" + hashlib.sha256(blob).hexdigest()  # type: ignore[attr-defined]


def test_digests_sizes_and_media_types() -> None:
    blob, res = write(sample(), Compression.GZIP)
    tar = gzip.decompress(blob)
    assert res.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()  # type: ignore[attr-defined]
    assert res.uncompressed_size == len(tar) and len(tar) % 512 == 0  # type: ignore[attr-defined]
    assert tar.endswith(bytes(1024))
    assert res.media_type == OCI_LAYER_GZIP  # type: ignore[attr-defined]
    assert write(sample(), Compression.GZIP, docker_media_type=True)[1].media_type == DOCKER_LAYER_GZIP  # type: ignore[attr-defined]
    assert write(sample(), Compression.ZSTD)[1].media_type == OCI_LAYER_ZSTD  # type: ignore[attr-defined]
    raw, r2 = write(sample(), Compression.NONE)
    assert r2.digest == r2.diff_id == res.diff_id  # type: ignore[attr-defined]


def test_python_tarfile_reads_our_layers() -> None:
    blob, _ = write(sample(), Compression.NONE)
    with tarfile.open(fileobj=io.BytesIO(blob), encoding="utf-8", errors="surrogateescape") as tf:
        members = {m.name: m for m in tf}
        ping = members["bin/ping"]
        assert ping.mode == 0o4755 and ping.isreg()
        assert ping.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP
        assert ping.pax_headers["mtime"] == "1700000000.123456789"
        assert members["bin/ping6"].islnk() and members["bin/ping6"].linkname == "bin/ping"
        assert members["dev/null"].ischr() and members["dev/null"].devmajor == 1
        assert members["home/caf\udce9"].uid == 3_000_000
        assert members["d" * 120 + "/" + "f" * 250].size == 3
        assert not any(m.uname or m.gname for m in members.values())


@pytest.mark.skipif(GNU_TAR is None, reason="GNU tar not installed")
def test_gnu_tar_lists_and_extracts_identically(shm: str) -> None:
    blob, _ = write(sample(), Compression.NONE)
    path = f"{shm}/layer.tar"
    open(path, "wb").write(blob)
    listing = subprocess.run([GNU_TAR, "-tvf", path], check=True, capture_output=True).stdout  # type: ignore[list-item]
    assert b"bin/ping6 link to bin/ping" in listing
    assert b"bin/sh -> /bin/busybox" in listing
    assert b"-rwsr-xr-x 0/0" in listing
    out = f"{shm}/x"
    os.makedirs(out)
    subprocess.run([GNU_TAR, "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", path, "-C", out], check=True)  # type: ignore[list-item]
    for e, data in sample():
        host = os.path.join(out, os.fsencode(e.path).decode("utf-8", "surrogateescape"))
        st = os.lstat(host)
        assert st.st_mode & 0o7777 == e.mode, e.path
        if e.type is EntryType.FILE:
            assert open(host, "rb").read() == data
            assert st.st_mtime_ns == e.mtime_ns
            assert (st.st_uid, st.st_gid) == (e.uid, e.gid) or os.getuid() != 0
        if e.type is EntryType.SYMLINK:
            assert os.readlink(host) == e.linkname
    assert os.stat(f"{out}/bin/ping").st_ino == os.stat(f"{out}/bin/ping6").st_ino
    if os.getuid() == 0:
        assert os.getxattr(f"{out}/bin/ping", "security.capability") == CAP


def test_determinism_and_source_date_epoch() -> None:
    a = write(sample(), Compression.GZIP)
    b = write(sample(), Compression.GZIP)
    assert a[0] == b[0]
    assert a[0][:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # mtime 0, no name, XFL 0, OS 255
    sde = 1_600_000_000
    later = [(Entry(e.path, e.type, e.mode, e.uid, e.gid, e.size, e.mtime_ns + 10**18, e.linkname, e.devmajor,
                    e.devminor, dict(e.xattrs)), d) for e, d in sample()]
    c = write(sample(), Compression.GZIP, source_date_epoch=sde)
    d = write(later, Compression.GZIP, source_date_epoch=sde)
    assert c[0] == d[0] and c[0] != a[0]
    assert {e.mtime_ns for e, _ in read(c[0])} == {sde * 10**9}
    # old mtimes stay as they are
    old = [(Entry("f", EntryType.FILE, size=0, mtime_ns=5 * 10**9 + 7), b"")]
    assert read(write(old, Compression.NONE, source_date_epoch=sde)[0])[0][0].mtime_ns == 5 * 10**9 + 7


@pytest.mark.parametrize("comp", list(Compression))
def test_bytes_do_not_depend_on_threads(comp: Compression) -> None:
    assert len({write(sample(), comp, threads=t)[0] for t in (1, 2, 3)}) == 1


def multi_block_entries() -> list[tuple[Entry, bytes | None]]:
    """About 3 MB of tar: several gzip blocks, compressible text and an incompressible file."""
    rng = random.Random(5)
    words = [bytes(rng.choices(b"abcdefghij_/.", k=rng.randint(2, 8))) for _ in range(2000)]
    text = b" ".join(rng.choices(words, k=500_000))
    out: list[tuple[Entry, bytes | None]] = [(Entry("src", EntryType.DIR, 0o755, mtime_ns=T0), None)]
    for i in range(3):
        part = text[i * 900_000 : (i + 1) * 900_000 + i]
        out.append((Entry(f"src/f{i}.txt", EntryType.FILE, 0o644, size=len(part), mtime_ns=T0), part))
    noise = rng.randbytes(400_000)
    out.append((Entry("src/noise.bin", EntryType.FILE, 0o644, size=len(noise), mtime_ns=T0), noise))
    return out


class ForwardOnly(io.RawIOBase):
    """Content that can be read once, front to back, and counts what was read: no seek, no re-read."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = self._b.readinto(b)
        self.served += n
        return n


class WriteOnlySink:
    """A sink with nothing but ``write`` (no seek, tell or read): the digest cannot be a second pass."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes) -> int:
        self.data += b
        return len(b)


@pytest.mark.parametrize("level", [6, 9])
def test_gzip_high_levels_same_bytes_for_any_threads_in_one_pass(level: int) -> None:
    entries = multi_block_entries()
    blobs = set()
    for threads in (1, 2, 4):
        sink = WriteOnlySink()
        contents = [ForwardOnly(d) if d is not None else None for _, d in entries]
        w = LayerWriter(sink, Compression.GZIP, level=level, threads=threads)  # type: ignore[arg-type]
        for (e, _), c in zip(entries, contents):
            w.add(e, c)  # type: ignore[arg-type]
        res = w.close()
        assert [c.served for c in contents if c] == [e.size for e, d in entries if d is not None]
        blob = bytes(sink.data)
        assert res.digest == "sha256:" + hashlib.sha256(blob).hexdigest() and res.size == len(blob)
        blobs.add(blob)
    assert len(blobs) == 1
    blob = blobs.pop()
    tar = gzip.decompress(blob)
    assert res.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert res.uncompressed_size == len(tar) > 2 << 20
    assert read(blob) == entries
    if GZIP_CLI is not None:  # the reference decoder, when installed
        assert subprocess.run([GZIP_CLI, "-dc"], input=blob, capture_output=True, check=True).stdout == tar


def test_aborting_a_high_level_gzip_writer_frees_its_workers() -> None:
    w = LayerWriter(io.BytesIO(), Compression.GZIP, level=6, threads=2)
    e, data = multi_block_entries()[1]
    w.add(e, io.BytesIO(data))
    w.add(Entry("again", EntryType.FILE, size=len(data) * 2), io.BytesIO(data * 2))
    w.abort()
    assert not [t for t in threading.enumerate() if t.name.startswith("layerkit-gzip")]


def test_whole_second_mtimes_need_no_pax_header() -> None:
    blob, _ = write([(Entry("a", EntryType.FILE, size=1, mtime_ns=T0), b"x")], Compression.NONE)
    assert b"PaxHeader" not in blob and len(blob) == 512 + 512 + 1024


def test_large_file_streams_through_small_buffers() -> None:
    payload = os.urandom(5 << 20) + b"tail"
    entries = [(Entry("big", EntryType.FILE, size=len(payload)), payload)]
    blob, res = write(entries, Compression.ZSTD)
    assert read(blob) == entries


def test_whiteouts() -> None:
    out = io.BytesIO()
    w = LayerWriter(out, Compression.NONE)
    w.add_whiteout("etc/motd")
    w.add_opaque("var/cache")
    w.add_opaque(".")
    for bad in ("etc/.wh.x", ".", "a/.wh..wh..opq"):
        with pytest.raises(InvalidWhiteoutError):
            w.add_whiteout(bad)
    with pytest.raises(UnsafePathError):
        w.add_whiteout("../x")
    w.close()
    ents = read(out.getvalue())
    assert [e.path for e, _ in ents] == ["etc/.wh.motd", "var/cache/.wh..wh..opq", ".wh..wh..opq"]
    assert ents[0][0].whiteout_target == "etc/motd" and ents[1][0].is_opaque


def test_content_size_must_match() -> None:
    w = LayerWriter(io.BytesIO(), Compression.NONE, threads=1)
    with pytest.raises(LayerError, match="short"):
        w.add(Entry("f", EntryType.FILE, size=10), io.BytesIO(b"abc"))
    w2 = LayerWriter(io.BytesIO(), Compression.NONE, threads=1)
    with pytest.raises(LayerError, match="longer"):
        w2.add(Entry("f", EntryType.FILE, size=2), io.BytesIO(b"abc"))
    w3 = LayerWriter(io.BytesIO(), Compression.NONE, threads=1)
    with pytest.raises(LayerError):
        w3.add(Entry("f", EntryType.FILE, size=2))
    with pytest.raises(LayerError):
        w3.add(Entry("l", EntryType.SYMLINK))
    with pytest.raises(UnsafePathError):
        w3.add(Entry("../evil", EntryType.FILE))


def test_add_file_from_path_and_shrinking_files(shm: str) -> None:
    p = f"{shm}/f"
    open(p, "wb").write(b"0123456789" * 300_000)
    out = io.BytesIO()
    with LayerWriter(out, Compression.GZIP) as w:
        w.add_file_from_path(Entry("f", EntryType.FILE, size=3_000_000), p)
    assert read(out.getvalue())[0][1] == b"0123456789" * 300_000
    w = LayerWriter(io.BytesIO(), Compression.GZIP)
    with pytest.raises(LayerError, match="shrank"):
        w.add_file_from_path(Entry("f", EntryType.FILE, size=3_000_001), p)
    w.abort()
    os.symlink(p, f"{shm}/link")
    w = LayerWriter(io.BytesIO(), Compression.NONE)
    with pytest.raises(OSError):
        w.add_file_from_path(Entry("f", EntryType.FILE, size=10), f"{shm}/link")
    w.abort()


def test_close_is_idempotent_and_closed_writer_refuses() -> None:
    w = LayerWriter(io.BytesIO(), Compression.ZSTD)
    r = w.close()
    assert w.close() is r
    with pytest.raises(LayerError):
        w.add(Entry("x", EntryType.DIR))
    assert r.uncompressed_size == 1024


def test_sink_errors_surface_from_the_worker() -> None:
    class Broken(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            raise OSError("disk full")

    w = LayerWriter(Broken(), Compression.NONE, threads=2)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk full"):
        w.add(Entry("big", EntryType.FILE, size=8 << 20), io.BytesIO(bytes(8 << 20)))
        w.close()


def test_order_helpers() -> None:
    paths = ["a.txt", "a/b", ".", "a", "b", "a/b/c", "A"]
    assert sorted(paths, key=layer_order_key) == [".", "A", "a", "a/b", "a/b/c", "a.txt", "b"]
    es = sorted_entries(Entry(p, EntryType.DIR) for p in paths)
    assert [e.path for e in es][0] == "."
