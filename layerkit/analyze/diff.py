"""``layerkit diff``: what differs between two images (any transports) or two layer files.

Each side is indexed once by the union (headers only). Paths are then compared on type, size, mode,
owner, link target and device numbers (mtimes alone are no change), and on content — but content is
hashed only for regular files of equal size whose bytes come from *different* layer members: when
both sides show the member ``seq`` of layers with the same diff ID, the bytes are the same by
construction, so shared layers (and a shared prefix, whose merged content is shared) cost no
hashing. The few members that need hashing, and the package databases that differ, are read in one
extra pass over only the layers that hold them.

Document (``to_json``): ``a``/``b`` (``reference``, ``digest``), ``identical``, ``sharedLayers``
(``{"digest", "a", "b"}`` layer indexes), ``files`` (``added``/``removed``: every path, directories
included, as ``{"path", "type", "size"}``; ``changed``: ``{"path", "type", "size", "changes",
"before", "after"}`` with ``changes`` among ``type``, ``content``, ``size``, ``mode``, ``owner``,
``linkTarget``, ``device``), ``sizes`` (directories whose content bytes differ:
``{"path", "before", "after", "delta"}``, largest change first), ``config`` (per differing key:
``{"before", "after"}``, and for ``Env``/``Labels`` ``{"added", "removed", "changed"}``), ``history``
(``{"commonPrefix", "removed", "added"}`` of ``created_by`` steps) and ``packages``
(``apk``/``dpkg``/``python`` → ``{"added", "removed", "changed"}`` of ``{"name", "version"}``,
``changed`` also has ``previousVersion``). Sections not asked for (``types``) are absent.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..digest import CHUNK
from ..image import Image
from ..mediatypes import Compression, detect_compression
from ..streams import Reader
from ..tarfs.compression import open_decompressed
from ..tarfs.entry import Entry, EntryType
from ..tarfs.limits import Limits
from ..tarfs.reader import iter_entries
from ..union import Union
from ..union.layers import compressed_size
from ..union.tree import Node
from . import packages as pk
from .sizes import ProgressHook, metered_union

__all__ = ["TYPES", "DiffResult", "Side", "diff_sides", "image_side", "is_layer_file", "layer_file_side"]

TYPES = ("file", "size", "config", "history", "packages")

_IMAGE_ARCHIVE_MARKERS = {"manifest.json", "oci-layout", "index.json"}


def is_layer_file(path: str) -> bool:
    """True when ``path`` is an existing file holding one layer (a tar, tar.gz or tar.zst) rather than
    an image archive (a tar with ``manifest.json``/``oci-layout`` at its root)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(512)
    if detect_compression(head[:4]) is not Compression.NONE:
        return True  # image archives are never compressed as a whole (layerkit refuses to seek those)
    if len(head) < 512 or head[257:262] != b"ustar":
        return False
    try:
        with tarfile.open(path, "r:") as tar:  # seeks past data: a header walk
            names = {m.name.strip("./").split("/")[0] for m in tar}
    except tarfile.TarError:
        return False
    return not (names & _IMAGE_ARCHIVE_MARKERS)


class _Hashing(Reader):
    """Reader that hashes what passes (the identity of a layer file, computed on its single read)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.sha256.update(data)
        return data

    def close(self) -> None:
        self._raw.close()


class LayerFile:
    """A layer blob on disk as the union sees it; ``digest`` (of the uncompressed tar) is known after
    the first complete read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.digest = ""
        self.size = os.path.getsize(path)  # the compression-ratio limit's denominator

    def open_tar(self) -> BinaryIO:
        raw = open(self.path, "rb")  # noqa: SIM115 - the returned stream owns it and closes it
        tar = _Hashing(open_decompressed(raw, what=self.path))
        layer = self

        class _Closing:
            def read(self, n: int = -1) -> bytes:
                return tar.read(n)

            def readinto(self, b: Any) -> int:
                return tar.readinto(b)

            def close(self) -> None:
                if not layer.digest:
                    layer.digest = "sha256:" + tar.sha256.hexdigest()
                tar.close()
                raw.close()

        return _Closing()  # type: ignore[return-value]


@dataclass
class Side:
    """One side of a diff: its union, the layer objects (to read members again) and their identities."""

    reference: str
    union: Union
    layers: list[Any]
    layer_ids: list[str]
    image: Image | None = None

    @property
    def digest(self) -> str:
        if self.image is not None:
            return str(self.image.digest)
        return self.layer_ids[0] if self.layer_ids else ""


def image_side(image: Image, reference: str = "", progress: ProgressHook | None = None,
               limits: Limits | None = None) -> Side:
    union, metered = metered_union(image, progress, limits)
    return Side(reference or image.reference, union, list(metered), [str(x.diff_id) for x in image.layers], image)


def layer_file_side(path: str, limits: Limits | None = None) -> Side:
    layer = LayerFile(path)
    union = Union([layer], limits=limits)
    return Side(path, union, [layer], [layer.digest])


# ------------------------------------------------------------------------------------------------


def _view(side: Side) -> dict[str, Node | str]:
    """Visible path → node; a single layer's whiteout markers appear as ``"whiteout"``."""
    view: dict[str, Node | str] = {n.path: n for n in side.union.walk() if n.path != "."}
    if side.image is None:
        for marker in side.union.whiteouts(0):
            view[marker] = "whiteout"
    return view


def _kind(node: Node | str) -> str:
    if isinstance(node, str):
        return node
    t = node.entry.type
    return "file" if t is EntryType.HARDLINK else t.value


def _size(node: Node | str) -> int:
    return 0 if isinstance(node, str) or node.content is None else node.size


def _identity(side: Side, node: Node) -> tuple[str, int] | None:
    c = node.content
    return None if c is None else (side.layer_ids[c.layer], c.seq)


def _describe(node: Node | str) -> dict[str, Any]:
    if isinstance(node, str):
        return {"type": node}
    e: Entry = node.entry
    d: dict[str, Any] = {"type": _kind(node), "size": _size(node), "mode": f"{e.mode:04o}", "uid": e.uid, "gid": e.gid}
    if e.type is EntryType.SYMLINK:
        d["linkTarget"] = e.linkname
    if e.is_device():
        d["device"] = [e.devmajor, e.devminor]
    return d


def _read_members(side: Side, layer: int, wanted: dict[int, bool]) -> dict[int, tuple[str, bytes | None]]:
    """One pass over ``layer``: sha256 (and, where ``wanted[seq]``, the bytes) of the chosen members."""
    out: dict[int, tuple[str, bytes | None]] = {}
    stream = side.layers[layer].open_tar()
    try:
        entries = iter_entries(stream, layer=str(layer), limits=side.union.limits,
                               compressed_size=compressed_size(side.layers[layer]))
        for seq, (_entry, content) in enumerate(entries):
            if seq not in wanted or content is None:
                continue
            h, parts = hashlib.sha256(), []
            while chunk := content.read(CHUNK):
                h.update(chunk)
                if wanted[seq]:
                    parts.append(chunk)
            out[seq] = (h.hexdigest(), b"".join(parts) if wanted[seq] else None)
            if len(out) == len(wanted):
                break  # the rest of the layer is not needed (verification happened on the first read)
    finally:
        stream.close()
    return out


class _Contents:
    """Batches content reads: request (side, node) pairs, then fetch each layer once."""

    def __init__(self) -> None:
        self._want: dict[tuple[int, int], dict[int, bool]] = defaultdict(dict)
        self._sides: dict[int, Side] = {}
        self._got: dict[tuple[int, int, int], tuple[str, bytes | None]] = {}

    def request(self, side: Side, node: Node, keep: bool) -> None:
        c = node.content
        assert c is not None
        self._sides[id(side)] = side
        slot = self._want[(id(side), c.layer)]
        slot[c.seq] = slot.get(c.seq, False) or keep

    def fetch(self) -> None:
        for (sid, layer), wanted in self._want.items():
            for seq, value in _read_members(self._sides[sid], layer, wanted).items():
                self._got[(sid, layer, seq)] = value
        self._want.clear()

    def get(self, side: Side, node: Node) -> tuple[str, bytes | None]:
        c = node.content
        assert c is not None
        return self._got.get((id(side), c.layer, c.seq), ("", None))


# ------------------------------------------------------------------------------------------------


@dataclass
class DiffResult:
    """What differs between two images (or layers): files, sizes, metadata, history, packages."""

    a: Side
    b: Side
    types: tuple[str, ...]
    shared_layers: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"added": [], "removed": [], "changed": []})
    sizes: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not (any(self.files.values()) or self.sizes or self.config
                    or self.history.get("added") or self.history.get("removed")
                    or any(any(v.values()) for v in self.packages.values()))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "a": {"reference": self.a.reference, "digest": self.a.digest},
            "b": {"reference": self.b.reference, "digest": self.b.digest},
            "identical": self.identical,
            "sharedLayers": self.shared_layers,
        }
        if "file" in self.types:
            doc["files"] = self.files
        if "size" in self.types:
            doc["sizes"] = self.sizes
        if "config" in self.types:
            doc["config"] = self.config
        if "history" in self.types:
            doc["history"] = self.history
        if "packages" in self.types:
            doc["packages"] = self.packages
        return doc


def diff_sides(a: Side, b: Side, types: Iterable[str] = TYPES) -> DiffResult:
    """Compare two indexed sides (see :func:`image_side`, :func:`layer_file_side`)."""
    result = DiffResult(a, b, tuple(t for t in TYPES if t in set(types)))
    for j, ident in enumerate(b.layer_ids):
        if ident in a.layer_ids:
            i = a.layer_ids.index(ident)
            digest = a.image.layers[i].digest if a.image is not None else ident
            result.shared_layers.append({"digest": str(digest), "a": i, "b": j})
    if a.image is not None and b.image is not None and a.image.digest == b.image.digest:
        _diff_metadata(result)
        return result  # the same manifest: the same bytes everywhere
    va, vb = _view(a), _view(b)
    contents = _Contents()
    if "file" in result.types:
        _diff_files(result, va, vb, contents)
    if "size" in result.types:
        result.sizes = _diff_sizes(va, vb)
    if "packages" in result.types:
        _diff_packages(result, va, vb, contents)
    _diff_metadata(result)
    return result


def _diff_files(result: DiffResult, va: dict[str, Node | str], vb: dict[str, Node | str], contents: _Contents) -> None:
    a, b = result.a, result.b
    added = [{"path": "/" + p, "type": _kind(vb[p]), "size": _size(vb[p])} for p in sorted(vb.keys() - va.keys())]
    removed = [{"path": "/" + p, "type": _kind(va[p]), "size": _size(va[p])} for p in sorted(va.keys() - vb.keys())]
    pending: list[tuple[str, Node, Node, list[str]]] = []
    changed: list[dict[str, Any]] = []
    for path in sorted(va.keys() & vb.keys()):
        x, y = va[path], vb[path]
        if isinstance(x, str) or isinstance(y, str):
            if _kind(x) != _kind(y):
                changed.append(_changed(path, x, y, ["type"]))
            continue
        what = []
        if _kind(x) != _kind(y):
            what.append("type")
        ex, ey = x.entry, y.entry
        if _size(x) != _size(y):
            what.append("size")
            if x.content is not None and y.content is not None:
                what.append("content")  # different sizes: different bytes, no hashing needed
        if ex.mode != ey.mode:
            what.append("mode")
        if (ex.uid, ex.gid) != (ey.uid, ey.gid):
            what.append("owner")
        if ex.type is EntryType.SYMLINK and ey.type is EntryType.SYMLINK and ex.linkname != ey.linkname:
            what.append("linkTarget")
        if ex.is_device() and (ex.devmajor, ex.devminor) != (ey.devmajor, ey.devminor):
            what.append("device")
        if (x.content is not None and y.content is not None and _size(x) == _size(y)
                and _identity(a, x) != _identity(b, y)):
            contents.request(a, x, False)
            contents.request(b, y, False)
            pending.append((path, x, y, what))
        elif what:
            changed.append(_changed(path, x, y, what))
    contents.fetch()
    for path, x, y, what in pending:
        if contents.get(a, x)[0] != contents.get(b, y)[0]:
            what = what + ["content"]
        if what:
            changed.append(_changed(path, x, y, what))
    changed.sort(key=lambda c: c["path"])
    result.files = {"added": added, "removed": removed, "changed": changed}


def _changed(path: str, x: Node | str, y: Node | str, what: list[str]) -> dict[str, Any]:
    return {"path": "/" + path, "type": _kind(y), "size": _size(y), "changes": what,
            "before": _describe(x), "after": _describe(y)}


def _dir_sizes(view: dict[str, Node | str]) -> dict[str, int]:
    sizes: dict[str, int] = defaultdict(int)
    for path, node in view.items():
        if isinstance(node, str) or node.entry.type is not EntryType.FILE:
            continue  # hard links share their target's bytes: count them once
        size = node.entry.size
        sizes["/"] += size
        head = path
        while "/" in head:
            head = head.rpartition("/")[0]
            sizes["/" + head] += size
    for path, node in view.items():
        if not isinstance(node, str) and node.entry.type is EntryType.DIR:
            sizes.setdefault("/" + path, 0)
    return sizes


def _diff_sizes(va: dict[str, Node | str], vb: dict[str, Node | str]) -> list[dict[str, Any]]:
    sa, sb = _dir_sizes(va), _dir_sizes(vb)
    out: list[dict[str, Any]] = [{"path": p, "before": sa.get(p, 0), "after": sb.get(p, 0), "delta": sb.get(p, 0) - sa.get(p, 0)}
           for p in sa.keys() | sb.keys() if sa.get(p, 0) != sb.get(p, 0)]
    out.sort(key=lambda d: (-abs(d["delta"]), d["path"]))
    return out


_PARSERS = {"apk": (pk.APK_DB, pk.parse_apk_installed), "dpkg": (pk.DPKG_DB, pk.parse_dpkg_status)}


def _diff_packages(result: DiffResult, va: dict[str, Node | str], vb: dict[str, Node | str],
                   contents: _Contents) -> None:
    a, b = result.a, result.b
    differing: list[str] = []
    present: set[str] = set()
    for path in sorted({p for p in (va.keys() | vb.keys()) if pk.is_package_db(p)}):
        x, y = va.get(path), vb.get(path)
        nx = x if isinstance(x, Node) and x.content is not None else None
        ny = y if isinstance(y, Node) and y.content is not None else None
        if nx is None and ny is None:
            continue
        present.add("python" if pk.is_python_metadata(path) else ("apk" if path == pk.APK_DB else "dpkg"))
        if nx is not None and ny is not None and _identity(a, nx) == _identity(b, ny):
            continue  # the same member on both sides: same packages
        for side, node in ((a, nx), (b, ny)):
            if node is not None:
                contents.request(side, node, True)
        differing.append(path)
    contents.fetch()

    def data(side: Side, node: Node | str | None) -> bytes:
        if not isinstance(node, Node) or node.content is None:
            return b""
        return contents.get(side, node)[1] or b""

    for manager, (path, parse) in _PARSERS.items():
        if manager in present:
            if path in differing:
                result.packages[manager] = pk.diff_packages(parse(data(a, va.get(path))), parse(data(b, vb.get(path))))
            else:
                result.packages[manager] = pk.diff_packages({}, {})
    if "python" in present:
        before: dict[str, str] = {}
        after: dict[str, str] = {}
        for path in differing:
            if pk.is_python_metadata(path):
                before.update(pk.parse_python_metadata(data(a, va.get(path))))
                after.update(pk.parse_python_metadata(data(b, vb.get(path))))
        result.packages["python"] = pk.diff_packages(before, after)


# ------------------------------------------------------------------------------------------------

_CONFIG_KEYS = ("Entrypoint", "Cmd", "User", "WorkingDir", "ExposedPorts", "Volumes", "StopSignal",
                "Healthcheck", "Shell", "OnBuild")


def _mapping_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "added": {k: after[k] for k in sorted(after.keys() - before.keys())},
        "removed": {k: before[k] for k in sorted(before.keys() - after.keys())},
        "changed": {k: {"before": before[k], "after": after[k]}
                    for k in sorted(before.keys() & after.keys()) if before[k] != after[k]},
    }


def _env(items: list[str] | None) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in items or [])


def _diff_metadata(result: DiffResult) -> None:
    a, b = result.a.image, result.b.image
    if a is None or b is None:
        return
    if "config" in result.types:
        ca, cb = a.config.config, b.config.config
        out: dict[str, Any] = {}
        env = _mapping_diff(_env(ca.get("Env")), _env(cb.get("Env")))
        if any(env.values()):
            out["Env"] = env
        labels = _mapping_diff(dict(ca.get("Labels") or {}), dict(cb.get("Labels") or {}))
        if any(labels.values()):
            out["Labels"] = labels
        for key in _CONFIG_KEYS:
            x, y = ca.get(key), cb.get(key)
            if isinstance(x, dict) and isinstance(y, dict) and not x and not y:
                continue
            if (x or None) != (y or None):
                out[key] = {"before": x, "after": y}
        for key in ("os", "architecture", "variant"):
            x, y = getattr(a.config, key), getattr(b.config, key)
            if x != y:
                out[key] = {"before": x, "after": y}
        result.config = out
    if "history" in result.types:
        ha = [h.created_by for h in a.config.history]
        hb = [h.created_by for h in b.config.history]
        n = 0
        while n < min(len(ha), len(hb)) and ha[n] == hb[n]:
            n += 1
        result.history = {"commonPrefix": n, "removed": ha[n:], "added": hb[n:]}
