"""Content digests: the ``Digest`` value type and streaming hash/verify helpers.

*digest* always means the hash of the stored (possibly compressed) blob; *diff_id* the hash of the
uncompressed tar. Both are ``Digest`` values.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import IO, BinaryIO

from .errors import DigestMismatchError, InvalidDigestError
from .streams import CHUNK, Channel, Reader

__all__ = ["CHUNK", "Digest", "Hasher", "ThreadedVerifyingReader", "VerifyingReader", "sha256_bytes", "sha256_file"]


_HEX_LEN = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")


class Digest(str):
    """An OCI digest string ``algorithm:hex``, validated on construction."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:  # noqa: PYI034 - returns the argument itself when already a Digest
        if isinstance(value, Digest):
            return value
        m = _DIGEST_RE.match(value or "")
        if not m:
            raise InvalidDigestError(f"invalid digest {value!r}: expected sha256:<64 hex digits>")
        algo, hexpart = m.groups()
        want = _HEX_LEN.get(algo)
        if want is None:
            raise InvalidDigestError(f"invalid digest {value!r}: unsupported algorithm {algo!r}")
        if len(hexpart) != want or not re.fullmatch(r"[0-9a-f]+", hexpart):
            raise InvalidDigestError(f"invalid digest {value!r}: expected {want} lower-case hex digits")
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return self.split(":", 1)[0]

    @property
    def hex(self) -> str:
        return self.split(":", 1)[1]

    @property
    def short(self) -> str:
        return self.hex[:12]

    @classmethod
    def from_hex(cls, hexpart: str, algorithm: str = "sha256") -> Digest:
        return cls(f"{algorithm}:{hexpart}")

    def new_hash(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


def sha256_bytes(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def sha256_file(path: str, chunk: int = CHUNK) -> tuple[Digest, int]:
    """Digest and size of a file, read once: whole when smaller than ``chunk`` (no chunk-sized buffer
    to allocate and zero for each of 20,000 small context files), else in ``chunk``-sized reads."""
    with open(path, "rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size < chunk:
            data = f.readall()  # sized from fstat; still right if the file grew since
            return Digest("sha256:" + hashlib.sha256(data).hexdigest()), len(data)
        h = hashlib.sha256()
        size = 0
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return Digest("sha256:" + h.hexdigest()), size


class Hasher:
    """A write-through sink that hashes and counts what passes, optionally forwarding it."""

    def __init__(self, sink: IO[bytes] | None = None, algorithm: str = "sha256") -> None:
        self._h = hashlib.new(algorithm)
        self._algorithm = algorithm
        self._sink = sink
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._h.update(data)
        n = len(data)
        self.size += n
        if self._sink is not None:
            self._sink.write(data)
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if self._sink is not None:
            self._sink.flush()

    def digest(self) -> Digest:
        return Digest(f"{self._algorithm}:{self._h.hexdigest()}")


class VerifyingReader(Reader):
    """Wraps a stream of blob bytes; raises ``DigestMismatchError`` at EOF when the bytes (or their
    count) differ from what the descriptor promised, so nothing is trusted before it is checked."""

    def __init__(
        self,
        raw: BinaryIO | IO[bytes],
        expected: Digest | str,
        size: int | None = None,
        *,
        what: str = "blob",
        source: str = "",
    ) -> None:
        self._raw = raw
        self.expected = Digest(expected)
        self._h = self.expected.new_hash()
        self._size = size
        self._read = 0
        self._what = what
        self._source = source
        self._done = False

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        if self._size is not None and n is not None and n >= 0:
            # never read beyond the promised size: a lying server can't make us buffer more
            n = min(n, self._size - self._read + 1)
        data = self._raw.read(n)
        if data:
            self._consume(data)
            self._read += len(data)
            if self._size is not None and self._read > self._size:
                self._settle()
                self._fail()
        if not data or (n is None or n < 0):
            self._settle()
            self._finish()
        return data

    def _consume(self, data: bytes) -> None:
        self._h.update(data)

    def _settle(self) -> None:
        """Wait until every byte read so far is in the hash (a threaded hasher may lag)."""

    def _fail(self) -> None:
        self._done = True
        actual = f"{self._h.name}:{self._h.hexdigest()}"
        if self._size is not None and self._read != self._size:
            actual += f" ({self._read} bytes, expected {self._size})"
        raise DigestMismatchError(self.expected, actual, self._what, self._source)

    def _finish(self) -> None:
        if self._done:
            return
        actual = f"{self._h.name}:{self._h.hexdigest()}"
        if actual != self.expected or (self._size is not None and self._read != self._size):
            self._fail()
        self._done = True

    def close(self) -> None:
        close = getattr(self._raw, "close", None)
        if close:
            close()


class ThreadedVerifyingReader(VerifyingReader):
    """A :class:`VerifyingReader` that hashes in a worker thread: hashlib releases the GIL on large
    buffers, so a Python consumer (a tar parser) and the hash run on two cores. Same contract: the
    bytes are handed over as read and the digest (and size) is checked before EOF is returned;
    at most ``depth`` chunks wait for the hasher. ``close`` stops the thread."""

    def __init__(self, raw: BinaryIO | IO[bytes], expected: Digest | str, size: int | None = None, *,
                 what: str = "blob", source: str = "", depth: int = 2) -> None:
        import threading

        super().__init__(raw, expected, size, what=what, source=source)
        self._q: Channel[bytes | None] = Channel(depth)
        self._worker = threading.Thread(target=self._hash, name="layerkit-hash", daemon=True)
        self._worker.start()

    def _hash(self) -> None:
        update, get = self._h.update, self._q.get
        while (chunk := get()) is not None:
            update(chunk)

    def _consume(self, data: bytes) -> None:
        self._q.put(data)

    def _settle(self) -> None:
        if self._worker.is_alive():
            self._q.put(None)
            self._worker.join()

    def close(self) -> None:
        self._settle()
        super().close()

