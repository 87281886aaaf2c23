"""unpack / apply_layer / SafeRoot: metadata, policy, hard links, failure modes, both resolvers."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import CAP_NET_RAW, TarLayer, d, dev, f, fifo, hl, opq, sym, tar, wh

from layerkit.errors import LayerError, UnsafePathError
from layerkit.union import Union
from layerkit.union.safefs import SafeRoot, openat2_available
from layerkit.union.unpack import apply_layer, unpack

NS = 1_700_000_000_123_456_789


@pytest.fixture
def shm() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="lk-unpack-", dir="/dev/shm"))
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=True)


def layers(*blobs: bytes) -> list[TarLayer]:
    return [TarLayer(b, f"L{i}") for i, b in enumerate(blobs)]


RICH = tar(
    d("bin"),
    f("bin/su", "su", 0o4755, uid=0, gid=0),
    f("bin/ping", "ping", 0o755, pax={"SCHILY.xattr.security.capability": CAP_NET_RAW}),
    d("home", 0o755),
    d("home/u", 0o700, uid=1000, gid=1000),
    f("home/u/notes", "n", 0o600, uid=1000, gid=1000, pax={"mtime": "1700000000.123456789"}),
    sym("home/u/link", "notes", uid=1000, gid=1000),
    d("ro", 0o555),
    f("ro/inside", "x", 0o444),
    d("dev"),
    dev("dev/null"),
    fifo("dev/fifo"),
    f("data", "shared"),
    hl("data-link", "data"),
)


def test_unpack_restores_owners_modes_setuid_xattrs_and_ns_times(shm: Path) -> None:
    r = unpack(layers(RICH), shm / "root")
    root = shm / "root"
    su = (root / "bin/su").stat()
    assert stat.S_IMODE(su.st_mode) == 0o4755
    assert os.getxattr(root / "bin/ping", "security.capability") == CAP_NET_RAW.encode()
    notes = (root / "home/u/notes").stat()
    assert (notes.st_uid, notes.st_gid, stat.S_IMODE(notes.st_mode)) == (1000, 1000, 0o600)
    assert notes.st_mtime_ns == 1_700_000_000_123_456_789
    link = (root / "home/u/link").lstat()
    assert (link.st_uid, os.readlink(root / "home/u/link")) == (1000, "notes")
    assert stat.S_IMODE((root / "ro").stat().st_mode) == 0o555  # applied after its contents
    assert (root / "ro/inside").read_text() == "x"
    assert stat.S_ISCHR((root / "dev/null").lstat().st_mode)
    assert stat.S_ISFIFO((root / "dev/fifo").lstat().st_mode)
    assert (root / "data").stat().st_ino == (root / "data-link").stat().st_ino
    assert (r.files, r.hardlinks, r.specials, r.symlinks) == (5, 1, 2, 1)
    assert r.skipped == []


@pytest.mark.skipif(os.geteuid() != 0, reason="owners other than the caller's need root")
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "index-first"])
def test_owners_are_exact_in_a_setgid_target_whose_group_new_entries_inherit(shm: Path, streamed: bool) -> None:
    # entries wanting root:root are not chowned when new entries already get root:root; in a setgid
    # target they get the target's group instead, so there every owner is set
    target = shm / "sgid"
    target.mkdir()
    os.chown(target, 0, 4242)
    target.chmod(0o2775)
    blob = tar(d("etc"), f("etc/conf", "c"), sym("link", "etc/conf"), f("top", "t"), fifo("pipe"),
               f("etc/mine", "m", uid=1000, gid=1000))
    unpack(layers(blob) if streamed else Union(layers(blob)), target)
    owners = {p: (os.lstat(target / p).st_uid, os.lstat(target / p).st_gid)
              for p in ("etc", "etc/conf", "link", "top", "pipe", "etc/mine")}
    assert owners == {"etc": (0, 0), "etc/conf": (0, 0), "link": (0, 0), "top": (0, 0), "pipe": (0, 0),
                      "etc/mine": (1000, 1000)}
    assert (os.stat(target).st_uid, os.stat(target).st_gid) == (0, 0)  # the root's own entry: implied root:root


def test_no_privileged_bits_strips_setuid_and_capabilities(shm: Path) -> None:
    r = unpack(layers(RICH), shm / "root", no_privileged_bits=True)
    assert stat.S_IMODE((shm / "root/bin/su").stat().st_mode) == 0o755
    with pytest.raises(OSError):
        os.getxattr(shm / "root/bin/ping", "security.capability")
    assert any("security.capability" in s.reason for s in r.skipped)


def test_rootless_keeps_caller_ownership_and_skips_devices(shm: Path) -> None:
    r = unpack(layers(RICH), shm / "root", rootless=True)
    assert (shm / "root/home/u/notes").stat().st_uid == os.getuid()
    assert not (shm / "root/dev/null").exists()
    assert [s.path for s in r.skipped if "device" in s.reason] == ["/dev/null"]


def test_every_survivor_written_once_and_every_layer_read_once(shm: Path) -> None:
    opened: list[int] = []

    class Counting(TarLayer):
        def open_tar(self):  # type: ignore[no-untyped-def]
            opened.append(int(self.id[1:]))
            return super().open_tar()

    blobs = [tar(d("a"), f("a/old", "old")), tar(f("a/new", "new")), tar(wh("a/old"))]
    r = unpack([Counting(b, f"L{i}") for i, b in enumerate(blobs)], shm / "root")
    assert sorted(os.listdir(shm / "root/a")) == ["new"]
    assert r.files == 1
    assert opened == [2, 1, 0]  # one pass, newest first: every layer read exactly once


def test_hard_link_to_hidden_lower_file_gets_the_content(shm: Path) -> None:
    blobs = [tar(f("orig", "payload")), tar(hl("l1", "orig"), hl("l2", "orig")), tar(wh("orig"))]
    unpack(layers(*blobs), shm / "root")
    root = shm / "root"
    assert not (root / "orig").exists()
    assert (root / "l1").read_text() == "payload"
    assert (root / "l1").stat().st_ino == (root / "l2").stat().st_ino


def test_target_must_be_empty(shm: Path) -> None:
    (shm / "full").mkdir()
    (shm / "full" / "x").write_text("x")
    with pytest.raises(LayerError, match="not empty"):
        unpack(layers(RICH), shm / "full")


def test_target_symlink_is_refused(shm: Path) -> None:
    (shm / "real").mkdir()
    (shm / "lnk").symlink_to("real")
    with pytest.raises(LayerError, match="not a directory"):
        unpack(layers(RICH), shm / "lnk")


def test_refusal_names_layer_and_entry(shm: Path) -> None:
    with pytest.raises(UnsafePathError) as info:
        unpack(layers(tar(f("ok", "1")), tar(sym("s", "/etc"), f("s/shadow", "x"))), shm / "root")
    assert info.value.member == "s/shadow"
    assert info.value.layer == "1 (L1)"


def test_unpack_accepts_a_ready_union(shm: Path) -> None:
    u = Union(layers(RICH))
    unpack(u, shm / "root")
    assert (shm / "root/data").read_text() == "shared"


# -- apply_layer -------------------------------------------------------------------------------


def test_apply_layer_matches_unpack_for_whiteouts_opaques_and_swaps(shm: Path) -> None:
    blobs = [
        tar(d("etc"), f("etc/a", "a"), f("etc/b", "b"), d("opt"), f("opt/x", "x"), f("swap", "file"), d("dir2file")),
        tar(wh("etc/a"), d("opt"), opq("opt"), f("opt/y", "y"), d("swap"), f("swap/in", "i"), f("dir2file", "now file")),
        tar(f("etc/a", "back"), wh("opt/y"), f("opt/z", "z")),
    ]
    unpack(layers(*blobs), shm / "top-down")
    for i, b in enumerate(blobs):
        apply_layer(io.BytesIO(b), shm / "bottom-up", layer=f"L{i}")
    out = subprocess.run(["diff", "-r", "--no-dereference", str(shm / "top-down"), str(shm / "bottom-up")],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert sorted(os.listdir(shm / "top-down/opt")) == ["z"]
    assert (shm / "top-down/etc/a").read_text() == "back"


def test_apply_layer_whiteout_after_same_layer_entry_keeps_it(shm: Path) -> None:
    apply_layer(io.BytesIO(tar(d("d"), f("d/old", "o"))), shm / "t")
    apply_layer(io.BytesIO(tar(d("d"), f("d/new", "n"), opq("d"), f("x", "x"), wh("x"))), shm / "t")
    assert sorted(os.listdir(shm / "t/d")) == ["new"]
    assert (shm / "t/x").read_text() == "x"


# -- SafeRoot ----------------------------------------------------------------------------------

RESOLVERS = [pytest.param(True, id="openat2"), pytest.param(False, id="manual-walk")]


@pytest.mark.parametrize("openat2", RESOLVERS)
def test_saferoot_in_root_follows_symlinks_inside_the_root(shm: Path, openat2: bool) -> None:
    if openat2 and not openat2_available():
        pytest.skip("kernel without openat2 (< 5.6)")
    (shm / "root").mkdir()
    (shm / "outside").mkdir()
    with SafeRoot(shm / "root", use_openat2=openat2) as r:
        r.mkdir("etc")
        r.symlink("abs", "/etc")
        r.symlink("up", "../../../../etc")
        r.symlink("escape", str(shm / "outside"))
        r.write_file("abs/one", io.BytesIO(b"1"))
        r.write_file("up/two", io.BytesIO(b"2"))
        r.write_file("../../three", io.BytesIO(b"3"))
        with pytest.raises(FileNotFoundError):  # resolved as <root>/dev/shm/.../outside: absent
            r.write_file("escape/four", io.BytesIO(b"4"))
    assert sorted(os.listdir(shm / "root/etc")) == ["one", "two"]
    assert (shm / "root/three").read_text() == "3"
    assert os.listdir(shm / "outside") == []


def test_saferoot_never_mode_refuses_any_symlink_or_dotdot(shm: Path) -> None:
    (shm / "root").mkdir()
    (shm / "outside").mkdir()
    with SafeRoot(shm / "root", resolve="never") as r:
        r.mkdir("etc")
        r.mkdir("etc/a")
        r.symlink("lnk", "etc")
        r.symlink("etc/a/out", str(shm / "outside"))
        r.write_file("etc/a/f", io.BytesIO(b"f"))
        with pytest.raises(UnsafePathError, match="symlink"):
            r.write_file("lnk/x", io.BytesIO(b""))
        with pytest.raises(UnsafePathError, match="symlink"):  # deep, and below the cached parent
            r.write_file("etc/a/out/x", io.BytesIO(b""))
        with pytest.raises(UnsafePathError, match="symlink"):  # deep, from the root
            r.mkdir("etc/a/out/b/c")
        with pytest.raises(NotADirectoryError):  # a file in the way is the kernel's error, not a refusal
            r.write_file("etc/a/f/x", io.BytesIO(b""))
        with pytest.raises(UnsafePathError, match=r"'\.\.'"):
            r.mkdir("etc/../y")
        with pytest.raises(UnsafePathError, match="root itself"):
            r.remove("/")
    assert os.listdir(shm / "outside") == []


def test_saferoot_never_mode_does_not_import_ctypes(shm: Path) -> None:
    """openat2 is only called (through ctypes) to follow symlinks inside the root; an unpack follows none."""
    code = (
        "import io, sys\n"
        "from layerkit.union.safefs import SafeRoot\n"
        f"with SafeRoot({str(shm)!r}, resolve='never') as r:\n"
        "    r.mkdir('a'); r.mkdir('a/b'); r.write_file('a/b/c', io.BytesIO(b'x'))\n"
        "assert 'ctypes' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (shm / "a/b/c").read_bytes() == b"x"


def test_saferoot_set_attrs_resolves_once_and_never_follows_the_last_symlink(shm: Path) -> None:
    (shm / "root").mkdir()
    victim = shm / "victim"
    victim.write_text("v")
    victim.chmod(0o600)
    with SafeRoot(shm / "root", resolve="never") as r:
        r.mkdir("d", 0o700)
        r.symlink("d/s", str(victim))
        r.set_attrs("d/s", owner=(1234, 1234), mode=None, mtime_ns=NS)
        with pytest.raises((OSError, ValueError)):  # a mode for a symlink: refused (Python: ValueError), not followed
            r.set_attrs("d/s", owner=None, mode=0o777, mtime_ns=0)
        with pytest.raises(OSError):
            r.create_file("d/s")  # O_EXCL | O_NOFOLLOW: never truncates through the link
        r.set_attrs("d", owner=(1234, 4321), mode=0o2755, mtime_ns=NS)
        r.set_attrs("", owner=None, mode=0o711, mtime_ns=NS)  # the root itself
    d, s, root = (shm / "root/d").lstat(), (shm / "root/d/s").lstat(), (shm / "root").lstat()
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode), d.st_mtime_ns) == (1234, 4321, 0o2755, NS)
    assert (s.st_uid, s.st_mtime_ns) == (1234, NS)
    assert (stat.S_IMODE(root.st_mode), root.st_mtime_ns) == (0o711, NS)
    st = victim.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode), victim.read_text()) == (0, 0o600, "v")


def test_saferoot_hard_link_target_must_be_a_regular_file_inside(shm: Path) -> None:
    (shm / "root").mkdir()
    with SafeRoot(shm / "root") as r:
        r.symlink("s", "/etc/passwd")
        with pytest.raises(UnsafePathError, match="symlink"):
            r.link("h", "s")
        with pytest.raises(UnsafePathError, match="does not exist"):
            r.link("h", "missing")


def test_saferoot_removes_deep_trees_without_recursion(shm: Path) -> None:
    (shm / "root").mkdir()
    with SafeRoot(shm / "root", resolve="never") as r:
        path = ""
        for _ in range(1500):
            path = f"{path}/n" if path else "n"
            r.mkdir(path)
        r.symlink(path + "/out", str(shm))
        assert r.remove("n")
    assert os.listdir(shm / "root") == []
    assert (shm / "root").exists()
