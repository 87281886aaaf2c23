"""The store's cache of layer member lists: exact round trips, damage is a miss, gc forgets the
lists of the blobs it removes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from layerkit.spec import Descriptor
from layerkit.store import open_store
from layerkit.store.layerindex import LayerIndexCache
from layerkit.tarfs.entry import Entry, EntryType
from layerkit.tarfs.limits import Limits

MakeImage = Callable[..., Descriptor]

DIGEST, DIFF_ID, LIMITS = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32, Limits()

ENTRIES = [
    Entry("etc", EntryType.DIR, 0o755, mtime_ns=1_700_000_000_123_456_789),
    Entry("etc/passwd", EntryType.FILE, 0o644, 0, 0, 41),
    Entry("bin/ping", EntryType.FILE, 0o4755, 1000, 1001, 9,
          xattrs={"security.capability": b"\x01\x00\x00\x02\xff\xfe", "user.note": b""}),
    Entry("lib", EntryType.SYMLINK, 0o777, linkname="usr/lib"),
    Entry("bin/ping6", EntryType.HARDLINK, 0o4755, linkname="bin/ping"),
    Entry("dev/sda", EntryType.BLOCK, 0o660, 0, 6, devmajor=8, devminor=0),
    Entry("dev/null", EntryType.CHAR, 0o666, devmajor=1, devminor=3),
    Entry("run/fifo", EntryType.FIFO, 0o600),
    Entry("etc/.wh.motd", EntryType.FILE, 0o600),
    Entry("caf\u00e9/\udcff", EntryType.FILE),  # a non-UTF-8 name, as the tar reader surrogate-escapes it
]


def test_every_kind_of_entry_comes_back_equal(tmp_path: Path) -> None:
    cache = LayerIndexCache(tmp_path)
    assert cache.load(DIGEST, DIFF_ID, LIMITS) is None
    cache.save(DIGEST, DIFF_ID, LIMITS, ENTRIES)
    assert cache.load(DIGEST, DIFF_ID, LIMITS) == ENTRIES


def test_a_list_serves_only_its_digest_diff_id_and_limits(tmp_path: Path) -> None:
    cache = LayerIndexCache(tmp_path)
    cache.save(DIGEST, DIFF_ID, LIMITS, ENTRIES)
    assert cache.load(DIGEST, "sha256:" + "ee" * 32, LIMITS) is None  # an image claiming another diff ID
    assert cache.load(DIGEST, DIFF_ID, Limits(max_entries=5)) is None
    assert cache.load("sha256:" + "ef" * 32, DIFF_ID, LIMITS) is None


def test_a_damaged_list_is_a_miss_and_is_written_again(tmp_path: Path) -> None:
    cache = LayerIndexCache(tmp_path)
    cache.save(DIGEST, DIFF_ID, LIMITS, ENTRIES)
    (stored,) = tmp_path.iterdir()
    raw = bytearray(stored.read_bytes())
    raw[-5] ^= 0x01
    stored.write_bytes(bytes(raw))
    assert cache.load(DIGEST, DIFF_ID, LIMITS) is None
    stored.write_bytes(b"")
    assert cache.load(DIGEST, DIFF_ID, LIMITS) is None
    cache.save(DIGEST, DIFF_ID, LIMITS, ENTRIES)
    assert cache.load(DIGEST, DIFF_ID, LIMITS) == ENTRIES


def test_an_unwritable_cache_only_costs_a_miss(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    cache = LayerIndexCache(blocker / "layers")  # below a file: cannot be created
    cache.save(DIGEST, DIFF_ID, LIMITS, ENTRIES)
    assert cache.load(DIGEST, DIFF_ID, LIMITS) is None


def test_store_gc_forgets_the_lists_of_the_blobs_it_removes(tmp_path: Path, make_image: MakeImage) -> None:
    store = open_store(tmp_path / "home")
    make_image(store, {"kept": b"k"}, "kept:1")
    make_image(store, {"gone": b"g"}, "gone:1")
    kept, gone = (store.image(tag).layers[0] for tag in ("kept:1", "gone:1"))
    for layer in (kept, gone):
        store.layer_index.save(str(layer.digest), str(layer.diff_id), LIMITS, ENTRIES)
    store.remove_tag("gone:1")
    for blob in (store.root / "blobs" / "sha256").iterdir():
        os.utime(blob, (1, 1))  # past the grace period
    store.gc()
    assert store.layer_index.load(str(kept.digest), str(kept.diff_id), LIMITS) == ENTRIES
    assert store.layer_index.load(str(gone.digest), str(gone.diff_id), LIMITS) is None
    assert len(os.listdir(store.cache_dir / "layers")) == 1
