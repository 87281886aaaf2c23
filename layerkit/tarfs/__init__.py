"""Pure tar logic for OCI layers: entries, member paths, whiteouts, codecs, reader, writer, trees.

No store and no network here; the unioner, builder and inspector stand on this package.
Every module but the whiteout names is imported on first use of its names: the codec-backed ones
(compression, reader, writer, tree) pull in zstandard, isal and a thread pool, and the data classes
cost start-up time, which a cached rebuild that only walks its context never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes
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

_LAZY = {
    "Entry": ".entry",
    "EntryType": ".entry",
    "DEFAULT_LIMITS": ".limits",
    "Limits": ".limits",
    "clean_member": ".paths",
    "join_link": ".paths",
    "DEFAULT_LEVEL": ".compression",
    "open_compressor": ".compression",
    "open_decompressed": ".compression",
    "iter_entries": ".reader",
    "iter_layer": ".reader",
    "entry_from_stat": ".tree",
    "read_xattrs": ".tree",
    "walk_tree": ".tree",
    "write_tree": ".tree",
    "LayerResult": ".writer",
    "LayerWriter": ".writer",
    "layer_order_key": ".writer",
    "sorted_entries": ".writer",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .compression import DEFAULT_LEVEL, open_compressor, open_decompressed
    from .entry import Entry, EntryType
    from .limits import DEFAULT_LIMITS, Limits
    from .paths import clean_member, join_link
    from .reader import iter_entries, iter_layer
    from .tree import entry_from_stat, read_xattrs, walk_tree, write_tree
    from .writer import LayerResult, LayerWriter, layer_order_key, sorted_entries

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_LIMITS",
    "OPAQUE_WHITEOUT",
    "WHITEOUT_META_PREFIX",
    "WHITEOUT_PREFIX",
    "Entry",
    "EntryType",
    "LayerResult",
    "LayerWriter",
    "Limits",
    "clean_member",
    "entry_from_stat",
    "is_opaque",
    "is_whiteout",
    "iter_entries",
    "iter_layer",
    "join_link",
    "layer_order_key",
    "opaque_path",
    "open_compressor",
    "open_decompressed",
    "read_xattrs",
    "sorted_entries",
    "walk_tree",
    "whiteout_path",
    "whiteout_target",
    "write_tree",
]
