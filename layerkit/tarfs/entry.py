"""One tar member as layerkit sees it: a cleaned path plus the metadata a layer can carry."""

from __future__ import annotations

import enum
import stat
from dataclasses import dataclass, field

from . import whiteout

__all__ = ["EntryType", "Entry"]


class EntryType(str, enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"


_S_IFMT = {
    EntryType.FILE: stat.S_IFREG,
    EntryType.DIR: stat.S_IFDIR,
    EntryType.SYMLINK: stat.S_IFLNK,
    EntryType.HARDLINK: stat.S_IFREG,
    EntryType.CHAR: stat.S_IFCHR,
    EntryType.BLOCK: stat.S_IFBLK,
    EntryType.FIFO: stat.S_IFIFO,
}


@dataclass(slots=True)
class Entry:
    """A layer member.

    ``path`` is cleaned (no leading ``/`` or ``./``, no trailing ``/``, root is ``"."``). ``mode``
    holds permission bits with setuid/setgid/sticky, never file-type bits. ``size`` counts content
    bytes of FILE entries only. ``linkname`` is the verbatim symlink target, or for a HARDLINK the
    cleaned member path of the first link; it is ``""`` on every other type (Docker writes stale
    link names on regular files, which readers drop).
    """

    path: str
    type: EntryType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)

    # -- type helpers ------------------------------------------------------------------------
    def is_file(self) -> bool:
        return self.type is EntryType.FILE

    def is_dir(self) -> bool:
        return self.type is EntryType.DIR

    def is_symlink(self) -> bool:
        return self.type is EntryType.SYMLINK

    def is_hardlink(self) -> bool:
        return self.type is EntryType.HARDLINK

    def is_device(self) -> bool:
        return self.type is EntryType.CHAR or self.type is EntryType.BLOCK

    def is_fifo(self) -> bool:
        return self.type is EntryType.FIFO

    # -- whiteouts ---------------------------------------------------------------------------
    @property
    def is_whiteout(self) -> bool:
        """Any ``.wh.`` name, the opaque marker included (check :attr:`is_opaque` first)."""
        return whiteout.is_whiteout(self.path)

    @property
    def is_opaque(self) -> bool:
        return whiteout.is_opaque(self.path)

    @property
    def whiteout_target(self) -> str:
        """Path hidden by a plain whiteout; raises InvalidWhiteoutError otherwise."""
        return whiteout.whiteout_target(self.path)

    # -- misc --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Last path component."""
        return self.path.rpartition("/")[2]

    @property
    def st_mode(self) -> int:
        """``stat``-style mode: file-type bits plus permissions (HARDLINK reports a regular file)."""
        return _S_IFMT[self.type] | (self.mode & 0o7777)

    @property
    def mtime(self) -> int:
        """Whole seconds of ``mtime_ns`` (floor)."""
        return self.mtime_ns // 1_000_000_000
