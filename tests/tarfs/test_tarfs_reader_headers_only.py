"""``iter_entries(content=False)``, the indexing mode of the union and inspect: the same entries and
the same errors as the content mode, no content readers, and the stream still read to its end."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerkit.errors import LayerkitError
from layerkit.tarfs import Entry
from layerkit.tarfs.reader import iter_entries

GNU_TAR = shutil.which("tar")


class _Counted(io.RawIOBase):
    """A stream that remembers how many bytes were read from it (and whether it hit EOF)."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._f.readinto(b)
        self.read_bytes += n
        return n


def both_modes(data: bytes) -> tuple[list[Entry], list[Entry]]:
    full = [e for e, _c in iter_entries(io.BytesIO(data))]  # type: ignore[arg-type]
    headers = []
    for e, c in iter_entries(io.BytesIO(data), content=False):  # type: ignore[arg-type]
        assert c is None
        headers.append(e)
    return full, headers


@pytest.fixture
def shm() -> Iterator[str]:
    d = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None, prefix="lk-tarfs-ho-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(GNU_TAR is None, reason="GNU tar not installed")
@pytest.mark.parametrize("args", [["--format=gnu"], ["--format=posix"], ["--format=oldgnu"], ["--format=v7"],
                                  ["--format=posix", "--sparse-version=1.0", "-S"],
                                  ["--format=posix", "--sparse-version=0.1", "-S"], ["--format=gnu", "-S"]])
def test_headers_only_matches_full_read(shm: str, args: list[str]) -> None:
    src = f"{shm}/src"
    os.makedirs(f"{src}/dir/sub")
    for i in range(20):
        with open(f"{src}/dir/f{i}", "wb") as f:
            f.write(os.urandom(i * 700))
    with open(f"{src}/sparse", "wb") as f:
        f.truncate(3 << 20)
        f.seek(1 << 20)
        f.write(b"data" * 1000)
    os.symlink("f1", f"{src}/dir/link")
    os.link(f"{src}/dir/f2", f"{src}/dir/hard")
    subprocess.run([GNU_TAR, *args, "-cf", f"{shm}/t.tar", "-C", src, "."], check=True)  # type: ignore[list-item]
    with open(f"{shm}/t.tar", "rb") as f:
        data = f.read()
    full, headers = both_modes(data)
    assert headers == full
    assert len(full) == 26


def test_headers_only_reads_the_whole_stream() -> None:
    """A digest-verifying stream below must see every byte, trailing padding included."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, size in enumerate((0, 1, 511, 512, 513, 3 << 20)):
            info = tarfile.TarInfo(f"f{i}")
            info.size = size
            info.pax_headers = {"mtime": "1700000000.123456789"}
            tar.addfile(info, io.BytesIO(bytes(size)))
    data = buf.getvalue() + bytes(4096)  # record padding past the end marker
    stream = _Counted(data)
    entries = [e for e, _c in iter_entries(stream, content=False)]  # type: ignore[arg-type]
    assert [e.size for e in entries] == [0, 1, 511, 512, 513, 3 << 20]
    assert entries[0].mtime_ns == 1_700_000_000_123_456_789
    assert stream.read_bytes == len(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_headers_only_fails_like_a_full_read(data: st.DataObject) -> None:
    """On a mutated archive both modes yield the same entries, then raise the same error type."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"d/f{i}")
            payload = hashlib.sha256(bytes([i])).digest() * (i + 1)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    raw = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))

    def run(content: bool) -> tuple[list[Entry], type[BaseException] | None]:
        out: list[Entry] = []
        try:
            for e, c in iter_entries(io.BytesIO(bytes(raw)), content=content):  # type: ignore[arg-type]
                if c is not None:
                    c.read()
                out.append(e)
        except LayerkitError as exc:
            return out, type(exc)
        return out, None

    assert run(False) == run(True)


def _pax_then_file(pax_data: bytes) -> bytes:
    """A hand-made PAX ``x`` header carrying ``pax_data`` verbatim, then a small file ``f``."""
    def header(name: bytes, size: int, flag: bytes) -> bytes:
        info = tarfile.TarInfo(name.decode())
        info.size, info.type, info.mtime = size, flag, 1
        return info.tobuf(tarfile.USTAR_FORMAT)
    pad = bytes(-len(pax_data) % 512)
    return (header(b"PaxHeader/f", len(pax_data), tarfile.XHDTYPE) + pax_data + pad
            + header(b"f", 3, tarfile.REGTYPE) + b"abc" + bytes(509) + bytes(1024))


def _outcome(archive: bytes, content: bool) -> object:
    try:
        return [e for e, _c in iter_entries(io.BytesIO(archive), content=content)]  # type: ignore[arg-type]
    except LayerkitError as exc:
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"mtime", b"path", b"uid", b"SCHILY.xattr.user.k", b"", b"m=t"]),
       st.sampled_from([b"1700000000.5", b"x/y", b"12", b"", b"=", b"\xff\xfe"]),
       st.sampled_from([0, 1, -1, 2]), st.sampled_from([b"", b"+", b"0", b" "]), st.booleans())
def test_one_pax_record_reads_as_the_general_parser_does(key: bytes, value: bytes, off: int, prefix: bytes,
                                                         second: bool) -> None:
    """A lone PAX record (the reader's fast path) reads as it does followed by an ignored record
    (which takes the general parser): same entries, or the same error, well formed or not."""
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + len(str(len(body) + 3))
    length = n if len(str(n)) + len(body) == n else n + 1
    data = prefix + str(length + off).encode() + body + (b"8 uid=7\n" if second else b"")
    lone, general = _pax_then_file(data), _pax_then_file(data + b"13 comment=x\n")
    for content in (False, True):
        assert _outcome(lone, content) == _outcome(general, content)
