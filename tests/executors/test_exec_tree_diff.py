"""Specification of the change computations: before/after tree comparison, the overlay upper dir
reader and the per-layer overlay snapshots, on real trees (tmpfs)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from exec_helpers import make_write_layer

from layerkit.build.executors.overlay_diff import LowerView, overlay_changes
from layerkit.build.executors.snapshots import OPAQUE_XATTR, extract_overlay_layer
from layerkit.build.executors.tree_diff import ChangeSet, diff_trees, fs_clock_ns
from layerkit.store import open_store
from layerkit.tarfs.compression import open_decompressed
from layerkit.tarfs.entry import Entry, EntryType
from layerkit.tarfs.writer import LayerWriter

CAP = bytes.fromhex("0100000200200000000000000000000000000000")


@pytest.fixture
def shm() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lk-exec-diff-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _tree(root: Path) -> None:
    (root / "etc/apk").mkdir(parents=True)
    (root / "etc/apk/keys").write_text("k")
    (root / "etc/motd").write_text("hello")
    (root / "etc/profile").write_text("export A=1\n")
    (root / "etc/shells").write_text("/bin/sh\n")
    (root / "opt").mkdir()
    (root / "opt/tool").write_text("tool")
    (root / "bin").mkdir()
    (root / "bin/busybox").write_bytes(b"\x7fELF" + bytes(100))
    (root / "bin/sh").symlink_to("busybox")


def _copy(before: Path, after: Path) -> int:
    """Copy the tree as an executor does; returns ``since_ns`` as the executor takes it."""
    shutil.copytree(before, after, symlinks=True, copy_function=shutil.copy2)
    return fs_clock_ns(after.parent)


def _paths(cs: ChangeSet) -> dict[str, Entry]:
    return {e.path: e for e, _ in cs.entries()}


def test_tree_diff_reports_adds_changes_deletes_and_parents(shm: Path) -> None:
    before, after = shm / "before", shm / "after"
    _tree(before)
    since = _copy(before, after)
    (after / "etc/motd").unlink()
    with open(after / "etc/profile", "a") as f:
        f.write("export B=2\n")
    shutil.rmtree(after / "opt")
    (after / "etc/shells").unlink()
    (after / "etc/shells").mkdir()
    (after / "etc/shells/f").write_text("in")
    (after / "new").mkdir()
    (after / "new/file").write_text("x")
    os.link(after / "new/file", after / "new/link")
    os.mkfifo(after / "fifo")
    (after / "bin/busybox").chmod(0o4755)
    os.setxattr(after / "bin/busybox", "security.capability", CAP)
    got = _paths(diff_trees(str(before), str(after), since_ns=since))
    assert set(got) == {"bin", "bin/busybox", "etc", "etc/.wh.motd", "etc/profile", "etc/shells", "etc/shells/f",
                        "fifo", "new", "new/file", "new/link", ".wh.opt"}
    assert got["bin/busybox"].mode == 0o4755 and got["bin/busybox"].xattrs == {"security.capability": CAP}
    assert got["new/link"].type is EntryType.HARDLINK and got["new/link"].linkname == "new/file"
    assert got["fifo"].type is EntryType.FIFO and got["etc/shells"].type is EntryType.DIR
    # unchanged siblings are not there, parents of changes are
    assert "etc/apk" not in got and "bin/sh" not in got and got["etc"].type is EntryType.DIR


def test_tree_diff_compares_content_when_only_ctime_moved(shm: Path) -> None:
    """A rewrite that keeps size and mtime is still a change (content hashed when in doubt)."""
    before, after = shm / "before", shm / "after"
    _tree(before)
    since = _copy(before, after)
    target = after / "etc/profile"
    st = target.stat()
    target.write_text("export Z=1\n")  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    untouched_rewrite = after / "opt/tool"
    st = untouched_rewrite.stat()
    untouched_rewrite.write_text("tool")  # same bytes: no change
    os.utime(untouched_rewrite, ns=(st.st_atime_ns, st.st_mtime_ns))
    got = _paths(diff_trees(str(before), str(after), since_ns=since))
    assert "etc/profile" in got and "opt/tool" not in got


def test_tree_diff_type_swap_and_link_to_unchanged_file(shm: Path) -> None:
    before, after = shm / "before", shm / "after"
    _tree(before)
    since = _copy(before, after)
    shutil.rmtree(after / "etc/apk")
    (after / "etc/apk").write_text("now a file")
    os.link(after / "opt/tool", after / "tool-link")  # a link to a file the step did not change
    got = _paths(diff_trees(str(before), str(after), since_ns=since))
    assert got["etc/apk"].type is EntryType.FILE and "etc/.wh.apk" not in got
    # the link group stays whole: the first path in layer order holds the bytes
    assert got["opt/tool"].type is EntryType.FILE
    assert got["tool-link"].type is EntryType.HARDLINK and got["tool-link"].linkname == "opt/tool"


def test_change_set_writes_a_layer_in_canonical_order(shm: Path) -> None:
    before, after = shm / "before", shm / "after"
    _tree(before)
    since = _copy(before, after)
    (after / "zz").write_text("z")
    (after / "etc/motd").unlink()
    (after / "a").mkdir()
    store = open_store(shm / "home")
    result = make_write_layer(store)(diff_trees(str(before), str(after), since_ns=since).write)
    from layerkit.tarfs.reader import iter_layer

    with store.open_blob(result.digest) as f:
        names = [e.path for e, _ in iter_layer(f)]
    assert names == ["a", "etc", "etc/.wh.motd", "zz"]


def test_overlay_upper_dir_in_oci_form(shm: Path) -> None:
    """Whiteout devices (one shared inode, as the kernel makes them), opaque dirs, unchanged copy-ups."""
    lower, upper = shm / "lower", shm / "upper"
    _tree(lower)
    (upper / "etc/apk").mkdir(parents=True)
    os.setxattr(upper / "etc/apk", OPAQUE_XATTR, b"y")
    (upper / "etc/apk/new").write_text("n")
    os.mknod(upper / "etc/motd", stat.S_IFCHR | 0o000, 0)
    os.link(upper / "etc/motd", upper / "etc/shells")  # whiteouts may share an inode
    shutil.copy2(lower / "etc/profile", upper / "etc/profile")  # copy-up that changed nothing
    shutil.copystat(lower / "etc", upper / "etc")
    os.chown(upper / "etc/profile", os.stat(lower / "etc/profile").st_uid, os.stat(lower / "etc/profile").st_gid)
    (upper / "opt").mkdir()
    shutil.copy2(lower / "opt/tool", upper / "opt/tool")
    os.chmod(upper / "opt/tool", 0o700)  # a real change by metadata only
    shutil.copystat(lower / "opt", upper / "opt")
    got = _paths(overlay_changes(upper, [lower]))
    assert set(got) == {"etc", "etc/.wh.motd", "etc/.wh.shells", "etc/apk", "etc/apk/.wh..wh..opq", "etc/apk/new",
                        "opt", "opt/tool"}
    assert got["opt/tool"].mode == 0o700 and OPAQUE_XATTR not in got["etc/apk"].xattrs


def test_lower_view_respects_whiteouts_and_opaque_dirs(shm: Path) -> None:
    old, mid, top = shm / "old", shm / "mid", shm / "top"
    for d in (old, mid, top):
        (d / "a").mkdir(parents=True)
    (old / "a/x").write_text("old")
    (old / "a/y").write_text("old")
    (old / "b").write_text("old")
    os.setxattr(mid / "a", OPAQUE_XATTR, b"y")
    (mid / "a/y").write_text("mid")
    os.mknod(top / "b", stat.S_IFCHR, 0)
    view = LowerView([top, mid, old])
    assert view.lookup("a/x") is None  # hidden by mid's opaque dir
    found = view.lookup("a/y")
    assert found is not None and Path(found[0]).read_text() == "mid"
    assert view.lookup("b") is None


def test_snapshot_extraction_writes_overlay_form(shm: Path) -> None:
    store = open_store(shm / "home")

    def fill(writer: LayerWriter) -> None:
        writer.add(Entry("etc", EntryType.DIR, mode=0o755))
        writer.add_whiteout("etc/motd")
        writer.add(Entry("var", EntryType.DIR, mode=0o755))
        writer.add_opaque("var")
        data = b"#!/bin/sh\n"
        writer.add(Entry("usr/bin/cap", EntryType.FILE, mode=0o4755, uid=7, gid=8, size=len(data),
                         xattrs={"security.capability": CAP}), io.BytesIO(data))
        writer.add(Entry("usr/bin/cap2", EntryType.HARDLINK, linkname="usr/bin/cap"))

    result = make_write_layer(store)(fill)
    target = shm / "snap"
    target.mkdir()
    extract_overlay_layer(open_decompressed(store.open_blob(result.digest)), str(target))
    wh = os.lstat(target / "etc/motd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(target / "var", OPAQUE_XATTR) == b"y"
    st = os.lstat(target / "usr/bin/cap")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink) == (0o4755, 7, 8, 2)
    assert os.getxattr(target / "usr/bin/cap", "security.capability") == CAP
