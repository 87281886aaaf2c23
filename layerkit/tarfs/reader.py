"""Streaming tar reader for layers: one pass, constant memory, every member name cleaned.

Our own parser rather than :mod:`tarfile` because a layer reader must (a) stream without keeping
member objects (tarfile's ``members`` list grows per entry even in ``r|``), (b) keep PAX ``mtime``
to the nanosecond and ``SCHILY.xattr.*`` values as exact bytes, (c) enforce limits before it
allocates and (d) fail with one error type naming the layer and the entry. It reads ustar, PAX
(``x`` and ``g``), GNU (``L``/``K`` long names, base-256 numbers, ``S`` sparse, ``D`` dumpdir) and
v7 headers, and PAX sparse 0.1 and 1.0, expanding sparse files to their real size.

Policy: an entry is yielded with a content reader for FILE entries, valid until the next
iteration; what the caller leaves unread is skipped. Indexers (the union, inspect) pass
``content=False``: no reader object per member, the data is stepped over (the per-member cost is
what bounds inspecting a layer of small files: ~20k members a layer, two headers each with PAX). Duplicate paths are yielded as they come
(the unioner decides). Consecutive extended headers of the same kind (two ``x``, two ``L``) are
refused as ambiguous overrides.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import LayerError, LimitExceededError, TarFormatError, UnsafePathError
from .compression import open_decompressed
from .entry import Entry, EntryType
from .limits import DEFAULT_LIMITS, Limits, default_limits, limit_error
from .paths import clean_member

__all__ = ["DEFAULT_LIMITS", "Limits", "iter_entries", "iter_layer"]

BLOCK = 512
#: bytes asked of the stream per read: big, because under ``inspect`` each read is one hand-over to
#: the hashing thread, and every hand-over costs both threads a GIL switch (1 MiB → 8 MiB: -7%)
READ_SIZE = 8 << 20
_ZERO_BLOCK = bytes(BLOCK)
_MAX_SIZE = 1 << 62  # beyond any real file; also bounds base-256 nonsense


class _Source:
    """Buffered, counted reads from the decompressed tar stream."""

    __slots__ = ("_buf", "_pos", "_ratio_cap", "_s", "_what", "lim", "max", "offset")

    def __init__(self, stream: BinaryIO, lim: Limits, ratio_cap: int | None, what: str) -> None:
        self._s = stream
        self._buf = b""
        self._pos = 0
        self.offset = 0
        self.max = lim.max_bytes if ratio_cap is None else min(lim.max_bytes, ratio_cap)
        self.lim = lim
        self._ratio_cap = ratio_cap
        self._what = what

    def over(self, what: str, size: int | None = None) -> LimitExceededError:
        """The error for going past ``max`` (a member of ``size`` bytes, or the stream itself)."""
        claim = f"a member of {size} bytes" if size is not None else f"more than {self.max} bytes"
        if self.max < self.lim.max_bytes:
            return limit_error(what, "max_ratio", f"{claim} would decompress past {self.max} bytes, more than "
                               f"{self.lim.max_ratio:g} times the compressed size (a decompression bomb?)")
        return limit_error(what, "max_bytes", f"{claim} goes past the {self.lim.max_bytes}-byte uncompressed layer limit")

    def _raw_read(self, n: int) -> bytes:
        try:
            return self._s.read(n)
        except LayerError:
            raise
        except (OSError, EOFError, ValueError) as exc:
            raise TarFormatError(f"{self._what}: reading the tar stream: {exc}") from exc

    def _count(self, n: int) -> None:
        self.offset += n
        if self.offset > self.max:
            raise self.over(self._what)

    def block(self) -> bytes | None:
        """The next 512-byte block, ``None`` at a clean EOF; raises on a partial block."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= BLOCK:
            self._pos = pos + BLOCK
            self.offset += BLOCK
            if self.offset > self.max:
                raise self.over(self._what)
            return buf[pos : pos + BLOCK]
        rest = buf[pos:]
        while len(rest) < BLOCK:
            chunk = self._raw_read(READ_SIZE)
            if not chunk:
                break
            if rest and len(rest) + len(chunk) > BLOCK:
                # a header split across reads: complete it from the chunk, which stays the buffer
                # (``rest + chunk`` would copy all of a multi-megabyte read for 512 bytes)
                need = BLOCK - len(rest)
                self._buf, self._pos = chunk, need
                self._count(BLOCK)
                return rest + chunk[:need]
            rest += chunk  # no copy when rest is empty
        self._buf, self._pos = rest, 0
        if not rest:
            return None
        if len(rest) < BLOCK:
            raise TarFormatError(f"{self._what}: truncated archive: partial header at byte {self.offset}")
        self._pos = BLOCK
        self._count(BLOCK)
        return rest[:BLOCK]

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (n > 0) or TarFormatError."""
        self.offset += n
        if self.offset > self.max:
            raise self.over(self._what)
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail >= n:
            self._pos = pos + n
            return buf[pos : pos + n]
        parts = [buf[pos:]] if avail else []
        need = n - avail
        self._buf, self._pos = b"", 0
        while need:
            chunk = self._raw_read(need if need >= 65536 else READ_SIZE)
            if not chunk:
                raise TarFormatError(f"{self._what}: truncated archive: {need} bytes missing at byte {self.offset - need}")
            if len(chunk) > need:
                parts.append(chunk[:need])
                self._buf, self._pos = chunk, need
                need = 0
            else:
                parts.append(chunk)
                need -= len(chunk)
        return b"".join(parts)

    def read_some(self, n: int) -> memoryview:
        """Up to ``n`` bytes (n > 0; at least one), as a view of the buffer: no copy."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf, pos = self._raw_read(READ_SIZE), 0
            if not buf:
                raise TarFormatError(f"{self._what}: truncated archive: {n} bytes missing at byte {self.offset}")
            self._buf = buf
        k = min(n, len(buf) - pos)
        self._pos = pos + k
        self._count(k)
        return memoryview(buf)[pos : pos + k]

    def skip(self, n: int) -> None:
        if n <= 0:
            return
        self.offset += n
        if self.offset > self.max:
            raise self.over(self._what)
        avail = len(self._buf) - self._pos
        if avail >= n:
            self._pos += n
            return
        n -= avail
        self._buf, self._pos = b"", 0
        # whole chunks, read and dropped (one copy: a readinto into scratch space costs a second one
        # through the Python stream wrappers); the tail of the last one is the next buffer
        while n:
            chunk = self._raw_read(READ_SIZE)
            if not chunk:
                raise TarFormatError(f"{self._what}: truncated archive: {n} bytes missing at byte {self.offset - n}")
            if len(chunk) > n:
                self._buf, self._pos = chunk, n
                return
            n -= len(chunk)

    def drain(self) -> None:
        """Consume the stream to EOF (record padding), so digest-verifying wrappers see it all."""
        self._buf, self._pos = b"", 0
        while True:
            chunk = self._raw_read(READ_SIZE)
            if not chunk:
                return
            self._count(len(chunk))


class _FileReader(io.RawIOBase):
    """Content of one FILE entry; valid until the iteration moves on."""

    def __init__(self, src: _Source, size: int) -> None:
        self._src = src
        self._left = size
        self._dead = False

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if self._dead:
            raise ValueError("content reader used after iter_entries moved to the next entry")
        left = self._left
        if n is None or n < 0 or n > left:
            n = left
        if n == 0:
            return b""
        data = self._src.read(n)
        self._left = left - n
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def read_some(self, n: int) -> bytes | memoryview:
        """Up to ``n`` bytes of the content without copying them: fewer where the stream's buffer ends,
        empty at the end of the content. A view is valid until the next read."""
        if self._dead:
            raise ValueError("content reader used after iter_entries moved to the next entry")
        left = self._left
        n = min(n, left)
        if n <= 0:
            return b""
        data = self._src.read_some(n)
        self._left = left - len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        n = len(data)
        memoryview(b).cast("B")[:n] = data
        return n

    def _finish(self) -> None:
        if not self._dead:
            self._src.skip(self._left)
            self._left = 0
            self._dead = True


class _SparseReader(_FileReader):
    """Expands a sparse file: stored data segments at their offsets, zeros in the holes."""

    def __init__(self, src: _Source, stored: int, segments: list[tuple[int, int]], realsize: int) -> None:
        super().__init__(src, stored)
        self._segments = segments
        self._seg = 0
        self._pos = 0
        self._real = realsize

    def read_some(self, n: int) -> bytes:
        return self.read(n)  # holes are made, not read: no buffer to view

    def read(self, n: int | None = -1) -> bytes:
        if self._dead:
            raise ValueError("content reader used after iter_entries moved to the next entry")
        remaining = self._real - self._pos
        if n is None or n < 0 or n > remaining:
            n = remaining
        out: list[bytes] = []
        while n > 0:
            while self._seg < len(self._segments) and self._segments[self._seg][0] + self._segments[self._seg][1] <= self._pos:
                self._seg += 1
            if self._seg < len(self._segments):
                off, length = self._segments[self._seg]
            else:
                off, length = self._real, 0
            if self._pos < off:  # hole
                k = min(n, off - self._pos)
                out.append(bytes(k))
            else:
                k = min(n, off + length - self._pos)
                out.append(self._src.read(k))
                self._left -= k
            self._pos += k
            n -= k
        return b"".join(out)


# ------------------------------------------------------------------------------------------------
# header field decoding


def _str(field: bytes) -> str:
    i = field.find(b"\0")
    if i >= 0:
        field = field[:i]
    return field.decode("utf-8", "surrogateescape")


def _num(field: bytes) -> int:
    """Octal (NUL/space padded) or GNU base-256 (0x80 positive, 0xff negative)."""
    first = field[0]
    if not first & 0x80:
        # fast path: digits then NUL/space padding (``int`` skips leading blanks); anything odder
        # (a NUL in the middle, an empty field) takes the exact path below
        try:
            return int(field.rstrip(b"\0 "), 8)
        except ValueError:
            pass
    if first & 0x80:
        if first == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(field[1:], "big") | ((first & 0x7F) << (8 * (len(field) - 1)))
    i = field.find(b"\0")
    if i >= 0:
        field = field[:i]
    field = field.strip(b" ")
    if not field:
        return 0
    return int(field, 8)  # ValueError -> caller


class _Where:
    """``"<layer>: entry '<name>' at byte N"`` for error messages, formatted only when one is raised
    (most headers never need it)."""

    __slots__ = ("_name", "_offset", "_what")

    def __init__(self, what: str, name: str | bytes, offset: int) -> None:
        self._what, self._name, self._offset = what, name, offset

    def __str__(self) -> str:
        name = self._name if isinstance(self._name, str) else _str(self._name)
        return f"{self._what}: entry {name!r} at byte {self._offset}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _parse_pax(data: bytes, what: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] == 0:  # some writers pad with NULs
            break
        sp = data.find(b" ", pos, pos + 24)
        if sp < 0:
            raise TarFormatError(f"{what}: malformed PAX record at offset {pos}")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise TarFormatError(f"{what}: malformed PAX record length at offset {pos}") from None
        if length <= sp - pos + 2 or pos + length > end or data[pos + length - 1] != 0x0A:
            raise TarFormatError(f"{what}: malformed PAX record at offset {pos}")
        key, eq, val = data[sp + 1 : pos + length - 1].partition(b"=")
        if not eq or not key:
            raise TarFormatError(f"{what}: malformed PAX record at offset {pos}")
        out[key.decode("utf-8", "surrogateescape")] = val
        pos += length
    return out


def _pax_int(val: bytes, key: str, what: str) -> int:
    if not val.isdigit():
        raise TarFormatError(f"{what}: invalid PAX {key}={val[:40]!r}")
    return int(val)


def _pax_time_ns(val: bytes, what: str) -> int:
    """``[-]sec[.frac]`` to integer nanoseconds, exactly (never through a float)."""
    sec, _, frac = val.partition(b".")
    if sec.isdigit() and len(sec) <= 20 and (not frac or frac.isdigit()):  # the common spelling
        return int(sec) * 1_000_000_000 + (int(frac[:9].ljust(9, b"0")) if frac else 0)
    s = val.decode("ascii", "replace")
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    sec_s, _, frac_s = s.partition(".")
    if not sec_s.isdigit() or (frac_s and not frac_s.isdigit()) or len(sec_s) > 20:
        raise TarFormatError(f"{what}: invalid PAX mtime {val[:40]!r}")
    ns = int(sec_s) * 1_000_000_000 + int((frac_s + "000000000")[:9])
    return -ns if neg else ns


#: extension headers: PAX (per entry, global), GNU long name, GNU long link
_EXTENDED = frozenset((b"x", b"g", b"L", b"K"))

_TYPES = {
    b"0": EntryType.FILE,
    b"\0": EntryType.FILE,
    b"7": EntryType.FILE,
    b"1": EntryType.HARDLINK,
    b"2": EntryType.SYMLINK,
    b"3": EntryType.CHAR,
    b"4": EntryType.BLOCK,
    b"5": EntryType.DIR,
    b"6": EntryType.FIFO,
    b"D": EntryType.DIR,  # GNU dumpdir: a directory whose data lists its names
}


def _old_gnu_sparse(blk: bytes, src: _Source, what: str) -> tuple[list[tuple[int, int]], int]:
    segs: list[tuple[int, int]] = []

    def take(area: bytes, count: int) -> None:
        for i in range(count):
            off_f = area[i * 24 : i * 24 + 12]
            len_f = area[i * 24 + 12 : i * 24 + 24]
            if off_f == bytes(12):
                return
            segs.append((_num(off_f), _num(len_f)))

    take(blk[386:482], 4)
    extended = blk[482]
    realsize = _num(blk[483:495])
    while extended:
        ext = src.block()
        if ext is None:
            raise TarFormatError(f"{what}: truncated archive inside a GNU sparse map")
        take(ext[:504], 21)
        extended = ext[504]
        if len(segs) > src.lim.max_sparse_members:
            raise limit_error(what, "max_sparse_members", f"sparse map of more than {src.lim.max_sparse_members} segments")
    return segs, realsize


def _check_segments(segs: list[tuple[int, int]], realsize: int, stored: int, what: str) -> None:
    pos = 0
    total = 0
    for off, length in segs:
        if off < pos or length < 0 or off + length > realsize:
            raise TarFormatError(f"{what}: invalid sparse map")
        pos = off + length
        total += length
    if total != stored:
        raise TarFormatError(f"{what}: sparse map covers {total} bytes but {stored} are stored")


# ------------------------------------------------------------------------------------------------


def iter_entries(
    stream: BinaryIO,
    *,
    layer: str = "",
    limits: Limits | None = None,
    drain: bool = True,
    compressed_size: int | None = None,
    content: bool = True,
) -> Iterator[tuple[Entry, BinaryIO | None]]:
    """Yield ``(entry, content)`` for each member of an uncompressed tar stream.

    ``content`` is a reader for FILE entries (``None`` otherwise), valid only until the next
    iteration. With ``content=False`` (indexing: the union, inspect) no reader is made and every
    member's data is skipped over; the stream is still read to its end. After the end-of-archive
    marker the rest of ``stream`` is drained (``drain=True``) so a digest-verifying stream
    underneath sees every byte. Raises TarFormatError (malformed input), UnsafePathError (names
    escaping the root) and LimitExceededError, all naming ``layer``.
    ``limits=None`` means :func:`~layerkit.tarfs.limits.default_limits` (the environment's);
    ``compressed_size`` (the blob size of a compressed layer) enables the ratio limit.
    """
    lim = limits or default_limits()
    what = f"layer {layer}" if layer else "layer"
    src = _Source(stream, lim, lim.ratio_cap(compressed_size), what)
    globals_: dict[str, bytes] = {}
    count = 0
    max_entries, max_header = lim.max_entries, lim.max_header_bytes
    current: _FileReader | None = None
    # hot loop (one pass per member, tens of thousands per layer): locals, inlined fast paths
    block, skip, types, adler32 = src.block, src.skip, _TYPES, zlib.adler32
    FILE, DIR, SYMLINK, HARDLINK = EntryType.FILE, EntryType.DIR, EntryType.SYMLINK, EntryType.HARDLINK
    ewhat: Any  # "<layer>: entry <name> at byte <n>", made only where a message may need it

    while True:
        if current is not None:
            current._finish()
            current = None
        pax: dict[str, bytes] | None = None
        longname: bytes | None = None
        longlink: bytes | None = None
        while True:  # collect extension headers until a real member
            hdr_off = src.offset
            blk = block()
            if blk is None:
                if pax is not None or longname is not None or longlink is not None:
                    raise TarFormatError(f"{what}: truncated archive after an extended header")
                return
            if blk == _ZERO_BLOCK:
                if pax is not None or longname is not None or longlink is not None:
                    raise TarFormatError(f"{what}: end of archive right after an extended header")
                if drain:
                    src.drain()
                return
            # checksum: unsigned sum with the field as spaces; some old tars used signed bytes.
            # An ASCII block sums below Adler-32's modulus: the low half of adler32 is 1 + the sum.
            chk = blk[148:156]
            try:
                want = int(chk.rstrip(b"\0 "), 8) if chk[0] < 0x80 else _num(chk)
            except ValueError:
                try:
                    want = _num(chk)
                except ValueError:
                    ewhat = _Where(what, blk[0:100], hdr_off)
                    raise TarFormatError(f"{ewhat}: invalid header (bad checksum field); not a tar archive?") from None
            if blk.isascii():
                got = (adler32(blk) & 0xFFFF) - (adler32(chk) & 0xFFFF) + 256
            else:
                got = sum(blk) - sum(chk) + 256
            if want != got:
                signed = sum(b - 256 if b > 127 else b for b in blk) - sum(
                    b - 256 if b > 127 else b for b in chk
                ) + 256
                if want != signed:
                    ewhat = _Where(what, blk[0:100], hdr_off)
                    raise TarFormatError(f"{ewhat}: header checksum mismatch; corrupt or not a tar archive")
            tflag = blk[156:157]
            size_f = blk[124:136]
            try:
                size = int(size_f.rstrip(b"\0 "), 8) if size_f[0] < 0x80 else _num(size_f)
            except ValueError:
                try:
                    size = _num(size_f)
                except ValueError:
                    ewhat = _Where(what, blk[0:100], hdr_off)
                    raise TarFormatError(f"{ewhat}: invalid size field") from None
            if size < 0 or size > _MAX_SIZE:
                raise TarFormatError(f"{_Where(what, blk[0:100], hdr_off)}: invalid size {size}")
            if tflag == b"x" and pax is None and 0 < size <= max_header:
                # the common extension: one PAX record (layerkit, BuildKit and tarfile write the
                # mtime so), taken apart here; anything else goes through _parse_pax
                data = src.read(size + (-size % BLOCK))
                sp = data.find(b" ", 0, 24)
                if sp > 0 and data[size - 1] == 0x0A and data[:sp].isdigit() and int(data[:sp]) == size:
                    rkey, eq, rval = data[sp + 1 : size - 1].partition(b"=")
                    if eq and rkey:
                        pax = {rkey.decode("utf-8", "surrogateescape"): rval}
                        continue
                ewhat = _Where(what, blk[0:100], hdr_off)
                pax = _parse_pax(data[:size], ewhat)
                continue
            if tflag in _EXTENDED:
                ewhat = _Where(what, blk[0:100], hdr_off)
                if size > lim.max_header_bytes:
                    raise limit_error(ewhat, "max_header_bytes",
                                      f"extended header of {size} bytes exceeds the {lim.max_header_bytes}-byte limit")
                data = src.read(size) if size else b""
                skip(-size % BLOCK)
                if tflag == b"x":
                    if pax is not None:
                        raise TarFormatError(f"{ewhat}: two PAX headers for one entry")
                    pax = _parse_pax(data, ewhat)
                elif tflag == b"g":
                    for k, v in _parse_pax(data, ewhat).items():
                        if v:
                            globals_[k] = v
                        else:
                            globals_.pop(k, None)
                elif tflag == b"L":
                    if longname is not None:
                        raise TarFormatError(f"{ewhat}: two GNU long-name headers for one entry")
                    longname = data.split(b"\0", 1)[0]
                else:
                    if longlink is not None:
                        raise TarFormatError(f"{ewhat}: two GNU long-link headers for one entry")
                    longlink = data.split(b"\0", 1)[0]
                continue
            if tflag == b"V":  # GNU volume label: not a file
                skip(size + (-size % BLOCK))
                continue
            break

        count += 1
        if count > max_entries:
            raise limit_error(what, "max_entries", f"more than {max_entries} entries")

        magic = blk[257:263]
        ustar = magic == b"ustar\x00"
        posix_or_gnu = ustar or blk[257:265] == b"ustar  \x00"
        if longname is not None:
            name = longname.decode("utf-8", "surrogateescape")
        else:
            end = blk.find(0, 0, 100)
            name_b = blk[: end if end >= 0 else 100]
            if ustar and blk[345] != 0:
                end = blk.find(0, 345, 500)
                name_b = blk[345 : end if end >= 0 else 500] + b"/" + name_b
            name = name_b.decode("utf-8", "surrogateescape")
        try:
            try:  # _num's own fast path, inlined; any other spelling takes _num below
                mode = int(blk[100:108].rstrip(b"\0 "), 8) & 0o7777
                uid = int(blk[108:116].rstrip(b"\0 "), 8)
                gid = int(blk[116:124].rstrip(b"\0 "), 8)
                mtime_ns = int(blk[136:148].rstrip(b"\0 "), 8) * 1_000_000_000
            except ValueError:
                mode = _num(blk[100:108]) & 0o7777
                uid = _num(blk[108:116])
                gid = _num(blk[116:124])
                mtime_ns = _num(blk[136:148]) * 1_000_000_000
            # device numbers only mean something on device nodes (GNU tar leaves them NUL elsewhere)
            if posix_or_gnu and (tflag == b"3" or tflag == b"4"):
                devmajor = _num(blk[329:337])
                devminor = _num(blk[337:345])
            else:
                devmajor = devminor = 0
        except ValueError:
            raise TarFormatError(f"{what}: entry {name!r} at byte {hdr_off}: invalid numeric field") from None
        link: str | None = longlink.decode("utf-8", "surrogateescape") if longlink is not None else None
        xattrs: dict[str, bytes] = {}
        sparse: tuple[list[tuple[int, int]], int] | None = None
        stored = size

        merged = globals_
        if pax is not None:
            merged = {**globals_, **pax} if globals_ else pax
            if len(merged) == 1 and "mtime" in merged:
                # a lone mtime record, the usual extension (layerkit, BuildKit and tarfile write it
                # for sub-second times): the common spelling parsed here, anything else below
                sec, _, frac = merged["mtime"].partition(b".")
                if sec.isdigit() and len(sec) <= 20 and (not frac or frac.isdigit()):
                    mtime_ns = int(sec) * 1_000_000_000 + (int(frac[:9].ljust(9, b"0")) if frac else 0)
                    merged = globals_  # empty: nothing else to apply
        if merged:
            ewhat = _Where(what, name, hdr_off)
            for key, val in merged.items():
                if not val:
                    continue  # an empty value restores the header's own field
                if key == "mtime":
                    mtime_ns = _pax_time_ns(val, ewhat)
                elif key == "path":
                    name = val.decode("utf-8", "surrogateescape")
                elif key == "linkpath":
                    link = val.decode("utf-8", "surrogateescape")
                elif key == "size":
                    stored = size = _pax_int(val, key, ewhat)
                    if size > _MAX_SIZE:
                        raise TarFormatError(f"{ewhat}: invalid PAX size {size}")
                elif key == "uid":
                    uid = _pax_int(val, key, ewhat)
                elif key == "gid":
                    gid = _pax_int(val, key, ewhat)
                elif key.startswith("SCHILY.xattr."):
                    xattrs[key[13:]] = val
                elif key == "SCHILY.devmajor":
                    devmajor = _pax_int(val, key, ewhat)
                elif key == "SCHILY.devminor":
                    devminor = _pax_int(val, key, ewhat)
            if "GNU.sparse.major" in merged or "GNU.sparse.map" in merged or "GNU.sparse.size" in merged:
                sparse, name, used = _pax_sparse(merged, name, src, ewhat, lim)
                stored = size - used

        if tflag == b"S":
            ewhat = _Where(what, name, hdr_off)
            sparse = _old_gnu_sparse(blk, src, ewhat)
            etype: EntryType | None = FILE
        else:
            etype = types.get(tflag)
            if etype is None:
                ewhat = _Where(what, name, hdr_off)
                if tflag in (b"M", b"N"):
                    raise TarFormatError(f"{ewhat}: unsupported GNU multi-volume/old long-name entry (type {tflag!r})")
                raise TarFormatError(f"{ewhat}: unknown entry type {tflag!r}")
            if tflag == b"\0" and name.endswith("/"):
                etype = DIR

        try:
            path = clean_member(name)
            if etype is HARDLINK:
                if link is None:
                    link = _str(blk[157:257])
                if not link:
                    raise UnsafePathError(name, "hard link without a target")
                link = clean_member(link)
        except UnsafePathError as exc:
            raise UnsafePathError(exc.member, exc.reason, layer) from None

        if etype is FILE:
            pad = -size % BLOCK
            if sparse is not None:
                ewhat = _Where(what, name, hdr_off)
                segs, realsize = sparse
                _check_segments(segs, realsize, stored, ewhat)
                if src.offset + stored > src.max:
                    raise src.over(ewhat, stored)
                if realsize > lim.max_bytes:  # holes cost nothing to read but everything to write out
                    raise limit_error(ewhat, "max_bytes", f"sparse member expands to {realsize} bytes, "
                                      f"past the {lim.max_bytes}-byte uncompressed layer limit")
                current = _SparseReader(src, stored, segs, realsize)
                entry = Entry(path, etype, mode, uid, gid, realsize, mtime_ns, "", 0, 0, xattrs)
            else:
                if src.offset + size > src.max:
                    ewhat = _Where(what, name, hdr_off)
                    raise src.over(ewhat, size)
                entry = Entry(path, etype, mode, uid, gid, size, mtime_ns, "", 0, 0, xattrs)
                if not content:  # nothing to hand out: step over the data
                    yield entry, None
                    skip(size + pad)
                    continue
                current = _FileReader(src, size)
            yield entry, (current if content else None)  # type: ignore[misc]
            current._finish()
            current = None
            skip(pad)
            continue

        if etype is SYMLINK:
            linkname = link if link is not None else _str(blk[157:257])
        elif etype is HARDLINK:
            linkname = link  # type: ignore[assignment]  # set (and cleaned) above
        else:
            linkname = ""
        if not (etype is EntryType.CHAR or etype is EntryType.BLOCK):
            devmajor = devminor = 0
        entry = Entry(path, etype, mode, uid, gid, 0, mtime_ns, linkname, devmajor, devminor, xattrs)  # type: ignore[arg-type]
        if size:  # data on a non-file (dumpdir lists, hard links with data): not content
            if src.offset + size > src.max:
                ewhat = _Where(what, name, hdr_off)
                raise src.over(ewhat, size)
            skip(size + (-size % BLOCK))
        yield entry, None


def _pax_sparse(
    merged: dict[str, bytes], name: str, src: _Source, what: str, lim: Limits
) -> tuple[tuple[list[tuple[int, int]], int], str, int]:
    """GNU PAX sparse 0.1 (map in a record) and 1.0 (map at the start of the data)."""
    major = merged.get("GNU.sparse.major", b"")
    minor = merged.get("GNU.sparse.minor", b"")
    realsize_b = merged.get("GNU.sparse.realsize") or merged.get("GNU.sparse.size")
    if realsize_b is None:
        raise TarFormatError(f"{what}: PAX sparse entry without a real size")
    realsize = _pax_int(realsize_b, "GNU.sparse.realsize", what)
    if "GNU.sparse.name" in merged:
        name = merged["GNU.sparse.name"].decode("utf-8", "surrogateescape")
    segs: list[tuple[int, int]] = []
    used = 0
    if major == b"1" and minor == b"0":
        # map: decimal numbers, one per line, padded to a block; counted out of the stored data
        start = src.offset
        buf = b""
        numbers: list[int] = []
        want: int | None = None
        while want is None or len(numbers) < 1 + 2 * want:
            if len(buf) > lim.max_header_bytes:
                raise limit_error(what, "max_header_bytes", f"sparse map longer than {lim.max_header_bytes} bytes")
            nl = buf.find(b"\n")
            if nl < 0:
                buf += src.read(BLOCK)
                continue
            tok, buf = buf[:nl], buf[nl + 1 :]
            numbers.append(_pax_int(tok, "sparse map", what))
            if want is None:
                want = numbers[0]
                if want > lim.max_sparse_members:
                    raise limit_error(what, "max_sparse_members",
                                      f"sparse map of {want} segments, more than {lim.max_sparse_members}")
        used = src.offset - start  # whole blocks, part of the stored size
        it = iter(numbers[1:])
        segs = list(zip(it, it))
    elif "GNU.sparse.map" in merged:
        vals = merged["GNU.sparse.map"].split(b",")
        if len(vals) % 2:
            raise TarFormatError(f"{what}: odd PAX sparse map")
        if len(vals) > 2 * lim.max_sparse_members:
            raise limit_error(what, "max_sparse_members",
                              f"sparse map of {len(vals) // 2} segments, more than {lim.max_sparse_members}")
        nums = [_pax_int(v, "GNU.sparse.map", what) for v in vals if v]
        it = iter(nums)
        segs = list(zip(it, it))
    else:
        raise TarFormatError(f"{what}: unsupported GNU PAX sparse format 0.0; repack with --sparse-version=1.0")
    return (segs, realsize), name, used


def iter_layer(
    blob: BinaryIO,
    *,
    layer: str = "",
    limits: Limits | None = None,
    compressed_size: int | None = None,
) -> Iterator[tuple[Entry, BinaryIO | None]]:
    """Like :func:`iter_entries` on a layer blob in any codec (gzip, zstd, plain), sniffed by magic.

    The ratio limit applies when ``compressed_size`` (e.g. the descriptor size) is given.
    """
    lim = limits or default_limits()
    what = f"layer {layer}" if layer else "layer"
    dec = open_decompressed(blob, max_bytes=lim.max_bytes, max_ratio=lim.max_ratio, ratio_after=lim.ratio_after,
                            compressed_size=compressed_size, what=what)
    try:
        yield from iter_entries(dec, layer=layer, limits=lim, compressed_size=compressed_size)
    finally:
        dec.close()
