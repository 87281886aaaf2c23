"""OCI whiteout names (image-spec layer.md): the only place that knows how deletions are spelled.

A whiteout ``DIR/.wh.NAME`` hides ``DIR/NAME`` (and everything under it) in lower layers; the opaque
marker ``DIR/.wh..wh..opq`` hides every lower child of ``DIR``. Names starting ``.wh..wh.`` are
reserved (aufs metadata such as ``.wh..wh.plnk``), so a whiteout of a whiteout cannot be spelled and
is refused. Paths here are cleaned member paths (see :mod:`layerkit.tarfs.paths`).
"""

from __future__ import annotations

from ..errors import InvalidWhiteoutError

__all__ = [
    "WHITEOUT_PREFIX",
    "OPAQUE_WHITEOUT",
    "WHITEOUT_META_PREFIX",
    "is_whiteout",
    "is_opaque",
    "is_whiteout_meta",
    "whiteout_target",
    "whiteout_path",
    "opaque_path",
]

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"


def _split(path: str) -> tuple[str, str]:
    head, _, base = path.rpartition("/")
    return head, base


def is_whiteout(path: str) -> bool:
    """True for any ``.wh.``-prefixed basename: plain whiteouts, the opaque marker and meta names.

    Check :func:`is_opaque` first when the difference matters (as ggcr's extract loop does).
    """
    return _split(path)[1].startswith(WHITEOUT_PREFIX)


def is_opaque(path: str) -> bool:
    """True for ``DIR/.wh..wh..opq``."""
    return _split(path)[1] == OPAQUE_WHITEOUT


def is_whiteout_meta(path: str) -> bool:
    """True for reserved ``.wh..wh.*`` names, the opaque marker included."""
    return _split(path)[1].startswith(WHITEOUT_META_PREFIX)


def whiteout_target(path: str) -> str:
    """The path a plain whiteout hides: ``a/.wh.b`` -> ``a/b``.

    Raises InvalidWhiteoutError for names that hide nothing meaningful (``.wh.``, ``.wh..``,
    ``.wh...``), for reserved ``.wh..wh.*`` names (the opaque marker included) and for non-whiteouts,
    so a hostile layer cannot turn a whiteout into ``..`` or the directory itself.
    """
    head, base = _split(path)
    if not base.startswith(WHITEOUT_PREFIX):
        raise InvalidWhiteoutError(f"{path!r} is not a whiteout")
    if base.startswith(WHITEOUT_META_PREFIX):
        raise InvalidWhiteoutError(f"{path!r} is a reserved whiteout name, not a plain whiteout")
    name = base[len(WHITEOUT_PREFIX) :]
    if name in ("", ".", "..") or "/" in name:
        raise InvalidWhiteoutError(f"invalid whiteout {path!r}: it names {name!r}")
    if head in ("", "."):
        return name
    return f"{head}/{name}"


def whiteout_path(path: str) -> str:
    """The whiteout entry that deletes ``path``: ``a/b`` -> ``a/.wh.b``.

    Refuses the root and names that are themselves whiteouts (whiteout-of-whiteout, as umoci does).
    """
    head, base = _split(path)
    if base in ("", ".", ".."):
        raise InvalidWhiteoutError(f"cannot white out {path!r}")
    if base.startswith(WHITEOUT_PREFIX):
        raise InvalidWhiteoutError(f"cannot white out {path!r}: the name is itself a whiteout")
    if head in ("", "."):
        return WHITEOUT_PREFIX + base
    return f"{head}/{WHITEOUT_PREFIX}{base}"


def opaque_path(dir_path: str) -> str:
    """The opaque marker for a directory: ``a`` -> ``a/.wh..wh..opq``; ``.`` -> ``.wh..wh..opq``."""
    if dir_path in ("", "."):
        return OPAQUE_WHITEOUT
    if is_whiteout(dir_path):
        raise InvalidWhiteoutError(f"cannot make {dir_path!r} opaque: the name is a whiteout")
    return f"{dir_path}/{OPAQUE_WHITEOUT}"
