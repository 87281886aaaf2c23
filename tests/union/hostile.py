"""Tiny-tar builders and the hostile-layer corpus the union tests run through unpack, export and Union.

Layers are built with stdlib ``tarfile`` (PAX) where it can spell the member, and with a raw header
writer where a hostile layer needs what ``tarfile`` refuses to write (bad sizes, NUL bytes, duplicate
PAX overrides, truncation). Each :class:`Case` says what must happen: a refusal (``UnsafePathError``
or ``TarFormatError``, naming the entry) or a successful extraction with exact must-exist and
must-not-exist paths. Nothing here imports layerkit: the corpus is data.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = [
    "CASES",
    "Case",
    "M",
    "TarLayer",
    "d",
    "dev",
    "f",
    "fifo",
    "hl",
    "opq",
    "pax_record",
    "raw_header",
    "sym",
    "tar",
    "wh",
]

MTIME = 1_700_000_000
#: ``security.capability`` v2 granting cap_net_raw (bit 13), as ``setcap cap_net_raw+p`` writes it
CAP_NET_RAW = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12


class TarLayer:
    """A layer double for ``Union``: ``open_tar()`` over in-memory bytes and an ``id`` for messages."""

    def __init__(self, data: bytes, id: str = "") -> None:
        self.data = data
        self.id = id

    def open_tar(self) -> BinaryIO:
        return io.BytesIO(self.data)


@dataclass
class M:
    """One member for :func:`tar`."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)
    mtime: int = MTIME


def f(name: str, data: bytes | str = b"", mode: int = 0o644, **kw: object) -> M:
    return M(name, tarfile.REGTYPE, data.encode() if isinstance(data, str) else data, mode, **kw)  # type: ignore[arg-type]


def d(name: str, mode: int = 0o755, **kw: object) -> M:
    return M(name, tarfile.DIRTYPE, b"", mode, **kw)  # type: ignore[arg-type]


def sym(name: str, target: str, **kw: object) -> M:
    return M(name, tarfile.SYMTYPE, b"", 0o777, target, **kw)  # type: ignore[arg-type]


def hl(name: str, target: str, **kw: object) -> M:
    return M(name, tarfile.LNKTYPE, b"", 0o644, target, **kw)  # type: ignore[arg-type]


def wh(path: str) -> M:
    """The whiteout hiding ``path`` (``a/b`` -> ``a/.wh.b``)."""
    head, _, base = path.rpartition("/")
    return M(f"{head}/.wh.{base}" if head else f".wh.{base}", tarfile.REGTYPE, b"", 0o600)


def opq(directory: str) -> M:
    return M(f"{directory}/.wh..wh..opq" if directory not in ("", ".") else ".wh..wh..opq", tarfile.REGTYPE, b"", 0o600)


def dev(name: str, kind: str = "c", major: int = 1, minor: int = 3, mode: int = 0o666) -> M:
    return M(name, tarfile.CHRTYPE if kind == "c" else tarfile.BLKTYPE, b"", mode, devmajor=major, devminor=minor)


def fifo(name: str, mode: int = 0o644) -> M:
    return M(name, tarfile.FIFOTYPE, b"", mode)


def tar(*members: M) -> bytes:
    """A PAX tar of ``members`` in the given order (duplicates kept)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for m in members:
            ti = tarfile.TarInfo(m.name)
            ti.type = m.type
            ti.mode = m.mode
            ti.uid, ti.gid = m.uid, m.gid
            ti.mtime = m.mtime
            ti.linkname = m.linkname
            ti.devmajor, ti.devminor = m.devmajor, m.devminor
            ti.size = len(m.data) if m.type == tarfile.REGTYPE else 0
            ti.pax_headers = dict(m.pax)
            t.addfile(ti, io.BytesIO(m.data) if m.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def _octal(n: int, width: int) -> bytes:
    return f"{n:0{width - 1}o}".encode() + b"\0"


def raw_header(
    name: bytes,
    *,
    type: bytes = b"0",
    size: int | bytes = 0,
    mode: int = 0o644,
    linkname: bytes = b"",
    prefix: bytes = b"",
) -> bytes:
    """One ustar header block with a correct checksum; ``size`` may be raw field bytes (hostile)."""
    blk = bytearray(512)
    blk[0:100] = name[:100].ljust(100, b"\0")
    blk[100:108] = _octal(mode, 8)
    blk[108:116] = _octal(0, 8)
    blk[116:124] = _octal(0, 8)
    blk[124:136] = size if isinstance(size, bytes) else _octal(size, 12)
    blk[136:148] = _octal(MTIME, 12)
    blk[148:156] = b" " * 8
    blk[156:157] = type
    blk[157:257] = linkname[:100].ljust(100, b"\0")
    blk[257:265] = b"ustar\x0000"
    blk[345:500] = prefix[:155].ljust(155, b"\0")
    blk[148:156] = f"{sum(blk):06o}".encode() + b"\0 "
    return bytes(blk)


def pax_record(key: str, value: str | bytes) -> bytes:
    v = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    body = key.encode() + b"=" + v + b"\n"
    n = len(body) + 2
    while len(str(n)) + 1 + len(body) != n:
        n += 1
    return str(n).encode() + b" " + body


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def raw_tar(*parts: bytes, end: bool = True) -> bytes:
    out = b"".join(parts)
    return out + (bytes(1024) if end else b"")


def pax_member(records: bytes, member: bytes, data: bytes = b"") -> bytes:
    """A PAX ``x`` header holding ``records``, then ``member`` (a header) and its ``data``."""
    return raw_header(b"PaxHeader", type=b"x", size=len(records)) + _pad(records) + member + _pad(data)


# ------------------------------------------------------------------------------------------------
# the corpus


@dataclass
class Case:
    """One hostile image: ``layers`` bottom-up. ``error`` is the exception class name expected from
    every consumer (``UnsafePathError`` / ``TarFormatError`` / ``LimitExceededError``) and ``names``
    a substring the message must contain; otherwise the unpack must succeed with ``exists`` present
    (``path`` or ``path:content``) and ``absent`` missing. ``skipped`` lists paths that an unpack
    with ``rootless=True`` reports as skipped."""

    name: str
    layers: list[bytes]
    error: str | None = None
    names: str = ""
    exists: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    rootless_absent: list[str] = field(default_factory=list)


def _cases() -> list[Case]:
    C: list[Case] = []
    add = C.append
    base = tar(d("etc"), f("etc/passwd", "root:x:0:0\n"), d("tmp", 0o1777))

    # -- names --------------------------------------------------------------------------------
    add(Case("absolute-name", [tar(f("/abs", "x"), f("/etc/../etc/hostname", "h"))],
             exists=["abs:x", "etc/hostname:h"]))
    add(Case("dotdot-escape", [tar(f("../escape", "x"))], error="UnsafePathError", names="../escape"))
    add(Case("dotdot-deep-escape", [tar(d("a"), f("a/../../escape", "x"))], error="UnsafePathError", names="escape"))
    add(Case("dotdot-inside-ok", [tar(d("a"), d("b"), f("a/../b/x", "x"))], exists=["b/x:x"]))
    add(Case("nul-in-name", [raw_tar(raw_header(b"ok", size=0), pax_member(pax_record("path", "a\x00b"), raw_header(b"nul")))],
             error="UnsafePathError", names="NUL"))
    add(Case("name-over-4096", [tar(f("a" * 200 + "/" + "/".join(["b" * 200] * 25), "x"))], error="UnsafePathError", names="4096"))
    add(Case("component-over-255", [tar(f("c" * 300, "x"))], error="UnsafePathError", names="255"))
    add(Case("nesting-10000-deep", [tar(f("/".join(["n"] * 10000), "x"))], error="UnsafePathError", names="4096"))
    deep = "/".join(["n"] * 1200)  # deeper than Python's recursion limit: proves iterative code
    add(Case("nesting-1200-deep-ok", [tar(*[d("/".join(["n"] * k)) for k in range(1, 1201)], f(deep + "/leaf", "x"))],
             exists=[deep + "/leaf:x"]))

    # -- symlinks planted then written through -------------------------------------------------
    add(Case("symlink-then-write-same-layer", [tar(sym("evil", "/outside"), f("evil/pwn", "x"))],
             error="UnsafePathError", names="evil/pwn"))
    add(Case("symlink-relative-escape-same-layer", [tar(sym("evil", "../../../../.."), f("evil/tmp/pwn", "x"))],
             error="UnsafePathError", names="evil/tmp/pwn"))
    add(Case("symlink-dir-swapped-same-layer", [tar(d("sw"), f("sw/a", "a"), sym("sw", "/etc"), f("sw/passwd", "pwn"))],
             error="UnsafePathError", names="sw/passwd"))
    add(Case("dir-swapped-for-symlink-last-wins", [tar(d("sw"), f("sw/a", "a"), sym("sw", "/etc"))],
             exists=["sw"], absent=["sw/a"]))
    add(Case("symlink-across-layers-becomes-dir", [base, tar(sym("etc2", "/etc")), tar(f("etc2/passwd", "pwn"))],
             exists=["etc/passwd:root:x:0:0\n", "etc2/passwd:pwn"]))
    add(Case("symlink-to-outside-across-layers", [tar(sym("out", "/../../../tmp")), tar(f("out/pwn", "x"))],
             exists=["out/pwn:x"]))
    add(Case("symlink-absolute-kept-verbatim", [tar(sym("abs", "/etc/shadow"), sym("rel", "../../../../etc"))],
             exists=["abs", "rel"]))
    add(Case("symlink-chain", [tar(sym("s1", "s2"), sym("s2", "s3"), sym("s3", "/outside")), tar(f("s1/x", "x"))],
             exists=["s1/x:x", "s2", "s3"]))
    add(Case("symlink-loop", [tar(sym("loop1", "loop2"), sym("loop2", "loop1")), tar(f("loop1/x", "x"))],
             exists=["loop1/x:x", "loop2"]))
    add(Case("symlink-parent-of-parent", [tar(d("p"), sym("p/q", "/")), tar(f("p/q/r/s", "x"))],
             exists=["p/q/r/s:x"], absent=["r"]))

    # -- hard links ------------------------------------------------------------------------------
    add(Case("hardlink-outside", [tar(hl("hl", "../../etc/passwd"))], error="UnsafePathError", names="etc/passwd"))
    add(Case("hardlink-absolute-inside", [base, tar(hl("pw", "/etc/passwd"))], exists=["pw:root:x:0:0\n"]))
    add(Case("hardlink-missing-target", [tar(hl("hl", "nope"))], error="UnsafePathError", names="does not exist"))
    add(Case("hardlink-to-symlink", [tar(sym("s", "/etc/passwd"), hl("hl", "s"))], error="UnsafePathError", names="symlink"))
    add(Case("hardlink-to-dir", [tar(d("dd"), hl("hl", "dd"))], error="UnsafePathError", names="dir"))
    add(Case("hardlink-through-symlink", [base, tar(sym("e", "/etc"), hl("hl", "e/passwd"))],
             error="UnsafePathError", names="does not exist"))
    add(Case("hardlink-through-symlink-lower", [base, tar(sym("e", "etc")), tar(hl("hl", "e/passwd"))],
             error="UnsafePathError", names="does not exist"))
    add(Case("hardlink-to-itself", [tar(hl("me", "me"))], error="UnsafePathError", names="me"))
    add(Case("hardlink-to-whited-out-lower", [base, tar(hl("keep", "etc/passwd")), tar(wh("etc/passwd"))],
             exists=["keep:root:x:0:0\n"], absent=["etc/passwd"]))

    # -- whiteouts --------------------------------------------------------------------------------
    add(Case("whiteout-dot", [base, tar(M(".wh..", data=b""))], error="UnsafePathError", names=".wh.."))
    add(Case("whiteout-dot-in-dir", [base, tar(M("etc/.wh..", data=b""))], error="UnsafePathError", names="etc/.wh.."))
    add(Case("whiteout-empty-name", [base, tar(M("etc/.wh.", data=b""))], error="UnsafePathError", names="etc/.wh."))
    add(Case("whiteout-dotdot-name", [base, tar(M("etc/.wh...", data=b""))], error="UnsafePathError", names="etc/.wh..."))
    add(Case("whiteout-escape-via-dotdot", [base, tar(M("../.wh.etc", data=b""))], error="UnsafePathError", names="../.wh.etc"))
    add(Case("whiteout-through-symlink", [base, tar(sym("e", "/etc")), tar(wh("e/passwd"))],
             exists=["etc/passwd", "e"]))
    add(Case("whiteout-below-whiteout-name", [base, tar(f(".wh.x/y", "y"))], error="UnsafePathError", names=".wh.x/y"))
    add(Case("whiteout-meta-ignored", [base, tar(f(".wh..wh.plnk", ""), f("etc/.wh..wh.aufs", ""))],
             exists=["etc/passwd"], absent=[".wh..wh.plnk", "etc/.wh..wh.aufs"]))
    add(Case("opaque-at-root", [base, tar(opq("."), f("new", "n"))], exists=["new:n"], absent=["etc", "tmp"]))
    add(Case("opaque-on-file", [base, tar(opq("etc/passwd"))], exists=["etc/passwd"]))
    add(Case("opaque-on-missing-dir", [base, tar(opq("nodir"))], exists=["etc/passwd"], absent=["nodir"]))
    add(Case("opaque-through-symlink", [base, tar(sym("e", "etc")), tar(opq("e"))], exists=["etc/passwd"]))
    add(Case("whiteout-of-whole-root-dir", [base, tar(wh("etc"))], exists=["tmp"], absent=["etc", "etc/passwd"]))

    # -- tar format abuse -------------------------------------------------------------------------
    add(Case("pax-path-override", [raw_tar(pax_member(pax_record("path", "real/name"), raw_header(b"decoy", size=1), b"x"))],
             exists=["real/name:x"], absent=["decoy"]))
    add(Case("pax-path-override-escape", [raw_tar(pax_member(pax_record("path", "../../pax-escape"), raw_header(b"decoy")))],
             error="UnsafePathError", names="pax-escape"))
    add(Case("pax-linkpath-escape", [raw_tar(pax_member(pax_record("linkpath", "../../../etc/shadow"),
                                                        raw_header(b"lnk", type=b"1", linkname=b"ok")))],
             error="UnsafePathError", names="shadow"))
    add(Case("pax-size-override", [raw_tar(pax_member(pax_record("size", "3"), raw_header(b"sz", size=0), b"abc"))],
             exists=["sz:abc"]))
    add(Case("pax-size-negative", [raw_tar(pax_member(pax_record("size", "-5"), raw_header(b"neg")))],
             error="TarFormatError", names="neg"))
    add(Case("pax-size-huge", [raw_tar(pax_member(pax_record("size", str(1 << 70)), raw_header(b"huge")))],
             error="TarFormatError", names="huge"))
    add(Case("negative-size-base256", [raw_tar(raw_header(b"neg256", size=b"\xff" * 12))], error="TarFormatError", names="neg256"))
    add(Case("size-beyond-data", [raw_tar(raw_header(b"big", size=1 << 20), end=False)], error="TarFormatError", names="truncated"))
    add(Case("truncated-header", [raw_header(b"cut")[:300]], error="TarFormatError", names="truncated"))
    add(Case("garbage", [b"\x01" * 1024], error="TarFormatError", names="checksum"))
    add(Case("duplicate-pax-headers", [raw_tar(raw_header(b"PaxHeader", type=b"x", size=512) + _pad(pax_record("path", "a")),
                                               pax_member(pax_record("path", "b"), raw_header(b"c")))],
             error="TarFormatError", names="two PAX"))

    # -- privileged bits and devices ---------------------------------------------------------------
    add(Case("device-nodes", [tar(d("dev"), dev("dev/null"), dev("dev/sda", "b", 8, 0), fifo("dev/fifo"))],
             exists=["dev/null", "dev/sda", "dev/fifo"], rootless_absent=["dev/null", "dev/sda"]))
    add(Case("setuid-and-capability", [tar(d("bin"), f("bin/su", "su", 0o4755),
                                           f("bin/ping", "ping", 0o755, pax={"SCHILY.xattr.security.capability":
                                                                             CAP_NET_RAW}))],
             exists=["bin/su:su", "bin/ping:ping"]))
    # duplicates: last wins, earlier content never surfaces
    add(Case("duplicate-last-wins", [tar(f("dup", "first"), f("dup", "second"))], exists=["dup:second"]))
    add(Case("file-over-dir-same-layer", [tar(d("x"), f("x/in", "i"), f("x", "file"))], exists=["x:file"], absent=["x/in"]))
    add(Case("file-then-child-same-layer", [tar(f("fc", "file"), f("fc/child", "c"))], error="UnsafePathError", names="fc/child"))
    add(Case("root-as-file", [tar(f(".", "x"))], error="UnsafePathError", names="root"))
    return C


CASES = _cases()
