"""Pure tar logic for OCI layers: entries, member paths, whiteouts, codecs, reader, writer, trees.

No store and no network here; the unioner, builder and inspector stand on this package.
"""

from __future__ import annotations

from .compression import DEFAULT_LEVEL, open_compressor, open_decompressed
from .entry import Entry, EntryType
from .paths import clean_member, join_link
from .reader import DEFAULT_LIMITS, Limits, iter_entries, iter_layer
from .tree import entry_from_stat, read_xattrs, walk_tree, write_tree
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
from .writer import LayerResult, LayerWriter, layer_order_key, sorted_entries

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_LIMITS",
    "LayerResult",
    "LayerWriter",
    "Limits",
    "entry_from_stat",
    "iter_entries",
    "iter_layer",
    "layer_order_key",
    "open_compressor",
    "open_decompressed",
    "read_xattrs",
    "sorted_entries",
    "walk_tree",
    "write_tree",
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
