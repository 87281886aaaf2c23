"""Member-name hygiene at the tar boundary: every path leaving a tar reader goes through here.

Policy: names are cleaned lexically (``./a//b/`` -> ``a/b``); absolute names are made relative to
the layer root, as Docker, containerd and GNU tar do; a ``..`` that would climb above the root, a
NUL byte, a component over 255 bytes or a path over 4096 bytes (Linux NAME_MAX / PATH_MAX) raise
:class:`UnsafePathError`. Names are ``str``; undecodable bytes travel as surrogate escapes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

from ..errors import UnsafePathError

__all__ = [
    "MAX_COMPONENT",
    "MAX_PATH",
    "Resolved",
    "SymlinkLoopError",
    "basename",
    "clean_member",
    "join_link",
    "parent",
    "resolve_in_root",
]

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
    # fast path: clean once a leading "./" and a trailing "/" are dropped: every layer we write, and
    # the "./bin/" of GNU tar and most base images
    s = name.removeprefix("./")
    s = s.removesuffix("/")
    if (
        s
        and s[0] != "/"
        and s[-1] != "/"
        and "//" not in s
        and not s.startswith("./")
        and "/./" not in s
        and ".." not in s
        and s != "."
        and not s.endswith("/.")
        and _blen(s) <= MAX_COMPONENT
    ):
        return s
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


#: What ``resolve_in_root``'s lookup says of one path: ``None`` when it does not exist (or must not
#: be seen), else ``(is_dir, symlink_target)`` with ``symlink_target`` None for a non-link.
Lookup = Callable[[str], "tuple[bool, str | None] | None"]


class Resolved(NamedTuple):
    """Where ``resolve_in_root`` stopped. ``found``: every component exists (``path`` is the resolved
    path, "." for the root). Otherwise ``path`` is the resolved prefix, ``rest`` the components left
    (the missing one first) and ``not_dir`` the component that exists but is no directory, if that
    is why it stopped."""

    path: str
    found: bool
    rest: tuple[str, ...] = ()
    not_dir: str = ""


class SymlinkLoopError(ValueError):
    """More symlinks than ``max_links`` on the way (a loop, or a hostile chain)."""


def resolve_in_root(path: str, lookup: Lookup, *, follow_last: bool = True, max_links: int = 40) -> Resolved:
    """Resolve ``path`` component by component inside a root whose entries ``lookup`` describes, as
    the kernel would inside a chroot: ``..`` never climbs above the root, an absolute symlink target
    restarts at the root. One algorithm for the build context, an image being built and the union
    view; each caller decides what a missing component or a non-directory means to it."""
    todo = [c for c in reversed(path.split("/")) if c not in ("", ".")]
    cur: list[str] = []
    hops = 0
    while todo:
        comp = todo.pop()
        if comp == "..":
            if cur:
                cur.pop()
            continue
        cand = "/".join(cur + [comp])
        found = lookup(cand)
        if found is None:
            return Resolved("/".join(cur) or ".", False, (comp, *reversed(todo)))
        is_dir, target = found
        if target is not None and (todo or follow_last):
            hops += 1
            if hops > max_links:
                raise SymlinkLoopError(f"{path!r}: too many levels of symbolic links")
            if target.startswith("/"):
                cur = []
            todo.extend(c for c in reversed(target.split("/")) if c not in ("", "."))
            continue
        if todo and not is_dir:
            return Resolved("/".join(cur) or ".", False, (comp, *reversed(todo)), not_dir=cand)
        cur.append(comp)
    return Resolved("/".join(cur) or ".", True)

