"""Codecs: every compression round-trips, is detected by magic, is reproducible, fails cleanly."""

from __future__ import annotations

import gzip
import importlib
import io
import os
import random
import shutil
import subprocess
import threading
import tracemalloc
import zlib

import pytest
import zstandard

from layerkit.errors import LimitExceededError, TarFormatError
from layerkit.mediatypes import Compression, detect_compression
from layerkit.tarfs.compression import (
    DEFAULT_LEVEL,
    GZIP_BLOCK,
    GZIP_HEADER,
    HAVE_ISAL,
    HAVE_ZLIB_NG,
    decompress_whole,
    gzip_backend,
    gzip_blocked,
    open_compressor,
    open_decompressed,
)

GZIP_CLI = shutil.which("gzip")

DATA = os.urandom(300_000) + b"layerkit " * 200_000


def _compress(comp: Compression, data: bytes = DATA, **kw: object) -> bytes:
    out = io.BytesIO()
    w = open_compressor(out, comp, **kw)  # type: ignore[arg-type]
    for i in range(0, len(data), 70_000):
        w.write(data[i : i + 70_000])
    w.close()
    assert not out.closed, "closing the compressor must not close the sink"
    return out.getvalue()


@pytest.mark.parametrize("comp", list(Compression))
def test_round_trip_and_magic(comp: Compression) -> None:
    blob = _compress(comp)
    assert detect_compression(blob[:4]) is comp
    dec = open_decompressed(io.BytesIO(blob))
    assert dec.read() == DATA
    assert dec.compression is comp  # type: ignore[attr-defined]


def test_gzip_header_is_fixed_and_readable_by_stdlib() -> None:
    blob = _compress(Compression.GZIP)
    assert blob[:10] == GZIP_HEADER == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert gzip.decompress(blob) == DATA


@pytest.mark.parametrize("level", [1, 2, 6, 9])
def test_gzip_levels_and_backends(level: int) -> None:
    blob = _compress(Compression.GZIP, level=level)
    assert gzip.decompress(blob) == DATA
    deflater = "zlib-ng" if HAVE_ZLIB_NG else "zlib"
    assert gzip_backend(level) == ("isal" if HAVE_ISAL and level <= 3 else deflater)
    assert gzip_blocked(level) is (gzip_backend(level) != "isal")
    with pytest.raises(ValueError):
        open_compressor(io.BytesIO(), Compression.GZIP, level=10)


def _text(size: int, seed: int = 8) -> bytes:
    """Compressible, non-repetitive bytes (words drawn at random), like a tree of source files."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 9))) for _ in range(3000)]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(words, k=64)) + b"\n"
    return bytes(out[:size])


BLOCKY = _text(2 * GZIP_BLOCK + 12_345) + os.urandom(50_000)  # three blocks, the last partial


@pytest.mark.parametrize("level", [4, 6, 9])
def test_blocked_gzip_bytes_depend_on_neither_threads_nor_write_sizes(level: int) -> None:
    runs = {_compress_in(BLOCKY, level=level, threads=t, chunk=c)
            for t, c in ((0, 70_000), (1, GZIP_BLOCK), (2, 333_331), (4, GZIP_BLOCK), (4, 1 << 22))}
    assert len(runs) == 1
    blob = runs.pop()
    assert blob[:10] == GZIP_HEADER
    assert gzip.decompress(blob) == BLOCKY
    assert open_decompressed(io.BytesIO(blob)).read() == BLOCKY


def _compress_in(data: bytes, *, chunk: int, **kw: object) -> bytes:
    out = io.BytesIO()
    w = open_compressor(out, Compression.GZIP, **kw)  # type: ignore[arg-type]
    for i in range(0, len(data), chunk):
        w.write(memoryview(data)[i : i + chunk])
    w.close()
    return out.getvalue()


@pytest.mark.skipif(GZIP_CLI is None, reason="GNU gzip not installed")
@pytest.mark.parametrize("size", [0, 1, GZIP_BLOCK - 1, GZIP_BLOCK, GZIP_BLOCK + 1, 2 * GZIP_BLOCK])
def test_blocked_gzip_round_trips_through_gnu_gzip_at_block_edges(size: int) -> None:
    data = BLOCKY[:size]
    blob = _compress_in(data, level=6, threads=2, chunk=100_000)
    assert subprocess.run([GZIP_CLI, "-dc"], input=blob, capture_output=True, check=True).stdout == data  # type: ignore[list-item]
    assert gzip.decompress(blob) == data


def test_dictionary_priming_keeps_one_stream_ratio() -> None:
    # a 20 KB random piece repeated: a block that did not see the previous block's tail would
    # store the piece again (20 KB more per block); primed, a block costs what one stream pays
    data = os.urandom(20_000) * 150
    deflater = importlib.import_module("zlib_ng.zlib_ng") if HAVE_ZLIB_NG else zlib
    blocked = _compress_in(data, level=6, chunk=GZIP_BLOCK, threads=2)
    assert len(blocked) < len(deflater.compress(data, 6)) + 1_000


def test_blocked_gzip_memory_stays_bounded() -> None:
    class Discard:
        def write(self, b: bytes) -> int:
            return len(b)

    chunk = bytes(_text(GZIP_BLOCK, seed=3))
    tracemalloc.start()
    try:
        w = open_compressor(Discard(), Compression.GZIP, level=6, threads=2)  # type: ignore[arg-type]
        for _ in range(24):
            w.write(chunk)
        w.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * GZIP_BLOCK  # in flight: 2 * threads blocks and their output, never the stream


def test_blocked_gzip_sink_errors_surface_and_free_the_workers() -> None:
    class FailsLater(io.RawIOBase):
        writes = 0

        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            self.writes += 1
            if self.writes > 2:
                raise OSError("disk full")
            return len(b)  # type: ignore[arg-type]

    with pytest.raises(OSError, match="disk full"):
        w = open_compressor(FailsLater(), Compression.GZIP, level=6, threads=2)  # type: ignore[arg-type]
        try:
            for i in range(0, len(BLOCKY), 70_000):
                w.write(BLOCKY[i : i + 70_000])
        finally:
            w.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("layerkit-gzip")]


def test_output_is_reproducible_and_threads_do_not_change_zstd_bytes() -> None:
    assert _compress(Compression.GZIP) == _compress(Compression.GZIP)
    mt = {_compress(Compression.ZSTD, threads=n) for n in (1, 2, 4)}
    assert len(mt) == 1
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(mt.pop())).read() == DATA


def test_threaded_gzip_is_valid_gzip_with_our_header() -> None:
    blob = _compress(Compression.GZIP, threads=2)
    assert blob[:10] == GZIP_HEADER
    assert gzip.decompress(blob) == DATA


def test_default_levels() -> None:
    assert DEFAULT_LEVEL[Compression.ZSTD] == 3
    assert DEFAULT_LEVEL[Compression.GZIP] in (1, 2)


def test_multi_member_gzip_and_multi_frame_zstd() -> None:
    g = gzip.compress(b"abc") + gzip.compress(b"def")
    assert open_decompressed(io.BytesIO(g)).read() == b"abcdef"
    z = zstandard.ZstdCompressor().compress(b"abc") + zstandard.ZstdCompressor().compress(b"def")
    assert open_decompressed(io.BytesIO(z)).read() == b"abcdef"


def test_decompress_whole_takes_one_complete_gzip_member_or_a_plain_tar() -> None:
    data = DATA[:20_000]
    member = gzip.compress(data, mtime=0)
    assert decompress_whole(member, 1 << 20) == data
    assert decompress_whole(data, 1 << 20) == data  # an uncompressed layer is its own tar


@pytest.mark.parametrize("blob, why", [
    (gzip.compress(DATA[:20_000]) + gzip.compress(b"more"), "a second member"),
    (gzip.compress(DATA[:20_000]) + b"\0\0\0\0", "bytes after the member"),
    (gzip.compress(DATA[:20_000])[:-4], "no length in the trailer"),
    (gzip.compress(DATA[:20_000])[:-8] + b"\0" * 8, "a wrong CRC"),
    (gzip.compress(bytes(2 << 20)), "more out than the cap"),
    (zstandard.ZstdCompressor().compress(DATA[:20_000]), "zstd"),
    (DATA[: (1 << 20) + 1], "a plain tar over the cap"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_decompress_whole_leaves_everything_else_to_the_streaming_reader(blob: bytes, why: str) -> None:
    assert decompress_whole(blob, 1 << 20) is None, why


class _NoPeek(io.RawIOBase):
    """A pipe-like stream: no peek, no seek, short reads."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        chunk = self._b.read(min(len(b), 3))
        b[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("comp", list(Compression))
def test_sniffing_works_on_unpeekable_short_reading_streams(comp: Compression) -> None:
    blob = _compress(comp, DATA[:5000])
    assert open_decompressed(_NoPeek(blob)).read() == DATA[:5000]  # type: ignore[arg-type]


@pytest.mark.parametrize("comp", [Compression.GZIP, Compression.ZSTD])
def test_corrupt_streams_raise_tar_format_error(comp: Compression) -> None:
    blob = bytearray(_compress(comp))
    blob[len(blob) // 2 : len(blob) // 2 + 64] = os.urandom(64)
    with pytest.raises(TarFormatError):
        dec = open_decompressed(io.BytesIO(bytes(blob)))
        while dec.read(1 << 16):
            pass


def test_truncated_gzip_raises_tar_format_error() -> None:
    blob = _compress(Compression.GZIP)[:-100]
    with pytest.raises(TarFormatError):
        open_decompressed(io.BytesIO(blob)).read()


def test_decompression_limits() -> None:
    blob = zlib.compress(b"", 1)  # placeholder so the name is used
    zeros = gzip.compress(bytes(8 << 20), 1)
    with pytest.raises(LimitExceededError):
        open_decompressed(io.BytesIO(zeros), max_bytes=1 << 20).read()
    with pytest.raises(LimitExceededError):
        open_decompressed(io.BytesIO(zeros), max_ratio=100, compressed_size=len(zeros)).read()
    assert len(open_decompressed(io.BytesIO(zeros), max_ratio=2000, compressed_size=len(zeros)).read()) == 8 << 20
    assert blob
