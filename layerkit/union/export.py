"""Flatten an image: its merged rootfs as one plain tar (what ``docker export`` gives, minus runtime files).

Written top-down from the :class:`~layerkit.union.tree.Union` index, streamed: every member once,
nothing hidden, no whiteouts, no whole layer in memory. Order (deterministic for a given image):

1. directories, symlinks, devices and fifos, in the index's sorted depth-first walk (parents first);
2. file contents, layer by layer from the newest, each layer streamed once in its own member order
   (only layers providing a surviving file are read);
3. hard links last, so their targets precede them; a link whose original path is hidden carries
   the content itself at the first link path, the others link to it.

The tar is PAX with numeric owners and nanosecond mtimes, written by the tarfs ``LayerWriter``
(no compression; the caller may compress the stream).
"""

from __future__ import annotations

import dataclasses
from typing import Any, BinaryIO

from ..mediatypes import Compression
from ..tarfs.entry import Entry, EntryType
from ..tarfs.reader import Limits, iter_entries
from ..tarfs.writer import LayerResult, LayerWriter
from .layers import compressed_size
from .tree import Node, Union
from .unpack import Progress

__all__ = ["export"]


def export(
    image: Any,
    out: BinaryIO,
    *,
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> LayerResult:
    """Write the merged rootfs of ``image`` (Image, layer list or :class:`Union`) as a tar to ``out``.

    Returns the writer's result (``diff_id`` is the sha256 of the tar written, ``uncompressed_size``
    its length). ``out`` needs only ``write``; it is not closed.
    """
    if isinstance(image, Union):
        union = image
    else:
        index_cb = (lambda done, total: progress("index", done, total)) if progress else None
        union = Union(image, limits=limits, progress=index_cb)

    plain: list[Entry] = []
    plan: dict[int, dict[int, Entry]] = {}  # layer -> seq -> entry to write (path may be a link's)
    links: list[Entry] = []
    first_link: dict[int, str] = {}
    total = 0
    for node in union.walk():
        c = node.content
        if c is None:
            if not (node.path == "." and node.implicit):
                plain.append(node.entry)
        elif node.entry.type is EntryType.FILE:
            plan.setdefault(node.layer, {})[node.seq] = node.entry
            total += node.entry.size
        else:
            links.append(_link_entry(union, node, c, first_link, plan))
            if first_link.get(id(c)) == node.path:
                total += c.entry.size

    writer = LayerWriter(out, Compression.NONE, threads=1)
    try:
        for entry in plain:
            writer.add(entry)
        done = 0
        for layer in sorted(plan, reverse=True):
            wanted = plan[layer]
            stream = union.layers[layer].open_tar()
            try:
                entries = iter_entries(stream, layer=union.label(layer), limits=union.limits,
                                       compressed_size=compressed_size(union.layers[layer]))
                for seq, (_e, content) in enumerate(entries):
                    job = wanted.get(seq)
                    if job is not None:
                        writer.add(job, content)
                        done += job.size
                        if progress is not None:
                            progress("write", done, total)
            finally:
                stream.close()
        for entry in links:
            if entry.type is EntryType.HARDLINK:
                writer.add(entry)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def _link_entry(union: Union, node: Node, c: Node, first_link: dict[int, str], plan: dict[int, dict[int, Entry]]) -> Entry:
    """The entry a visible hard link becomes: a link to the visible original or to the first link
    path, or — for that first path when the original is hidden — the file itself (planned)."""
    if union.shows(c):
        return dataclasses.replace(node.entry, linkname=c.path)
    first = first_link.get(id(c))
    if first is not None:
        return dataclasses.replace(node.entry, linkname=first)
    first_link[id(c)] = node.path
    as_file = dataclasses.replace(c.entry, path=node.path)
    plan.setdefault(c.layer, {})[c.seq] = as_file
    return as_file
