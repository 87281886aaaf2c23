"""Reader specification: archives from GNU tar, Python tarfile and Docker read exactly; every
malformed or hostile input fails with a LayerkitError naming the layer and entry."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerkit.errors import (
    LayerkitError,
    LimitExceededError,
    TarFormatError,
    UnsafePathError,
)
from layerkit.tarfs import Entry, EntryType
from layerkit.tarfs.reader import Limits, iter_entries, iter_layer

GNU_TAR = shutil.which("tar")


@pytest.fixture
def shm() -> Iterator[str]:
    d = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None, prefix="lk-tarfs-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def read_all(data: bytes, **kw: object) -> list[tuple[Entry, bytes | None]]:
    out = []
    for e, c in iter_layer(io.BytesIO(data), **kw):  # type: ignore[arg-type]
        out.append((e, c.read() if c is not None else None))
    return out


def by_path(data: bytes) -> dict[str, tuple[Entry, bytes | None]]:
    return {e.path: (e, c) for e, c in read_all(data)}


def make_src_tree(root: str) -> None:
    os.makedirs(f"{root}/dir/sub")
    with open(f"{root}/dir/file.txt", "wb") as f:
        f.write(b"hello world\n")
    os.chmod(f"{root}/dir/file.txt", 0o4755)
    os.symlink("file.txt", f"{root}/dir/link")
    os.link(f"{root}/dir/file.txt", f"{root}/dir/hard")
    os.mkfifo(f"{root}/fifo")
    long_dir = f"{root}/" + "d" * 120
    os.makedirs(long_dir)
    with open(f"{long_dir}/" + "f" * 200, "wb") as f:
        f.write(b"x" * 1000)
    os.utime(f"{root}/dir/file.txt", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))


def gnu_tar(src: str, dest: str, fmt: str, *extra: str) -> bytes:
    subprocess.run([GNU_TAR, f"--format={fmt}", *extra, "-cf", dest, "-C", src, "."], check=True)  # type: ignore[list-item]
    with open(dest, "rb") as f:
        return f.read()


@pytest.mark.skipif(GNU_TAR is None, reason="GNU tar not installed")
@pytest.mark.parametrize("fmt", ["gnu", "posix", "oldgnu", "ustar", "v7"])
def test_reads_gnu_tar_formats(shm: str, fmt: str) -> None:
    src = f"{shm}/src"
    os.makedirs(src)
    make_src_tree(src)
    if fmt in ("ustar", "v7"):  # v7 cannot store fifos or names over 100 bytes; ustar can't a 320-byte path
        os.unlink(f"{src}/fifo")
        shutil.rmtree(f"{src}/" + "d" * 120)
    ents = by_path(gnu_tar(src, f"{shm}/{fmt}.tar", fmt))
    assert ents["."][0].type is EntryType.DIR
    # GNU tar stores whichever name of the inode it meets first as the file, the other as a link
    first = "dir/file.txt" if ents["dir/file.txt"][0].type is EntryType.FILE else "dir/hard"
    f, content = ents[first]
    assert f.type is EntryType.FILE and content == b"hello world\n" and f.size == 12
    assert f.mode == 0o4755 and f.uid == os.getuid()
    if fmt == "posix":
        assert f.mtime_ns == 1_700_000_000_123_456_789
    else:
        assert f.mtime_ns == 1_700_000_000_000_000_000
    assert ents["dir/link"][0].type is EntryType.SYMLINK and ents["dir/link"][0].linkname == "file.txt"
    link_entries = [e for e, _ in ents.values() if e.type is EntryType.HARDLINK]
    assert len(link_entries) == 1 and link_entries[0].linkname == first and link_entries[0].mode == 0o4755
    assert ents["dir/sub"][0].type is EntryType.DIR
    if fmt not in ("ustar", "v7"):
        assert ents["fifo"][0].type is EntryType.FIFO
        long = "d" * 120 + "/" + "f" * 200
        assert ents[long][1] == b"x" * 1000


@pytest.mark.skipif(GNU_TAR is None, reason="GNU tar not installed")
@pytest.mark.parametrize("args", [["--format=gnu"], ["--format=posix", "--sparse-version=1.0"],
                                  ["--format=posix", "--sparse-version=0.1"]])
def test_sparse_files_are_expanded(shm: str, args: list[str]) -> None:
    src = f"{shm}/src"
    os.makedirs(src)
    with open(f"{src}/sparse", "wb") as f:
        f.write(b"head")
        f.seek(3 << 20)
        f.write(b"middle")
        f.seek(9 << 20)
        f.write(b"tail")
    with open(f"{src}/after", "wb") as f:
        f.write(b"after")
    expected = open(f"{src}/sparse", "rb").read()
    subprocess.run([GNU_TAR, *args, "-S", "-cf", f"{shm}/s.tar", "-C", src, "sparse", "after"], check=True)  # type: ignore[list-item]
    data = open(f"{shm}/s.tar", "rb").read()
    assert len(data) < 1 << 20  # really stored sparse
    ents = by_path(data)
    assert ents["sparse"][0].size == len(expected)
    assert ents["sparse"][1] == expected
    assert ents["after"][1] == b"after"
    pieces = {e.path: _by_pieces(c, 1 << 20) for e, c in iter_entries(io.BytesIO(data)) if c is not None}
    assert pieces == {"sparse": expected, "after": b"after"}  # read_some expands the holes too


def test_sparse_left_unread_is_skipped(shm: str) -> None:
    if GNU_TAR is None:
        pytest.skip("GNU tar not installed")
    src = f"{shm}/src"
    os.makedirs(src)
    with open(f"{src}/sparse", "wb") as f:
        f.write(b"a")
        f.seek(5 << 20)
        f.write(b"b")
    open(f"{src}/z", "wb").write(b"zz")
    subprocess.run([GNU_TAR, "--format=gnu", "-S", "-cf", f"{shm}/s.tar", "-C", src, "sparse", "z"], check=True)
    names = []
    for e, c in iter_entries(open(f"{shm}/s.tar", "rb")):
        names.append(e.path)
        if e.path == "z":
            assert c is not None and c.read() == b"zz"
    assert names == ["sparse", "z"]


def test_reads_python_tarfile_pax_with_ns_mtime_and_binary_xattrs() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("usr/bin/ping")
        ti.size = 4
        ti.mode = 0o755
        ti.pax_headers = {
            "mtime": "1700000000.987654321",
            "SCHILY.xattr.security.capability": b"\x01\x00\x00\x02\x00\x20\x00\x00\xff".decode("utf-8", "surrogateescape"),
        }
        tf.addfile(ti, io.BytesIO(b"ELF!"))
        d = tarfile.TarInfo("usr/lib/" + "ü" * 80)
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tf.addfile(d)
        dev = tarfile.TarInfo("dev/null")
        dev.type = tarfile.CHRTYPE
        dev.devmajor, dev.devminor = 1, 3
        tf.addfile(dev)
    ents = by_path(buf.getvalue())
    ping, content = ents["usr/bin/ping"]
    assert content == b"ELF!"
    assert ping.mtime_ns == 1_700_000_000_987_654_321
    assert ping.xattrs == {"security.capability": b"\x01\x00\x00\x02\x00\x20\x00\x00\xff"}
    assert ents["usr/lib/" + "ü" * 80][0].type is EntryType.DIR
    null = ents["dev/null"][0]
    assert (null.type, null.devmajor, null.devminor) == (EntryType.CHAR, 1, 3)


def test_reads_gnu_long_names_from_tarfile_and_non_utf8_names() -> None:
    buf = io.BytesIO()
    long = "a" * 150 + "/" + "b" * 200
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        ti = tarfile.TarInfo(long)
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"hi"))
        sl = tarfile.TarInfo("ln")
        sl.type = tarfile.SYMTYPE
        sl.linkname = "t" * 300
        tf.addfile(sl)
        nb = tarfile.TarInfo("caf\udce9")
        tf.addfile(nb, io.BytesIO(b""))
    ents = by_path(buf.getvalue())
    assert ents[long][1] == b"hi"
    assert ents["ln"][0].linkname == "t" * 300
    assert "caf\udce9" in ents


def docker_layer() -> bytes:
    """What `docker save` emits for a RUN that deleted files: 0600 regular-file whiteouts, one of
    them with a stale linkname (overlay whiteouts share an inode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, kind, link in [("etc/", tarfile.DIRTYPE, ""), ("etc/.wh.motd", tarfile.REGTYPE, ""),
                                 ("etc/.wh.issue", tarfile.REGTYPE, "etc/apk"), ("var/.wh..wh..opq", tarfile.REGTYPE, "")]:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = 0o600 if kind == tarfile.REGTYPE else 0o755
            ti.linkname = link
            tf.addfile(ti, io.BytesIO(b""))
    return buf.getvalue()


def test_docker_style_whiteouts_ignore_stale_linknames() -> None:
    ents = by_path(docker_layer())
    issue = ents["etc/.wh.issue"][0]
    assert issue.type is EntryType.FILE and issue.linkname == "" and issue.mode == 0o600
    assert issue.is_whiteout and issue.whiteout_target == "etc/issue"
    assert ents["var/.wh..wh..opq"][0].is_opaque


def test_compressed_layers_are_sniffed() -> None:
    raw = docker_layer()
    import zstandard

    for blob in (raw, gzip.compress(raw), zstandard.ZstdCompressor().compress(raw)):
        assert [e.path for e, _ in read_all(blob)] == ["etc", "etc/.wh.motd", "etc/.wh.issue", "var/.wh..wh..opq"]


def test_unread_content_is_skipped_and_stale_readers_refuse() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i, size in enumerate([3000, 0, 1 << 20, 5]):
            ti = tarfile.TarInfo(f"f{i}")
            ti.size = size
            tf.addfile(ti, io.BytesIO(bytes([i]) * size))
    seen = []
    readers = []
    for e, c in iter_entries(io.BytesIO(buf.getvalue())):
        assert c is not None
        readers.append(c)
        if e.path == "f0":
            assert c.read(10) == bytes(10)
        if e.path == "f3":
            assert c.read() == b"\x03" * 5
        seen.append(e.path)
    assert seen == ["f0", "f1", "f2", "f3"]
    with pytest.raises(ValueError):
        readers[0].read()


def test_duplicates_are_yielded_in_order() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for data in (b"one", b"two"):
            ti = tarfile.TarInfo("same")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    assert [c for _, c in read_all(buf.getvalue())] == [b"one", b"two"]


def test_empty_stream_and_end_marker_only() -> None:
    assert read_all(b"") == []
    assert read_all(bytes(1024)) == []
    assert read_all(bytes(10240)) == []


# -- hostile and malformed input ------------------------------------------------------------------


def one_file_tar(name: str = "f", data: bytes = b"content", **ti_kw: object) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        for k, v in ti_kw.items():
            setattr(ti, k, v)
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def patch_header(blk: bytes, offset: int, field: bytes) -> bytes:
    b = bytearray(blk)
    b[offset : offset + len(field)] = field
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b[:512])
    return bytes(b)


def test_truncated_archives() -> None:
    data = one_file_tar(data=b"x" * 5000)
    for cut in (100, 512 + 100, 512 + 4096, 511):
        with pytest.raises(TarFormatError, match="truncated"):
            read_all(data[:cut], layer="sha256:abc")


def test_bad_checksum_names_layer_and_entry() -> None:
    data = bytearray(one_file_tar("etc/passwd"))
    data[0] ^= 0x01  # name changes, checksum no longer matches
    with pytest.raises(TarFormatError) as err:
        read_all(bytes(data), layer="sha256:feed")
    assert "sha256:feed" in str(err.value) and "checksum" in str(err.value)


def test_negative_and_huge_sizes() -> None:
    blk = one_file_tar()[:512]
    neg = patch_header(blk, 124, b"\xff" * 12)
    with pytest.raises(TarFormatError, match="invalid size"):
        read_all(neg + bytes(1024))
    huge = patch_header(blk, 124, b"\x80" + b"\xff" * 11)
    with pytest.raises(TarFormatError, match="invalid size"):
        read_all(huge + bytes(1024))
    garbage = patch_header(blk, 124, b"12x45678901\0")
    with pytest.raises(TarFormatError):
        read_all(garbage + bytes(1024))
    big = patch_header(blk, 124, b"%011o\0" % (1 << 32))  # claims 4 GiB, has nothing
    with pytest.raises(LimitExceededError):
        read_all(big + bytes(1024), limits=Limits(max_bytes=1 << 30))
    with pytest.raises(TarFormatError, match="truncated"):
        read_all(big + bytes(1024))


def test_base256_numbers_are_read() -> None:
    blk = one_file_tar(uid=0)[:512]
    big_uid = patch_header(blk, 108, b"\x80\x00\x00\x00\x7f\xff\xff\xff")
    data = big_uid + one_file_tar()[512:]
    (e, c), = read_all(data)
    assert e.uid == 0x7FFFFFFF and c == b"content"


def test_unknown_type_and_pax_abuse() -> None:
    blk = one_file_tar()[:512]
    with pytest.raises(TarFormatError, match="unknown entry type"):
        read_all(patch_header(blk, 156, b"Z") + one_file_tar()[512:])
    with pytest.raises(TarFormatError, match="PAX"):
        read_all(one_file_tar(pax_headers={"size": "-5"}))
    with pytest.raises(TarFormatError, match="mtime"):
        read_all(one_file_tar(pax_headers={"mtime": "soon"}))
    two = one_file_tar("a", pax_headers={"path": "x" * 200})
    pax_part = two[:1024]  # x header + its data block
    with pytest.raises(TarFormatError, match="two PAX headers"):
        read_all(pax_part + two)


def test_malformed_pax_records() -> None:
    data = bytearray(one_file_tar(pax_headers={"comment": "abc"}))
    i = data.index(b"comment")
    data[i - 3 : i - 1] = b"99"  # record length now points past the data
    with pytest.raises(TarFormatError, match="PAX"):
        read_all(bytes(data))


@pytest.mark.parametrize("name", ["../escape", "a/../../etc/passwd", "x\x00y"])
def test_escaping_names_raise_unsafe_path(name: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(name.replace("\x00", "N"))
        tf.addfile(ti, io.BytesIO(b""))
    data = buf.getvalue()
    if "\x00" in name:
        data = one_file_tar(pax_headers={"path": name})
    with pytest.raises(UnsafePathError) as err:
        read_all(data, layer="L1")
    assert "L1" in str(err.value)


def test_absolute_names_are_made_relative_and_hardlink_targets_cleaned() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo("/etc/hosts"), io.BytesIO(b""))
        hl = tarfile.TarInfo("./etc/h2")
        hl.type = tarfile.LNKTYPE
        hl.linkname = "/etc/hosts"
        tf.addfile(hl)
        bad = tarfile.TarInfo("etc/h3")
        bad.type = tarfile.LNKTYPE
        bad.linkname = "../../outside"
        tf.addfile(bad)
    it = iter_layer(io.BytesIO(buf.getvalue()))
    assert next(it)[0].path == "etc/hosts"
    assert next(it)[0].linkname == "etc/hosts"
    with pytest.raises(UnsafePathError):
        next(it)


def test_entry_and_header_limits() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(20):
            tf.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO(b""))
    with pytest.raises(LimitExceededError):
        read_all(buf.getvalue(), limits=Limits(max_entries=10))
    assert len(read_all(buf.getvalue(), limits=Limits(max_entries=20))) == 20
    with pytest.raises(LimitExceededError):
        read_all(one_file_tar(pax_headers={"comment": "c" * 5000}), limits=Limits(max_header_bytes=4096))


def _zeros_gzip_member(n: int) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [co.compress(chunk) for _ in range(n >> 20)]
    return b"".join(parts) + co.flush()


def test_gzip_bomb_stops_early() -> None:
    """2 GiB of zeros behind one tar header, streamed from ~2 MB; nothing big is ever held."""
    hdr = one_file_tar("bomb", b"")[:512]
    hdr = patch_header(hdr, 124, b"%011o\0" % (2 << 30))
    member = _zeros_gzip_member(64 << 20)  # one 64 MiB-of-zeros gzip member, repeated
    blob = gzip.compress(hdr) + member * 32 + gzip.compress(bytes(1024))
    assert len(blob) < 8 << 20

    read = 0
    with pytest.raises(LimitExceededError):
        for _e, c in iter_layer(io.BytesIO(blob), limits=Limits(max_bytes=16 << 20)):
            pass
    # the ratio limit trips while streaming, even with a generous byte limit
    with pytest.raises(LimitExceededError):
        for _e, c in iter_layer(io.BytesIO(blob), limits=Limits(max_ratio=100), compressed_size=len(blob)):
            assert c is not None
            while chunk := c.read(1 << 20):
                read += len(chunk)
    assert read < 1 << 30


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes_raise_only_layerkit_errors(data: bytes) -> None:
    try:
        read_all(data, limits=Limits(max_bytes=1 << 20))
    except LayerkitError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_archives_raise_only_layerkit_errors(data: st.DataObject) -> None:
    base = bytearray(one_file_tar("dir/" + "n" * 120, b"payload" * 100, pax_headers={"mtime": "1.5"}) + docker_layer())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    for blob in (bytes(base[:cut]), gzip.compress(bytes(base))[: cut or None]):
        try:
            read_all(blob, limits=Limits(max_bytes=1 << 20))
        except LayerkitError:
            pass


def test_content_hash_of_large_member_streams() -> None:
    payload = os.urandom(3 << 20)
    data = one_file_tar("big", payload)
    for e, c in iter_entries(io.BytesIO(data)):
        h = hashlib.sha256()
        assert c is not None
        while chunk := c.read(100_000):
            h.update(chunk)
        assert h.digest() == hashlib.sha256(payload).digest() and e.size == len(payload)


class _Pieces(io.RawIOBase):
    """A stream handing out its bytes in the given sizes, in turn (as pipes and decompressors do)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data, self._sizes, self._pos, self._i = data, sizes, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        size = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        take = size if n is None or n < 0 else min(n, size)
        out = self._data[self._pos : self._pos + take]
        self._pos += len(out)
        return out


def _mixed_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for i, size in enumerate([0, 1, 511, 512, 513, 3000, 70_000]):
            info = tarfile.TarInfo(f"d/{'long-' * 30 if i % 3 == 0 else ''}f{i}")
            info.size, info.mtime = size, 1_700_000_000.25 + i
            t.addfile(info, io.BytesIO(bytes([i]) * size))
        link = tarfile.TarInfo("d/l")
        link.type, link.linkname = tarfile.SYMTYPE, "f1"
        t.addfile(link)
    return buf.getvalue()


@pytest.mark.parametrize("sizes", [[1], [7, 505], [511], [513], [512, 3], [1000, 24], [100_000]],
                         ids=lambda s: "-".join(map(str, s)))
def test_any_read_sizes_of_the_stream_give_the_same_entries(sizes: list[int]) -> None:
    data = _mixed_archive()
    want = read_all(data)
    got = [(e, c.read() if c is not None else None) for e, c in iter_entries(_Pieces(data, sizes))]  # type: ignore[arg-type]
    assert got == want
    indexed = [e for e, _ in iter_entries(_Pieces(data, sizes), content=False)]  # type: ignore[arg-type]
    assert indexed == [e for e, _ in want]


def _by_pieces(content: object, n: int) -> bytes:
    out = []
    while piece := content.read_some(n):  # type: ignore[attr-defined]
        assert isinstance(piece, (bytes, memoryview)) and 0 < len(piece) <= n
        out.append(bytes(piece))
    return b"".join(out)


@pytest.mark.parametrize("sizes", [[1], [7, 505], [513], [1000, 24], [100_000]], ids=lambda s: "-".join(map(str, s)))
def test_read_some_gives_the_content_in_views_whatever_the_stream_hands_over(sizes: list[int]) -> None:
    data = _mixed_archive()
    want = read_all(data)
    got = [(e, _by_pieces(c, 4096) if c is not None else None) for e, c in iter_entries(_Pieces(data, sizes))]  # type: ignore[arg-type]
    assert got == want


def test_read_some_views_the_stream_buffer_instead_of_copying() -> None:
    payload = os.urandom(100_000)
    for _, c in iter_entries(io.BytesIO(one_file_tar("f", payload))):
        assert c is not None
        first = c.read_some(1 << 20)
        assert isinstance(first, memoryview) and first.obj is not None and len(first.obj) > len(first)
        assert bytes(first) + _by_pieces(c, 1 << 20) == payload


def test_read_some_mixes_with_read_and_refuses_after_the_entry() -> None:
    payload = bytes(range(256)) * 40
    readers = []
    for _, c in iter_entries(io.BytesIO(one_file_tar("f", payload))):
        assert c is not None
        assert c.read(10) + bytes(c.read_some(100)) + c.read() == payload
        readers.append(c)
    with pytest.raises(ValueError, match="moved to the next entry"):
        readers[0].read_some(1)


def test_read_some_of_a_truncated_member_is_a_tar_format_error() -> None:
    data = one_file_tar("f", os.urandom(50_000))[:20_000]
    with pytest.raises(TarFormatError, match="truncated"):
        for _, c in iter_entries(io.BytesIO(data)):
            assert c is not None
            _by_pieces(c, 1 << 20)

