"""``Reader``: the small base every streaming wrapper in layerkit shares; ``ReadAhead`` and the ``Channel`` it
hands chunks over with.

A subclass implements ``read(n)`` (and ``close`` when it owns something); ``readinto``, iteration in
1 MiB chunks and the context-manager protocol come from here, so each wrapper (verifying, counting,
bounded, resuming) is only its own logic.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO, Generic, Self, TypeVar

__all__ = ["CHUNK", "Channel", "ReadAhead", "Reader"]

T = TypeVar("T")

#: Read/write chunk size for every streaming copy; 1 MiB keeps syscalls and Python overhead low.
CHUNK = 1 << 20


class Reader(abc.ABC):
    @abc.abstractmethod
    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left when ``n < 0``); ``b""`` at EOF."""

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Release what the reader owns; the default owns nothing."""

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Channel(Generic[T]):
    """A bounded hand-off from one thread to another: a deque and two semaphores. (``queue.Queue``
    does the same, but importing it costs every command that reads or hashes in a thread ~0.5 ms.)"""

    def __init__(self, depth: int) -> None:
        import threading

        self._items: deque[T] = deque()
        self._ready = threading.Semaphore(0)  # items waiting
        self._room = threading.Semaphore(depth)  # free places

    def put(self, item: T) -> None:
        """Hand ``item`` over; waits while ``depth`` items are waiting."""
        self._room.acquire()
        self._items.append(item)
        self._ready.release()

    def get(self) -> T:
        """The oldest item; waits for one."""
        self._ready.acquire()
        item = self._items.popleft()
        self._room.release()
        return item

    def make_room(self) -> None:
        """Let one more ``put`` through: how a consumer that stops wakes a producer waiting for room."""
        self._room.release()


class ReadAhead(Reader):
    """Reads ``stream`` in a thread, up to ``depth`` chunks ahead: decompressing a layer and checking
    its digests is C code that releases the GIL, so it overlaps with the reader's own work (writing
    files) instead of alternating with it. Bytes and errors (a digest mismatch at EOF) reach the
    reader in stream order. ``close`` stops the thread; the caller still closes ``stream``."""

    def __init__(self, stream: BinaryIO | Reader, depth: int = 8) -> None:
        import threading  # only readers that read ahead pay for the thread machinery

        self._chunks: Channel[bytes | BaseException] = Channel(depth)
        self._stop = False
        self._buf = b""
        self._pos = 0
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(stream,), name="layerkit-read-ahead", daemon=True)
        self._thread.start()

    def _run(self, stream: BinaryIO | Reader) -> None:
        try:
            while not self._stop:
                chunk = stream.read(CHUNK)
                self._chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # noqa: BLE001 - raised in the reading thread, re-raised in read
            self._chunks.put(exc)

    def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._buf):
            if self._done:
                return b""
            item = self._chunks.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
                return b""
            self._buf, self._pos = item, 0
        pos, buf = self._pos, self._buf
        if n < 0 or n >= len(buf) - pos:  # the rest of the chunk: no copy when it is all of it
            self._buf, self._pos = b"", 0
            return buf[pos:] if pos else buf
        self._pos = pos + n
        return buf[pos : pos + n]

    def close(self) -> None:
        self._stop = True
        self._chunks.make_room()  # wakes the thread if it waits for room; it sees _stop and ends
        self._thread.join()
