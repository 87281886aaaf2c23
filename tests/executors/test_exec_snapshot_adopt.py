"""The native executor keeps a step's overlay upper dir as the new layer's snapshot instead of
unpacking the layer it just wrote. That is only a shortcut: the merged view of the adopted
snapshots, and every later layer, must be exactly what unpacking the layers gives."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exec_helpers import PATH, load_executor

from layerkit.build.executor import RunRequest
from layerkit.build.executors.overlay_diff import LowerView
from layerkit.build.executors.snapshots import OPAQUE_XATTR, Snapshots, match_layer
from layerkit.build.executors.tree_diff import entry_at, same_content
from layerkit.build.state import BuildState, LayerFactory
from layerkit.mediatypes import Compression
from layerkit.spec import History, host_platform
from layerkit.store import LocalStore, open_store
from layerkit.tarfs.entry import Entry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="snapshot adoption is the root overlayfs path")

#: each step depends on what the one before left, metadata included (listings carry mtimes)
STEPS = (
    ("mkdir -p /w/a /w/b && echo one > /w/a/f && ln /w/a/f /w/a/link && ln -s f /w/a/sym && mkfifo /w/fifo"
    " && touch -d @1000 /w/a/old && echo gone > /w/b/x && chmod 600 /etc/motd"),
    ("stat -c '%n %a %u %g %s %Y' /w /w/a /w/a/* /w/b /w/b/* /w/fifo /etc/motd > /listing1"
    " && rm -rf /w/b && mkdir /w/b && echo new > /w/b/y && chown 1:1 /etc/issue && echo two >> /w/a/f"),
    "stat -c '%n %a %u %g %s %Y' /w /w/a /w/a/* /w/b /w/b/* /etc/issue /listing1 > /listing2 && rm /w/fifo",
)


@pytest.fixture
def two_stores() -> Iterator[tuple[LocalStore, LocalStore]]:
    base = Path(tempfile.mkdtemp(prefix="lk-exec-adopt-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    yield open_store(base / "a"), open_store(base / "b")
    shutil.rmtree(base, ignore_errors=True)


def _build(store: LocalStore, base: Any, epoch: int, *, adopt: bool) -> tuple[list[str], Any]:
    """Run STEPS on ``base`` in ``store``; without ``adopt`` every new snapshot is thrown away, so
    the next step unpacks the layer. Returns the diff IDs and the final image."""
    executor = load_executor("native")
    state = BuildState.from_image(store, base)
    write_layer = LayerFactory(store, Compression.GZIP, epoch)
    snaps = Snapshots(store)
    for script in STEPS:
        image = state.image()
        request = RunRequest(image=image, argv=("/bin/sh", "-c", script), env=(PATH,), workdir="/", uid=0, gid=0,
                             platform=host_platform(), store=store, network="none")
        outcome = executor.run(request, write_layer=write_layer, output=lambda _chunk: None)
        assert outcome.exit_code == 0, outcome.output_tail
        assert outcome.layer is not None
        state.add_layer_result(outcome.layer, History(created_by=script))
        chain = state.image().chain_ids()[-1]
        assert snaps.path(chain).is_dir()  # adopted right away: the next step unpacks nothing
        if not adopt:
            shutil.rmtree(snaps.path(chain))
    return [str(d) for d in state.config.diff_ids], state.image()


def _merged(lowers: list[Path]) -> dict[str, tuple[Any, ...]]:
    """Every visible path of a stack of lower dirs (newest first) with its metadata and bytes."""
    view = LowerView(lowers)
    paths: set[str] = set()
    for low in lowers:
        for top, dirs, files in os.walk(low):
            rel = os.path.relpath(top, low)
            for name in dirs + files:
                paths.add(name if rel == "." else f"{rel}/{name}")
    out: dict[str, tuple[Any, ...]] = {}
    for path in sorted(paths):
        found = view.lookup(path)
        if found is None:
            continue
        host, st = found
        e: Entry = entry_at(path, host, st)
        out[path] = (e.type, e.mode, e.uid, e.gid, e.size, e.mtime_ns, e.linkname, e.xattrs,
                     st.st_atime_ns if stat.S_ISREG(st.st_mode) else None, host if stat.S_ISREG(st.st_mode) else "")
    return out


def test_adopted_snapshots_give_the_same_layers_and_view_as_unpacked_ones(
    two_stores: tuple[LocalStore, LocalStore], alpine_image: Any
) -> None:
    adopted_store, unpacked_store = two_stores
    epoch = int(time.time()) - 3600  # files the steps write are clamped, the base image's are not
    ids_adopted, image_a = _build(adopted_store, alpine_image, epoch, adopt=True)
    ids_unpacked, image_b = _build(unpacked_store, alpine_image, epoch, adopt=False)
    # step 2 and 3 list mtimes of what the steps before wrote: same bytes only if the snapshots agree
    assert ids_adopted == ids_unpacked

    view_a = _merged(Snapshots(adopted_store).lowerdirs(image_a))
    view_b = _merged(Snapshots(unpacked_store).lowerdirs(image_b))  # unpacks the three layers
    assert view_a.keys() == view_b.keys()
    for path, a in view_a.items():
        b = view_b[path]
        assert a[:8] == b[:8], path
        if a[9]:
            assert a[8] == b[8], f"{path}: atime"
            assert same_content(a[9], b[9]), path
    assert "listing2" in view_a and "w/fifo" not in view_a


def test_match_layer_drops_what_a_layer_cannot_hold(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "o").mkdir()
    (upper / "d" / "f").write_text("x")
    os.setxattr(upper / "d" / "f", "trusted.overlay.origin", b"\0\1")
    os.setxattr(upper / "d" / "f", "user.keep", b"1")
    os.setxattr(upper / "o", OPAQUE_XATTR, b"y")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(upper / "d" / "sock"))
    os.utime(upper / "d", ns=(5_000_000_000, 5_000_000_000))
    f = entry_at("d/f", str(upper / "d" / "f"))
    match_layer(str(upper), [(f, str(upper / "d" / "f"))], clamp_ns=2_000_000_000)
    assert sorted(os.listdir(upper / "d")) == ["f"]
    assert os.lstat(upper / "d").st_mtime_ns == 5_000_000_000  # the parent's time survives the socket's removal
    assert os.listxattr(upper / "d" / "f") == ["user.keep"]
    assert os.getxattr(upper / "o", OPAQUE_XATTR) == b"y"
    st = os.lstat(upper / "d" / "f")
    assert st.st_mtime_ns == st.st_atime_ns == 2_000_000_000  # clamped like the layer's entry
    assert stat.S_IMODE(os.lstat(upper).st_mode) == 0o755
