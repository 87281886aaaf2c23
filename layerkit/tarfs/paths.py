"""Member-name hygiene at the tar boundary: every path leaving a tar reader goes through here.

Policy: names are cleaned lexically (``./a//b/`` -> ``a/b``); absolute names are made relative to
the layer root, as Docker, containerd and GNU tar do; a ``..`` that would climb above the root, a
NUL byte, a component over 255 bytes or a path over 4096 bytes (Linux NAME_MAX / PATH_MAX) raise
:class:`UnsafePathError`. Names are ``str``; undecodable bytes travel as surrogate escapes.
"""

from __future__ import annotations

import os

from ..errors import UnsafePathError

__all__ = ["clean_member", "join_link", "parent", "basename", "MAX_COMPONENT", "MAX_PATH"]

MAX_COMPONENT = 255
MAX_PATH = 4096


def _blen(s: str) -> int:
    if s.isascii():
        return len(s)
    return len(os.fsencode(s))


def clean_member(name: str) -> str:
    """Normalise a tar member name to a root-relative path (``"."`` for the root itself)."""
    if "\x00" in name:
        raise UnsafePathError(name, "the name contains a NUL byte")
    if not name:
        raise UnsafePathError(name, "the name is empty")
    if _blen(name) > MAX_PATH:
        raise UnsafePathError(name[:64] + "...", f"the name is longer than {MAX_PATH} bytes")
    # fast path: already clean (the common case for every layer we wrote ourselves)
    if (
        name[0] != "/"
        and name[-1] != "/"
        and "//" not in name
        and not name.startswith("./")
        and "/./" not in name
        and ".." not in name
        and name != "."
        and not name.endswith("/.")
        and _blen(name) <= MAX_COMPONENT
    ):
        return name
    out: list[str] = []
    for part in name.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if not out:
                raise UnsafePathError(name, "the name climbs out of the root with '..'")
            out.pop()
            continue
        if _blen(part) > MAX_COMPONENT:
            raise UnsafePathError(name, f"a path component is longer than {MAX_COMPONENT} bytes")
        out.append(part)
    return "/".join(out) if out else "."


def parent(path: str) -> str:
    """Parent of a cleaned path (``"."`` for top-level names and the root)."""
    head, sep, _ = path.rpartition("/")
    return head if sep else "."


def basename(path: str) -> str:
    return path.rpartition("/")[2]


def join_link(member: str, target: str) -> str | None:
    """Resolve a symlink ``member -> target`` lexically inside the layer root.

    An absolute target is taken relative to the root (the image's ``/``); a relative one relative to
    the link's directory. Returns the cleaned member path it names, or ``None`` when a ``..`` would
    climb above the root: such a link points outside the image and must not be followed. This is
    one lexical step; a caller following chains resolves each component again.
    """
    if not target or "\x00" in target:
        return None
    if target.startswith("/"):
        base: list[str] = []
    else:
        d = parent(member)
        base = [] if d == "." else d.split("/")
    for part in target.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if not base:
                return None
            base.pop()
            continue
        base.append(part)
    return "/".join(base) if base else "."
