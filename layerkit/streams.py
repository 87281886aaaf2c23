"""``Reader``: the small base every streaming wrapper in layerkit shares.

A subclass implements ``read(n)`` (and ``close`` when it owns something); ``readinto``, iteration in
1 MiB chunks and the context-manager protocol come from here, so each wrapper (verifying, counting,
bounded, resuming) is only its own logic.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Self

__all__ = ["CHUNK", "Reader"]

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
