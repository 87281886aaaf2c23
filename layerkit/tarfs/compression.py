"""Layer codecs: sniff-and-decompress for reading, reproducible compressors for writing.

Why these choices (measured, see DEPENDENCIES.md §5 and the writer benchmark in the tarfs report):

- gzip levels 0-3 go through python-isal when importable (4x zlib's speed at level 1-2 for about
  zlib-L1's ratio; 900 MB/s inflate) as one deflate stream. Levels 4-9 (isal has none), and every
  level without isal, are written pigz-style: the input is cut into fixed ``GZIP_BLOCK`` blocks,
  each deflated on its own (primed with the previous block's last 32 KiB as dictionary, so the
  output is within 0.01% of one stream's size) and sync-flushed, and the blocks are concatenated in
  order and closed with an empty final block. Since the cut points depend on the byte count only,
  the bytes are the same for any number of worker threads (and any pattern of ``write`` sizes), and
  the blocks can be compressed on every core. The deflater is ``zlib-ng`` when importable (at level
  6, 1.4x less CPU than pigz's zlib on a mixed rootfs payload, 2.3x on DEPENDENCIES' payload, same
  ratio), else stdlib ``zlib``. Different deflate libraries give different (equally valid) bytes, so
  a layer digest depends on the codec library, as with every tool; ``gzip_backend`` names the one in
  use. zlib-ng's output even depends on how input and output buffers are handed to deflate, so each
  block is exactly one ``compressobj().compress()`` call: the bytes are those of the installed
  zlib-ng (library and binding), never of the thread count. (``zlib_ng.gzip_ng_threaded`` is not
  used: its bytes do not depend on its thread count either, but it cuts blocks wherever its buffered
  writer flushes, i.e. by the caller's write sizes, drives deflate differently from ``compressobj``
  and swaps the XFL and OS header bytes.)
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

import collections
import functools
import io
import struct
import zlib
from collections.abc import Callable
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import TarFormatError
from ..mediatypes import Compression, detect_compression
from .limits import limit_error

if TYPE_CHECKING:  # pragma: no cover
    from concurrent.futures import Future, ThreadPoolExecutor

try:  # pragma: no cover - exercised whichever way the environment is
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover
    _igzip = None
    _isal_zlib = None


__all__ = [
    "DEFAULT_LEVEL",
    "GZIP_BLOCK",
    "GZIP_HEADER",
    "HAVE_ISAL",
    "HAVE_ZLIB_NG",
    "HAVE_ZSTD",
    "decompress_whole",
    "gzip_backend",
    "gzip_blocked",
    "open_compressor",
    "open_decompressed",
]

HAVE_ISAL = _isal_zlib is not None
HAVE_ZLIB_NG = find_spec("zlib_ng") is not None
HAVE_ZSTD = find_spec("zstandard") is not None


@functools.cache
def _zstd() -> Any:
    """The ``zstandard`` module, or None; imported on first use (loading it costs ~4 ms, and a gzip
    layer never needs it)."""
    try:
        import zstandard
    except ImportError:  # pragma: no cover
        return None
    return zstandard


@functools.cache
def _deflate() -> Any:
    """The deflater of blocked gzip: ``zlib_ng.zlib_ng`` when installed, else ``zlib`` (first use)."""
    try:
        from zlib_ng import zlib_ng
    except ImportError:  # pragma: no cover
        return zlib
    return zlib_ng


#: Default levels, picked by measurement on a 2-core box (MB/s of tar through the whole layer
#: writer; ratio on a mixed rootfs payload): isal L1 and L2 run at the same speed (~480 MB/s raw) and
#: L2 compresses slightly better (3.10 vs 3.06), L3 halves the speed; zlib L6 is 14x slower for a
#: ratio of 3.56. zstd L3 is libzstd's default: ratio 4.1 at ~290 MB/s with workers.
DEFAULT_LEVEL: dict[Compression, int] = {Compression.NONE: 0, Compression.GZIP: 2, Compression.ZSTD: 3}

#: The ten header bytes every gzip layer we write starts with (mtime 0, no name, XFL 0, OS 255).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

_ISAL_MAX_LEVEL = 3

#: Uncompressed bytes per independently deflated gzip block (levels 4-9). Part of the output format:
#: changing it changes every such digest. 1 MiB is the layer writer's buffer, so a tar buffer is one
#: block; blocks cost 0.008% of size against one stream here, 0.05% at pigz's 128 KiB (and 8x the
#: hand-offs between threads).
GZIP_BLOCK = 1 << 20
_WINDOW = 32768  # deflate's window: the dictionary a block is primed with

def gzip_backend(level: int) -> str:
    """Which deflate implementation a gzip level uses here: ``"isal"``, ``"zlib-ng"`` or ``"zlib"``."""
    if HAVE_ISAL and 0 <= level <= _ISAL_MAX_LEVEL:
        return "isal"
    return "zlib-ng" if HAVE_ZLIB_NG else "zlib"


def gzip_blocked(level: int) -> bool:
    """Whether gzip at ``level`` is written as fixed blocks, i.e. the same bytes for any ``threads``."""
    return gzip_backend(level) != "isal"


# ------------------------------------------------------------------------------------------------
# reading


def _gzip_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [EOFError, zlib.error, __import__("gzip").BadGzipFile]
    if _isal_zlib is not None:
        errs.append(_isal_zlib.error)
        errs.append(_isal_zlib.IsalError)
    return tuple(errs)


#: what each codec raises on a corrupt stream
_GZIP_ERRORS = _gzip_errors()
_NO_ERRORS: tuple[type[BaseException], ...] = ()


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
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self._inner = inner
        self.compression = compression
        self._errors = errors
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
        except self._errors as exc:
            raise TarFormatError(f"{self._what}: corrupt {self.compression.value} stream: {exc}") from exc
        self._account(len(data))
        return data

    def readinto(self, b: Any) -> int:
        try:
            n = self._inner.readinto(b)
        except self._errors as exc:
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


def decompress_whole(data: bytes, cap: int) -> bytes | None:
    """The uncompressed bytes of a small blob, in one call; ``None`` when :func:`open_decompressed` must
    stream it instead: more than ``cap`` bytes out, zstd, more than one gzip member or bytes after it,
    or a corrupt stream (which the streaming reader then reports). For a layer of a few hundred bytes
    the streaming reader's set-up costs more than its bytes do."""
    comp = detect_compression(data[:4])
    if comp is Compression.NONE:
        return data if len(data) <= cap else None
    if comp is not Compression.GZIP:
        return None
    codec = _isal_zlib or zlib  # the same decompressobj API; wbits 31: one gzip member, CRC and length checked
    inflater = codec.decompressobj(31)
    try:
        out = inflater.decompress(data, cap)
    except codec.error:
        return None
    return out if inflater.eof and not inflater.unused_data else None


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
    errors = _GZIP_ERRORS
    if comp is Compression.GZIP:
        if _igzip is not None:
            inner = _igzip.IGzipFile(fileobj=src, mode="rb")
        else:  # pragma: no cover
            import gzip

            inner = gzip.GzipFile(fileobj=src, mode="rb")
    elif comp is Compression.ZSTD:
        zstd = _zstd()
        if zstd is None:  # pragma: no cover
            from ..errors import UnsupportedMediaTypeError

            raise UnsupportedMediaTypeError(f"{what}: zstd layer but the zstandard package is missing")
        inner = zstd.ZstdDecompressor().stream_reader(src, read_size=1 << 20, read_across_frames=True, closefd=False)
        errors = (EOFError, zstd.ZstdError)
    else:
        inner = _NoClose(src)
        errors = _NO_ERRORS
    ratio_cap = None
    if max_ratio is not None and compressed_size is not None and comp is not Compression.NONE:
        ratio_cap = max(ratio_after, int(max_ratio * max(compressed_size, 1)))
    return _Decoded(inner, comp, max_bytes, ratio_cap, what, errors)  # type: ignore[return-value]


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
    """One isal deflate stream framed as gzip by hand, so every header byte is ours and fixed."""

    def __init__(self, sink: BinaryIO, level: int) -> None:
        assert _isal_zlib is not None
        self._sink = sink
        self._co = _isal_zlib.compressobj(level, _isal_zlib.DEFLATED, -15)
        self._crc32 = _isal_zlib.crc32
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


def _deflate_block(level: int, block: bytes, zdict: bytes) -> bytes:
    """One block as raw deflate ending on a byte boundary (sync flush), primed with ``zdict``."""
    deflate = _deflate()
    co = deflate.compressobj(level, deflate.DEFLATED, -15, zdict=zdict) if zdict else \
        deflate.compressobj(level, deflate.DEFLATED, -15)
    return co.compress(block) + co.flush(deflate.Z_SYNC_FLUSH)  # type: ignore[no-any-return]


class _BlockGzipWriter:
    """gzip as fixed-size, dictionary-primed, sync-flushed deflate blocks (see the module docstring).

    With ``threads > 1`` blocks are deflated on a pool (zlib and zlib-ng release the GIL) and
    written in order; at most ``2 * threads`` blocks are in flight, so memory stays bounded. The CRC
    runs over the input as it arrives (2 GB/s: not worth splitting and combining).
    """

    def __init__(self, sink: BinaryIO, level: int, threads: int) -> None:
        if not 0 <= level <= 9:
            raise ValueError(f"gzip level must be 0-9, got {level}")
        self._sink = sink
        self._level = level
        self._deflate = _deflate()
        self._pending = bytearray()
        self._zdict = b""
        self._crc = 0
        self._size = 0
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None
        if threads > 1:  # imported here: readers never need a pool (it pulls in logging, ~6 ms)
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="layerkit-gzip")
        self._max_inflight = 2 * threads
        self._inflight: collections.deque[Future[bytes]] = collections.deque()
        sink.write(GZIP_HEADER)

    def write(self, data: Any) -> int:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        self._crc = self._deflate.crc32(data, self._crc)
        self._size += n
        pending = self._pending
        if not pending and n == GZIP_BLOCK:  # the layer writer's case: one tar buffer, one block
            self._submit(bytes(data))
            return n
        mv = memoryview(data).cast("B")
        while mv:
            k = min(GZIP_BLOCK - len(pending), len(mv))
            pending += mv[:k]
            mv = mv[k:]
            if len(pending) == GZIP_BLOCK:
                self._submit(bytes(pending))
                pending.clear()
        return n

    def _submit(self, block: bytes) -> None:
        zdict, self._zdict = self._zdict, block[-_WINDOW:]
        if self._pool is None:
            self._sink.write(_deflate_block(self._level, block, zdict))
            return
        self._inflight.append(self._pool.submit(_deflate_block, self._level, block, zdict))
        inflight = self._inflight
        while inflight and (len(inflight) > self._max_inflight or inflight[0].done()):
            self._sink.write(inflight.popleft().result())

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._pending:
                self._submit(bytes(self._pending))
                self._pending.clear()
            while self._inflight:
                self._sink.write(self._inflight.popleft().result())
            # an empty final block ends the deflate stream (what pigz and gzip_ng_threaded write)
            final = self._deflate.compressobj(self._level, self._deflate.DEFLATED, -15).flush()
            self._sink.write(final + struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the workers without finishing the stream (after an error elsewhere)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._inflight.clear()


class _ZstdWriter:
    def __init__(self, sink: BinaryIO, level: int, threads: int) -> None:
        cctx = _zstd().ZstdCompressor(level=level, threads=threads, write_checksum=True)
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

    gzip: levels 0-3 on isal as one stream; ``threads > 1`` there uses ``igzip_threaded``, whose
    bytes differ from the single-stream output (the layer writer therefore does not use it: its
    digests must not depend on the core count). Levels 4-9 (or any level without isal): fixed
    blocks on zlib-ng (else zlib) deflated by ``threads`` workers, the same bytes for any ``threads``
    (:func:`gzip_blocked`). zstd: ``threads`` is passed to libzstd (0 = single threaded mode; any
    N >= 1 gives identical bytes).
    """
    if compression is Compression.NONE:
        return _PlainWriter(sink)  # type: ignore[return-value]
    lvl = DEFAULT_LEVEL[compression] if level is None else level
    if compression is Compression.GZIP:
        if gzip_blocked(lvl):
            return _BlockGzipWriter(sink, lvl, threads)  # type: ignore[return-value]
        if threads > 1:
            return _ThreadedIsalWriter(sink, lvl, threads)  # type: ignore[return-value]
        return _GzipWriter(sink, lvl)  # type: ignore[return-value]
    if compression is Compression.ZSTD:
        if _zstd() is None:  # pragma: no cover
            from ..errors import UnsupportedMediaTypeError

            raise UnsupportedMediaTypeError("zstd compression needs the zstandard package")
        return _ZstdWriter(sink, lvl, threads)  # type: ignore[return-value]
    raise ValueError(f"unknown compression {compression!r}")
