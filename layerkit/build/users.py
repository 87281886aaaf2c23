"""``--chown`` and ``USER`` resolution against the image's own ``/etc/passwd`` and ``/etc/group``.

Rules follow BuildKit (COPY ``--chown``) and runc (``USER`` for RUN): a number is used as is; a name
is looked up in the files of the image being built. ``--chown=NAME`` takes the user's primary group,
``--chown=UID`` uses the same number as the group; ``USER`` also collects supplementary groups.
Names that do not resolve raise :class:`UnknownUserError` (the builder adds ``file:line``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ResolvedUser", "UnknownUserError", "parse_group", "parse_passwd", "resolve_chown", "resolve_user"]

#: ``read(path) -> bytes | None``: the file's content in the image, None when absent.
ReadFile = Callable[[str], "bytes | None"]


class UnknownUserError(LookupError):
    """A user or group name missing from the image (internal: the builder turns it into a located error)."""


@dataclass(frozen=True)
class ResolvedUser:
    """A ``USER`` resolved against the image's passwd and group files."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _lines(data: bytes | None) -> list[list[str]]:
    if not data:
        return []
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.split(":"))
    return out


def parse_passwd(data: bytes | None) -> list[tuple[str, int, int]]:
    """``(name, uid, gid)`` rows; malformed lines are skipped like libcontainer does."""
    rows = []
    for f in _lines(data):
        if len(f) >= 4 and f[2].isdigit() and f[3].isdigit():
            rows.append((f[0], int(f[2]), int(f[3])))
    return rows


def parse_group(data: bytes | None) -> list[tuple[str, int, tuple[str, ...]]]:
    """``(name, gid, members)`` rows."""
    rows = []
    for f in _lines(data):
        if len(f) >= 3 and f[2].isdigit():
            members = tuple(m for m in (f[3].split(",") if len(f) > 3 else []) if m)
            rows.append((f[0], int(f[2]), members))
    return rows


def _is_id(text: str) -> bool:
    return text.isdigit() and int(text) <= 0xFFFFFFFF


def _group_id(group: str, read: ReadFile) -> int:
    if _is_id(group):
        return int(group)
    for name, gid, _ in parse_group(read("/etc/group")):
        if name == group:
            return gid
    raise UnknownUserError(f"unknown group {group!r}: no such group in the image's /etc/group")


def resolve_chown(spec: str, read: ReadFile) -> tuple[int, int]:
    """``user[:group]`` of COPY/ADD ``--chown`` to ``(uid, gid)``."""
    user, _, group = spec.partition(":")
    if not user:
        raise UnknownUserError(f"invalid --chown={spec!r}: give user[:group]")
    if _is_id(user):
        uid, gid = int(user), int(user)
    else:
        for name, u, g in parse_passwd(read("/etc/passwd")):
            if name == user:
                uid, gid = u, g
                break
        else:
            raise UnknownUserError(f"unknown user {user!r}: no such user in the image's /etc/passwd")
    if group:
        gid = _group_id(group, read)
    return uid, gid


def resolve_user(spec: str, read: ReadFile) -> ResolvedUser:
    """``USER`` text (``name``, ``uid``, ``name:group``…) to ids for a RUN step, like runc's
    ``GetExecUser``: a numeric uid missing from passwd runs with gid 0."""
    if not spec:
        return ResolvedUser(0, 0)  # no USER: root, no lookup (FROM scratch has no passwd)
    user, _, group = spec.partition(":")
    passwd = parse_passwd(read("/etc/passwd"))
    name = ""
    if _is_id(user):
        uid, gid = int(user), 0
        for n, u, g in passwd:
            if u == uid:
                name, gid = n, g
                break
    else:
        for n, u, g in passwd:
            if n == user:
                name, uid, gid = n, u, g
                break
        else:
            raise UnknownUserError(f"unable to find user {user}: no matching entries in the image's /etc/passwd")
    groups: tuple[int, ...] = ()
    if group:
        gid = _group_id(group, read)
    elif name:
        groups = tuple(sorted({g for _, g, members in parse_group(read("/etc/group")) if name in members}))
    return ResolvedUser(uid, gid, groups)
