"""Layer codecs: sniff-and-decompress for reading, reproducible compressors for writing.

Why these choices (measured, see DEPENDENCIES.md §5 and the writer benchmark in the tarfs report):

- gzip goes through python-isal when importable (4x zlib's speed at level 1-2 for about zlib-L1's
  ratio; 900 MB/s inflate) and falls back to stdlib ``zlib``. Levels 0-3 use isal; 4-9 use zlib (isal
  has no such levels), so asking for ``level=6`` buys zlib's ratio knowingly.
- We frame gzip ourselves: header mtime 0, no file name, XFL 0, OS 255 ("unknown", as Go's
  ``compress/gzip`` writes) — the same bytes on every host and every run.
- zstd uses ``zstandard`` with a content checksum (as the zstd CLI writes), so corruption is
  caught while decompressing, not only by the digest; ``threads >= 1`` selects libzstd's multi-threaded mode, whose output does
  not depend on the number of workers, so the layer writer always uses it (at least one worker) and a
  digest never depends on how many cores built it.
- Decompression sniffs magic bytes (never trusts the media type), reads in constant memory and
  translates codec errors into :class:`TarFormatError`.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any, BinaryIO, Callable

from ..errors import TarFormatError
from ..mediatypes import Compression, detect_compression
from .limits import limit_error

try:  # pragma: no cover - exercised whichever way the environment is
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover
    _igzip = None
    _isal_zlib = None

try:  # pragma: no cover
    import zstandard as _zstd
except ImportError:  # pragma: no cover
    _zstd = None

__all__ = [
    "DEFAULT_LEVEL",
    "HAVE_ISAL",
    "HAVE_ZSTD",
    "GZIP_HEADER",
    "open_decompressed",
    "open_compressor",
    "gzip_backend",
]

HAVE_ISAL = _isal_zlib is not None
HAVE_ZSTD = _zstd is not None

#: Default levels, picked by measurement on a 2-core box (MB/s of tar through the whole layer
#: writer; ratio on a mixed rootfs payload): isal L1 and L2 run at the same speed (~480 MB/s raw) and
#: L2 compresses slightly better (3.10 vs 3.06), L3 halves the speed; zlib L6 is 14x slower for a
#: ratio of 3.56. zstd L3 is libzstd's default: ratio 4.1 at ~290 MB/s with workers.
DEFAULT_LEVEL: dict[Compression, int] = {Compression.NONE: 0, Compression.GZIP: 2, Compression.ZSTD: 3}

#: The ten header bytes every gzip layer we write starts with (mtime 0, no name, XFL 0, OS 255).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

_ISAL_MAX_LEVEL = 3


def gzip_backend(level: int) -> str:
    """Which deflate implementation a gzip level uses here: ``"isal"`` or ``"zlib"``."""
    return "isal" if HAVE_ISAL and 0 <= level <= _ISAL_MAX_LEVEL else "zlib"


# ------------------------------------------------------------------------------------------------
# reading


def _codec_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [EOFError, zlib.error, __import__("gzip").BadGzipFile]
    if _isal_zlib is not None:
        errs.append(_isal_zlib.error)
        errs.append(_isal_zlib.IsalError)
    if _zstd is not None:
        errs.append(_zstd.ZstdError)
    return tuple(errs)


_CODEC_ERRORS = _codec_errors()


class _Prefixed(io.RawIOBase):
    """Give back the sniffed head bytes before the rest of a non-peekable stream."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._raw.read(n)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Decoded(io.RawIOBase):
    """A decompressed stream: counts output, enforces limits, turns codec errors into TarFormatError."""

    def __init__(
        self,
        inner: Any,
        compression: Compression,
        max_bytes: int | None,
        ratio_cap: int | None,
        what: str,
    ) -> None:
        self._inner = inner
        self.compression = compression
        self._cap = min(x for x in (max_bytes, ratio_cap, 1 << 62) if x is not None)
        self._ratio_cap = ratio_cap
        self._max_bytes = max_bytes
        self._what = what
        self.bytes_out = 0

    def readable(self) -> bool:
        return True

    def _account(self, n: int) -> None:
        self.bytes_out += n
        if self.bytes_out > self._cap:
            if self._max_bytes is not None and self.bytes_out > self._max_bytes:
                raise limit_error(self._what, "max_bytes",
                                  f"more than {self._max_bytes} uncompressed bytes (the layer size limit)")
            raise limit_error(self._what, "max_ratio", f"decompresses to more than {self._ratio_cap} bytes "
                              "(the compression ratio limit: a decompression bomb?)")

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._inner.read(n)
        except _CODEC_ERRORS as exc:
            raise TarFormatError(f"{self._what}: corrupt {self.compression.value} stream: {exc}") from exc
        self._account(len(data))
        return data

    def readinto(self, b: Any) -> int:
        try:
            n = self._inner.readinto(b)
        except _CODEC_ERRORS as exc:
            raise TarFormatError(f"{self._what}: corrupt {self.compression.value} stream: {exc}") from exc
        self._account(n)
        return n

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


def _peek_head(stream: BinaryIO, n: int = 4) -> tuple[bytes, BinaryIO]:
    peek = getattr(stream, "peek", None)
    if peek is not None:
        try:
            head = peek(n)[:n]
            if len(head) >= n:
                return head, stream
        except (OSError, ValueError):
            pass
    head = b""
    while len(head) < n:
        chunk = stream.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head, _Prefixed(head, stream)  # type: ignore[return-value]


def open_decompressed(
    stream: BinaryIO,
    *,
    max_bytes: int | None = None,
    max_ratio: float | None = None,
    compressed_size: int | None = None,
    what: str = "layer",
    ratio_after: int = 0,
) -> BinaryIO:
    """The uncompressed bytes of a layer blob, whatever its codec (gzip, zstd or plain tar).

    Memory stays constant. With ``max_bytes`` or ``max_ratio`` (checked against ``compressed_size``
    when the caller knows it, e.g. from the descriptor, and only past ``ratio_after`` output bytes)
    a bomb stops with LimitExceededError as soon as it crosses the line. The returned object has
    ``compression`` and ``bytes_out`` attributes;
    closing it does not close ``stream``.
    """
    head, src = _peek_head(stream)
    comp = detect_compression(head)
    inner: Any
    if comp is Compression.GZIP:
        if _igzip is not None:
            inner = _igzip.IGzipFile(fileobj=src, mode="rb")
        else:  # pragma: no cover
            import gzip

            inner = gzip.GzipFile(fileobj=src, mode="rb")
    elif comp is Compression.ZSTD:
        if _zstd is None:  # pragma: no cover
            from ..errors import UnsupportedMediaTypeError

            raise UnsupportedMediaTypeError(f"{what}: zstd layer but the zstandard package is missing")
        inner = _zstd.ZstdDecompressor().stream_reader(src, read_size=1 << 20, read_across_frames=True, closefd=False)
    else:
        inner = _NoClose(src)
    ratio_cap = None
    if max_ratio is not None and compressed_size is not None and comp is not Compression.NONE:
        ratio_cap = max(ratio_after, int(max_ratio * max(compressed_size, 1)))
    return _Decoded(inner, comp, max_bytes, ratio_cap, what)  # type: ignore[return-value]


class _NoClose:
    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.read = raw.read
        self.readinto = getattr(raw, "readinto", None) or self._readinto

    def _readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------
# writing


class _PlainWriter:
    """Pass-through 'compressor' so callers need no special case for uncompressed layers."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.write: Callable[[Any], Any] = sink.write

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _GzipWriter:
    """One deflate stream framed as gzip by hand, so every header byte is ours and fixed."""

    def __init__(self, sink: BinaryIO, level: int) -> None:
        self._sink = sink
        if gzip_backend(level) == "isal":
            assert _isal_zlib is not None
            self._co = _isal_zlib.compressobj(level, _isal_zlib.DEFLATED, -15)
            self._crc32 = _isal_zlib.crc32
        else:
            if not 0 <= level <= 9:
                raise ValueError(f"gzip level must be 0-9, got {level}")
            self._co = zlib.compressobj(level, zlib.DEFLATED, -15)
            self._crc32 = zlib.crc32
        self._crc = 0
        self._size = 0
        self._closed = False
        sink.write(GZIP_HEADER)

    def write(self, data: Any) -> int:
        self._crc = self._crc32(data, self._crc)
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        self._size += n
        out = self._co.compress(data)
        if out:
            self._sink.write(out)
        return n

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sink.write(self._co.flush() + struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))


class _ZstdWriter:
    def __init__(self, sink: BinaryIO, level: int, threads: int) -> None:
        assert _zstd is not None
        cctx = _zstd.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        self._w = cctx.stream_writer(sink, closefd=False, write_return_read=True)
        self.write = self._w.write
        self._closed = False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._w.close()


class _ThreadedIsalWriter:
    """isal's ``igzip_threaded`` behind our fixed header (it swaps XFL and OS in its own)."""

    def __init__(self, sink: BinaryIO, level: int, threads: int) -> None:
        from isal import igzip_threaded

        self._fix = _HeaderFix(sink)
        self._w = igzip_threaded.open(self._fix, "wb", compresslevel=level, threads=threads)  # type: ignore[arg-type]
        self.write = self._w.write

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._w.close()


class _HeaderFix(io.RawIOBase):
    """Sink wrapper replacing the first 10 bytes written with GZIP_HEADER; never closes the sink."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._pending = 10

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = len(b) if not isinstance(b, memoryview) else b.nbytes
        if self._pending:
            mv = memoryview(b).cast("B")
            skip = min(self._pending, n)
            if self._pending == 10:
                self._sink.write(GZIP_HEADER)
            self._pending -= skip
            if skip < n:
                self._sink.write(mv[skip:])
            return n
        self._sink.write(b)
        return n

    def close(self) -> None:  # the sink belongs to the caller
        super().close()


def open_compressor(
    sink: BinaryIO, compression: Compression, *, level: int | None = None, threads: int = 0
) -> BinaryIO:
    """A writer (``write``/``close``) compressing into ``sink``; ``close`` finishes the stream but
    never closes ``sink``.

    gzip: levels 0-3 on isal, 4-9 on zlib; ``threads > 1`` with isal uses ``igzip_threaded``, whose
    bytes differ from the single-stream output (the layer writer therefore does not use it: its
    digests must not depend on the core count). zstd: ``threads`` is passed to libzstd (0 = single
    threaded mode; any N >= 1 gives identical bytes).
    """
    if compression is Compression.NONE:
        return _PlainWriter(sink)  # type: ignore[return-value]
    lvl = DEFAULT_LEVEL[compression] if level is None else level
    if compression is Compression.GZIP:
        if threads > 1 and gzip_backend(lvl) == "isal":
            return _ThreadedIsalWriter(sink, lvl, threads)  # type: ignore[return-value]
        return _GzipWriter(sink, lvl)  # type: ignore[return-value]
    if compression is Compression.ZSTD:
        if _zstd is None:  # pragma: no cover
            from ..errors import UnsupportedMediaTypeError

            raise UnsupportedMediaTypeError("zstd compression needs the zstandard package")
        return _ZstdWriter(sink, lvl, threads)  # type: ignore[return-value]
    raise ValueError(f"unknown compression {compression!r}")
