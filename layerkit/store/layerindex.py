"""Member lists of layers, kept in the store's cache so that a union over them needs no second read.

A union needs every header of every layer (anything can be hidden or replaced anywhere), so building
one decompresses each layer to its end. A build plans every ``COPY`` on the union of its stage, so
without this cache each rebuild decompressed the whole base image again just to plan one small
layer. A list is keyed by what determines it: the blob digest, the diff ID the image claims for it and
the reading limits. It is saved only after a complete read (the digest and the diff ID are verified at
EOF), atomically, with a sha256 of its own body: a damaged or foreign file is a miss, never a wrong tree.
One JSON file per list: ``<cache>/layers/<blob hex>-<key>.json``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..tarfs.entry import Entry, EntryType
from ..tarfs.limits import Limits

__all__ = ["LayerIndexCache"]

_VERSION = "layerkit-layer-index-v1"


class LayerIndexCache:
    """``load`` / ``save`` the ordered members of a layer read with given limits."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    def _file(self, digest: str, diff_id: str, limits: Limits) -> Path:
        key = hashlib.sha256(f"{_VERSION}\n{digest}\n{diff_id}\n{limits!r}".encode()).hexdigest()[:32]
        return self.dir / f"{digest.partition(':')[2]}-{key}.json"

    def load(self, digest: str, diff_id: str, limits: Limits) -> list[Entry] | None:
        """The members as ``iter_entries`` gave them, in order, or None (not cached, or damaged)."""
        try:
            raw = self._file(digest, diff_id, limits).read_bytes()
        except OSError:
            return None
        check, _, body = raw.partition(b"\n")
        if check.decode("ascii", "replace") != hashlib.sha256(body).hexdigest():
            return None
        try:
            return [_entry(row) for row in json.loads(body)]
        except (ValueError, TypeError, KeyError, IndexError):
            return None

    def save(self, digest: str, diff_id: str, limits: Limits, entries: Sequence[Entry]) -> None:
        """Write the list (best effort: a cache that cannot be written is only slower)."""
        body = json.dumps([_row(e) for e in entries], separators=(",", ":")).encode()
        final = self._file(digest, diff_id, limits)
        tmp = final.with_name(f".{final.name}.{os.urandom(6).hex()}.tmp")  # writers of one list never share it
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
            os.replace(tmp, final)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def prune(self, keep: Callable[[str], bool]) -> int:
        """Remove the lists of blobs for which ``keep(hex)`` is false; returns how many went."""
        removed = 0
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return 0
        for name in names:
            if not keep(name.partition("-")[0].lstrip(".")):
                (self.dir / name).unlink(missing_ok=True)
                removed += 1
        return removed


def _row(e: Entry) -> list[object]:
    row: list[object] = [e.path, e.type.value, e.mode, e.uid, e.gid, e.size, e.mtime_ns, e.linkname]
    if e.devmajor or e.devminor or e.xattrs:
        xattrs = {k: base64.b64encode(v).decode("ascii") for k, v in e.xattrs.items()}
        row += [e.devmajor, e.devminor, xattrs]
    return row


def _entry(row: list[object]) -> Entry:
    path, kind, mode, uid, gid, size, mtime_ns, linkname, *rest = row
    entry = Entry(path, EntryType(kind), mode, uid, gid, size, mtime_ns, linkname)  # type: ignore[arg-type]
    if rest:
        entry.devmajor, entry.devminor, xattrs = rest  # type: ignore[assignment]
        entry.xattrs = {k: base64.b64decode(v) for k, v in xattrs.items()}  # type: ignore[attr-defined]
    return entry
