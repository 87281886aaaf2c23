"""A COPY/ADD/WORKDIR step writes its layer's snapshot while it writes the layer, so the RUN after
it finds its lower dir ready instead of unpacking the layer. That is only a shortcut: the staged
snapshot must be exactly what unpacking the layer gives (types, modes, owners, times, xattrs, hard
links, whiteouts, opaque markers), and it must never share an inode with a context file."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerkit.build.builder import build
from layerkit.build.executors.snapshots import Snapshots, extract_overlay_layer
from layerkit.errors import LayerError
from layerkit.mediatypes import Compression
from layerkit.spec import chain_ids
from layerkit.store import LocalStore, open_store
from layerkit.tarfs.entry import Entry, EntryType
from layerkit.tarfs.writer import LayerResult, LayerWriter

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners, device nodes and trusted xattrs need root")

MTIME = 1_700_000_000_123_456_789  # sub-second: kept through PAX


@pytest.fixture
def scratch() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="lk-exec-copysnap-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path below ``root`` with what a lower dir shows of it; hard links as groups. Every
    lstat comes before any read (reading changes atimes)."""
    stats: dict[str, os.stat_result] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            host = os.path.join(top, name)
            stats[os.path.relpath(host, root)] = os.lstat(host)
    out: dict[str, tuple[Any, ...]] = {}
    inodes: dict[int, str] = {}
    for rel in sorted(stats):
        st = stats[rel]
        host = os.path.join(root, rel)
        xattrs = {k: os.getxattr(host, k, follow_symlinks=False) for k in os.listxattr(host, follow_symlinks=False)}
        content = link = ""
        if stat.S_ISREG(st.st_mode):
            content = hashlib.sha256(Path(host).read_bytes()).hexdigest()
            link = inodes.setdefault(st.st_ino, rel)  # the first name of the inode
        elif stat.S_ISLNK(st.st_mode):
            link = os.readlink(host)
        mtime, atime, size = st.st_mtime_ns, st.st_atime_ns, st.st_size
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            atime = None  # changed by walking them
        if stat.S_ISDIR(st.st_mode):
            size = None  # the filesystem's business
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            mtime = atime = None  # a whiteout: made now, and never shown by overlayfs
        out[rel] = (st.st_mode, st.st_uid, st.st_gid, size, mtime, atime, st.st_rdev, st.st_nlink,
                    link, content, xattrs)
    return out


def _source_tree(src: Path) -> None:
    (src / "d" / "sub").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"hello\n")
    (src / "d" / "big").write_bytes(os.urandom(3 << 20))  # several writer buffers
    (src / "d" / "empty").write_bytes(b"")
    os.link(src / "d" / "f", src / "d" / "f-link")
    (src / "d" / "sym").symlink_to("f")
    os.mkfifo(src / "d" / "fifo", 0o640)
    os.mknod(src / "d" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (src / "d" / "suid").write_bytes(b"#!/bin/sh\n")
    os.chown(src / "d" / "suid", 1000, 1001)
    os.chmod(src / "d" / "suid", 0o4755)
    os.setxattr(src / "d" / "f", "user.note", b"\x00binary\xff")
    os.setxattr(src / "d" / "sub", "trusted.keep", b"1")
    os.chmod(src / "d" / "sub", 0o2750)
    long = src / "d" / ("n" * 120 + "-ünïcode")
    long.write_bytes(b"long name\n")
    for p in [*src.rglob("*"), src]:
        os.utime(p, ns=(MTIME, MTIME), follow_symlinks=False)


def _entries(src: Path) -> list[tuple[Entry, Any]]:
    """What a step hands the layer writer: host files, hard links, streams, whiteouts, a path
    written twice (a later entry replaces an earlier one, as unpacking does)."""
    from layerkit.tarfs.tree import walk_tree

    out: list[tuple[Entry, Any]] = []
    seen: dict[int, str] = {}
    for entry, host in walk_tree(str(src)):
        if entry.path == ".":
            continue
        if entry.is_file():
            ino = os.lstat(host).st_ino
            if ino in seen:
                entry.type, entry.linkname, entry.size = EntryType.HARDLINK, seen[ino], 0
            else:
                seen[ino] = entry.path
        out.append((entry, host if entry.is_file() else None))
    out.append((Entry("d/stream", EntryType.FILE, 0o600, 5, 6, size=4, mtime_ns=MTIME + 7), io.BytesIO(b"data")))
    out.append((Entry("d/again", EntryType.FILE, 0o644, size=1, mtime_ns=MTIME), io.BytesIO(b"1")))
    out.append((Entry("d/again", EntryType.DIR, 0o711, mtime_ns=MTIME), None))
    out.append((Entry("d/again/in", EntryType.FILE, 0o644, size=2, mtime_ns=MTIME), io.BytesIO(b"in")))
    out.append((Entry("w", EntryType.DIR, 0o755, mtime_ns=MTIME), None))  # a layer names every parent
    out.append((Entry("w/.wh.gone", EntryType.FILE, 0o644, size=3, mtime_ns=MTIME), io.BytesIO(b"abc")))
    out.append((Entry("w/.wh..wh..opq", EntryType.FILE, 0o644, mtime_ns=MTIME), None))
    out.append((Entry("w/later", EntryType.FILE, 0o644, size=0, mtime_ns=2 * MTIME), None))
    return out


def _write(store: LocalStore, entries: list[tuple[Entry, Any]], epoch: int | None, *,
           tee: Any = None) -> LayerResult:
    with store.blob_writer() as sink:
        writer = LayerWriter(sink, Compression.GZIP, source_date_epoch=epoch)
        out = writer if tee is None else tee(writer)
        for entry, content in entries:
            if isinstance(content, str):
                out.add_file_from_path(entry, content)
            else:
                out.add(entry, content)
        result = writer.close()
        sink.commit(result.digest, result.size)
    return result


@pytest.mark.parametrize("epoch", [None, 1_600_000_000], ids=["no-epoch", "clamped"])
def test_a_staged_snapshot_is_what_unpacking_its_layer_gives(scratch: Path, epoch: int | None) -> None:
    src = scratch / "src"
    _source_tree(src)
    store = open_store(scratch / "home")
    snaps = Snapshots(store)
    staged = snaps.stage(None if epoch is None else epoch * 1_000_000_000)
    result = _write(store, _entries(src), epoch, tee=staged.tee)
    chain = str(chain_ids([result.diff_id])[-1])
    assert staged.commit(chain)

    unpacked = scratch / "unpacked"
    unpacked.mkdir()
    with open(store.blob_path(result.digest), "rb") as blob:
        from layerkit.tarfs.compression import open_decompressed

        extract_overlay_layer(open_decompressed(blob), str(unpacked))
    got, want = _tree(snaps.path(chain)), _tree(unpacked)
    assert got.keys() == want.keys()
    for path in want:
        assert got[path] == want[path], path
    # what the comparison covers is really there
    assert stat.S_ISCHR(got["w/gone"][0]) and got["w/gone"][6] == 0  # whiteout
    assert got["w"][10].get("trusted.overlay.opaque") == b"y"
    assert got["d/f-link"][7] == 2 and got["d/f-link"][8] == "d/f"
    assert stat.S_IMODE(got["d/suid"][0]) == 0o4755 and got["d/suid"][1:3] == (1000, 1001)
    assert stat.S_ISDIR(got["d/again"][0]) and "d/again/in" in got


def test_a_staged_snapshot_shares_no_inode_with_the_context(scratch: Path) -> None:
    src = scratch / "src"
    _source_tree(src)
    store = open_store(scratch / "home")
    snaps = Snapshots(store)
    staged = snaps.stage(None)
    result = _write(store, _entries(src), None, tee=staged.tee)
    chain = str(chain_ids([result.diff_id])[-1])
    assert staged.commit(chain)
    copy = snaps.path(chain) / "d" / "f"
    assert os.lstat(copy).st_ino != os.lstat(src / "d" / "f").st_ino
    with open(src / "d" / "f", "r+b") as f:  # in place: a hard link would show it
        f.write(b"HELLO")
    assert copy.read_bytes() == b"hello\n"


def test_a_file_that_shrinks_fails_the_layer_as_without_a_snapshot(scratch: Path) -> None:
    src = scratch / "f"
    src.write_bytes(b"short")
    store = open_store(scratch / "home")
    staged = Snapshots(store).stage(None)
    entry = Entry("f", EntryType.FILE, 0o644, size=100)
    with pytest.raises(LayerError, match="shrank"):
        _write(store, [(entry, str(src))], None, tee=staged.tee)
    staged.discard()
    assert not staged.dir.exists()


def test_an_entry_unpacking_would_refuse_drops_only_the_snapshot(scratch: Path) -> None:
    """A file below a symlink (an ADDed archive may hold one): the layer is written, no snapshot."""
    store = open_store(scratch / "home")
    staged = Snapshots(store).stage(None)
    entries = [(Entry("a", EntryType.SYMLINK, 0o777, linkname="/etc"), None),
               (Entry("a/passwd", EntryType.FILE, 0o644, size=2), io.BytesIO(b"x\n"))]
    plain = _write(store, entries[:1] + [(entries[1][0], io.BytesIO(b"x\n"))], None)
    result = _write(store, [(entries[0][0], None), (entries[1][0], io.BytesIO(b"x\n"))], None, tee=staged.tee)
    assert result.diff_id == plain.diff_id
    assert not staged.commit(str(chain_ids([result.diff_id])[-1]))
    assert not staged.dir.exists()


def test_a_build_stages_each_copy_snapshot_a_later_run_uses(
    scratch: Path, layerkit_home: Path, alpine_image_oci: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unpacked_layers: list[str] = []
    unpack = Snapshots._unpack
    monkeypatch.setattr(Snapshots, "_unpack", lambda self, layer, final: (unpacked_layers.append(str(layer.diff_id)),
                                                                          unpack(self, layer, final)))
    ctx = scratch / "ctx"
    (ctx / "app" / "lib").mkdir(parents=True)
    (ctx / "app" / "main.py").write_text("print('hi')\n")
    (ctx / "app" / "lib" / "util.py").write_text("x = 1\n")
    (ctx / "app" / "skip.log").write_text("no\n")
    os.link(ctx / "app" / "main.py", ctx / "app" / "main-link.py")
    (ctx / "Dockerfile").write_text(
        f"FROM oci:{alpine_image_oci}:3.20\n"
        "WORKDIR /srv/work\n"
        "COPY --chown=10:20 --chmod=640 --exclude=*.log app /srv/app\n"
        "COPY --link --parents app/lib/*.py /opt/\n"
        "ADD <<EOF /srv/inline.txt\nhello\nEOF\n"
        "RUN cat /srv/app/main.py /opt/app/lib/util.py /srv/inline.txt > /srv/out && ls -ln /srv/app >> /srv/out\n"
    )
    result = build(ctx, home=layerkit_home, executor="native", network="none", source_date_epoch=1_600_000_000)
    image = result.image
    store = open_store(layerkit_home)
    snaps = Snapshots(store)
    ids = image.chain_ids()
    base = open_image_layers(alpine_image_oci)
    assert len(image.layers) == len(base) + 5
    assert unpacked_layers == [str(layer.diff_id) for layer in base]  # the RUN unpacked no COPY layer
    (ctx / "app" / "main.py").write_text("changed after the build\n")
    for layer, chain in list(zip(image.layers, ids))[-5:-1]:  # WORKDIR, COPY, COPY --link, ADD: staged
        staged = snaps.path(str(chain))
        assert staged.is_dir(), layer.diff_id
        unpacked = scratch / f"unpacked-{layer.diff_id.hex[:12]}"
        unpacked.mkdir()
        with layer.open_tar() as tar:
            extract_overlay_layer(tar, str(unpacked))
        got, want = _tree(staged), _tree(unpacked)
        assert got == want, layer.diff_id
    app = snaps.path(str(ids[-4])) / "srv" / "app"
    assert (app / "main.py").read_text() == "print('hi')\n"
    assert os.lstat(app / "main.py").st_nlink == 2 and not (app / "skip.log").exists()
    assert stat.S_IMODE(os.lstat(app / "main.py").st_mode) == 0o640


def open_image_layers(layout: Path) -> tuple[Any, ...]:
    from layerkit.sources.oci import open_image

    return open_image(layout, "3.20").layers
