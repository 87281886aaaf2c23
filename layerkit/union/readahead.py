"""A layer stack's tar streams for a newest-first pass, each big layer decompressed in a thread before
its turn comes.

Writing a merged tree reads the newest layer first and the base last, and the base is usually the
one big layer. :class:`LayerStreams` starts decompressing (and hashing) the first big layer as soon as
it is made, and keeps the next big layer below the one being read going. It is cheap to import, so a
caller can make it before it loads the writer: ``layerkit unpack`` does, and the base layer inflates on
the other core while the unpacker's modules load.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..streams import ReadAhead
from .layers import compressed_size, is_image

__all__ = ["READ_AHEAD_FROM", "LayerStreams"]

#: compressed layers from this size on are read ahead in a thread (below it, starting one costs more)
READ_AHEAD_FROM = 1 << 20


class LayerStreams:
    """The layers of ``source`` (an Image or a sequence of layers); ``open(i)`` hands out layer ``i``'s
    tar. Whoever makes it must ``close`` it (``unpack`` does)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.layers: list[Any] = list(source.layers if is_image(source) else source)
        self._big = [(s := compressed_size(layer)) is not None and s >= READ_AHEAD_FROM for layer in self.layers]
        self._ahead: dict[int, tuple[Any, ReadAhead]] = {}  # layer -> (its tar, the reader reading it ahead)
        # a layer that cannot be opened now fails again when its turn comes, where its errors are reported
        with contextlib.suppress(Exception):
            self._read_ahead_below(len(self.layers))

    def open(self, i: int) -> tuple[Any, Any]:
        """Layer ``i``'s tar as (the stream to close, the stream to read); the next big layer below it
        starts reading ahead."""
        raw, stream = self._ahead.pop(i, (None, None))
        if raw is None:
            raw = self.layers[i].open_tar()
            stream = ReadAhead(raw) if self._big[i] else raw
        self._read_ahead_below(i)
        return raw, stream

    def _read_ahead_below(self, i: int) -> None:
        below = next((j for j in range(i - 1, -1, -1) if self._big[j]), None)
        if below is not None and below not in self._ahead:
            raw = self.layers[below].open_tar()
            self._ahead[below] = (raw, ReadAhead(raw))

    def close(self) -> None:
        """Stop the threads still reading ahead and close their layers."""
        while self._ahead:
            _, (raw, ahead) = self._ahead.popitem()
            ahead.close()
            raw.close()
