"""What the unioner asks of a layer stack: a label for messages, the blob size, the directories members imply.

Kept apart from :mod:`.tree` so the streaming unpack, which needs only these, does not load the index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..tarfs.entry import Entry

__all__ = ["compressed_size", "implicit_dir", "is_image", "layer_label"]


def implicit_dir(path: str) -> Entry:
    """What a directory no member spells out shows: 0755 root:root, mtime 0 (as overlay2 does)."""
    # imported here: the read-ahead loads this module, and starts the base layer, before the tar reader
    from ..tarfs.entry import Entry, EntryType

    return Entry(path, EntryType.DIR, 0o755, 0, 0, 0, 0)


def layer_label(layer: Any, index: int) -> str:
    """``"3 (sha256:abcd…)"`` for messages; falls back to the index for test doubles."""
    ident = getattr(layer, "digest", None) or getattr(layer, "id", None)
    if ident:
        short = getattr(ident, "short", None)
        return f"{index} ({short or ident})"
    return str(index)


def compressed_size(layer: Any) -> int | None:
    """The blob size of ``layer`` when it has one (``Layer.size``), for the compression-ratio limit."""
    size = getattr(layer, "size", None)
    return size if isinstance(size, int) else None


def is_image(obj: Any) -> bool:
    return hasattr(obj, "layers") and hasattr(obj, "manifest")
