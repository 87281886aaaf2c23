"""The merged filesystem of a layer stack, in userspace: list, stat, read, export and unpack it, safely.

- :mod:`.tree` indexes tar headers into the merged view (:class:`Union`), with per-layer attribution.
- :mod:`.safefs` performs every filesystem write relative to an open root directory fd.
- :mod:`.unpack` writes the merged rootfs (top-down, each survivor once) or applies one layer.
- :mod:`.readahead` hands out a stack's layer streams for that pass, the big ones decompressed ahead.
- :mod:`.export` streams the merged rootfs as one plain tar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .tree import Fate, LayerFate, Node, Union

__all__ = ["Fate", "LayerFate", "Node", "Union"]

#: loaded on first use: ``layerkit unpack`` streams layers without the index
__getattr__ = lazy_attributes(__name__, dict.fromkeys(__all__, ".tree"))
