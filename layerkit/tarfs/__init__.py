"""Pure tar logic for OCI layers: entries, member paths, whiteouts, codecs, reader, writer, trees.

No store and no network here; the unioner, builder and inspector stand on this package.
"""

from __future__ import annotations

from .entry import Entry, EntryType
from .paths import clean_member, join_link
from .whiteout import (
    OPAQUE_WHITEOUT,
    WHITEOUT_META_PREFIX,
    WHITEOUT_PREFIX,
    is_opaque,
    is_whiteout,
    opaque_path,
    whiteout_path,
    whiteout_target,
)

__all__ = [
    "Entry",
    "EntryType",
    "clean_member",
    "join_link",
    "OPAQUE_WHITEOUT",
    "WHITEOUT_META_PREFIX",
    "WHITEOUT_PREFIX",
    "is_opaque",
    "is_whiteout",
    "opaque_path",
    "whiteout_path",
    "whiteout_target",
]
