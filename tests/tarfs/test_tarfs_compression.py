"""Codecs: every compression round-trips, is detected by magic, is reproducible, fails cleanly."""

from __future__ import annotations

import gzip
import io
import os
import zlib

import pytest
import zstandard

from layerkit.errors import LimitExceededError, TarFormatError
from layerkit.mediatypes import Compression, detect_compression
from layerkit.tarfs.compression import (
    DEFAULT_LEVEL,
    GZIP_HEADER,
    gzip_backend,
    open_compressor,
    open_decompressed,
)

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
    assert gzip_backend(level) in ("isal", "zlib")
    assert gzip_backend(6) == "zlib"


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
