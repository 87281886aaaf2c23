"""gc and check: unreachable blobs go, reachable and in-flight ones stay; damage is found and named."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from layerkit import mediatypes as mt
from layerkit.digest import sha256_bytes
from layerkit.errors import CorruptStoreError, StoreError
from layerkit.spec import Descriptor
from layerkit.store import LockTimeoutError, OCILayout, open_store

MakeImage = Callable[..., Descriptor]
FORK = multiprocessing.get_context("fork")


def blobs_of(layout: OCILayout, tag: str) -> set[str]:
    image = layout.image(tag)
    return {image.digest, *(d.digest for d in image.blobs())}


def age(layout: OCILayout, seconds: float = 3600) -> None:
    """Make every blob look old enough for gc's grace period."""
    old = time.time() - seconds
    for p in (layout.root / "blobs" / "sha256").iterdir():
        os.utime(p, (old, old))


def flip_a_byte(path: os.PathLike[str]) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, io.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))


# --- gc ------------------------------------------------------------------------------------------


def test_gc_removes_unreachable_blobs_and_keeps_reachable_ones(layout: OCILayout, make_image: MakeImage) -> None:
    make_image(layout, {"shared": b"same layer"}, "keep", created="2024-01-01T00:00:00Z")
    make_image(layout, {"shared": b"same layer"}, "drop", created="2024-02-02T00:00:00Z")
    orphan = make_image(layout, {"orphan": b"never tagged"}, index_entry=False)
    keep, drop = blobs_of(layout, "keep"), blobs_of(layout, "drop")
    garbage = (drop - keep) | {orphan.digest, *(d.digest for d in layout.image(orphan.digest).blobs())}
    layout.remove_tag("drop")
    age(layout)

    preview = layout.gc(dry_run=True)
    assert set(preview.removed) == garbage and preview.dry_run
    assert all(layout.has_blob(d) for d in garbage)

    result = layout.gc()
    assert set(result.removed) == garbage
    assert result.freed_bytes == preview.freed_bytes > 0
    assert not any(layout.has_blob(d) for d in garbage)
    assert all(layout.has_blob(d) for d in keep)  # incl. the layer "drop" shared with "keep"
    assert layout.check().ok
    assert layout.gc().removed == []


def test_gc_keeps_blobs_inside_the_grace_period(layout: OCILayout, make_image: MakeImage) -> None:
    orphan = make_image(layout, {"f": b"fresh"}, index_entry=False)
    result = layout.gc()  # default grace: everything was written a moment ago
    assert result.removed == [] and orphan.digest in result.kept_recent
    assert orphan.digest in layout.gc(grace=0).removed


def test_gc_follows_indexes_to_their_children(layout: OCILayout, make_image: MakeImage) -> None:
    from layerkit.spec import Index

    a = make_image(layout, {"a": b"a"}, arch="amd64", index_entry=False)
    b = make_image(layout, {"b": b"b"}, arch="arm64", index_entry=False)
    layout.put_manifest(Index(mt.OCI_INDEX, (a, b)), "multi")
    age(layout)
    assert layout.gc(grace=0).removed == []
    assert layout.image("multi", "linux/arm64").digest == b.digest


def test_gc_removes_stale_temp_files_only(layout: OCILayout) -> None:
    ingest = layout.root / ".layerkit" / "ingest"
    ingest.mkdir(parents=True, exist_ok=True)
    stale, fresh = ingest / "blob-stale.tmp", ingest / "blob-fresh.tmp"
    stale.write_bytes(b"from a crashed writer")
    fresh.write_bytes(b"recent")
    os.utime(stale, (1, 1))
    assert layout.gc().temp_files_removed == 1
    assert not stale.exists() and fresh.exists()


def test_store_gc_also_clears_stale_leftovers_in_tmp(tmp_path: Path) -> None:
    store = open_store(tmp_path / "home")
    old_file, old_dir, busy_dir = store.tmp_dir / "old.tar", store.tmp_dir / "old-unpack", store.tmp_dir / "busy"
    old_file.write_bytes(b"x")
    (old_dir / "sub").mkdir(parents=True)
    (busy_dir / "sub").mkdir(parents=True)
    (busy_dir / "sub" / "being-written").write_bytes(b"y")
    for p in (old_file, old_dir / "sub", old_dir, busy_dir, busy_dir / "sub"):
        os.utime(p, (1, 1))
    assert store.gc(dry_run=True).temp_files_removed == 2 and old_file.exists()
    assert store.gc().temp_files_removed == 2
    assert sorted(p.name for p in store.tmp_dir.iterdir()) == ["busy"]


def test_gc_refuses_rather_than_guess_when_a_manifest_is_unreadable(
    layout: OCILayout, make_image: MakeImage
) -> None:
    desc = make_image(layout, {"f": b"x"}, "v1")
    make_image(layout, {"o": b"orphan"}, index_entry=False)
    flip_a_byte(layout.blob_path(desc.digest))
    age(layout)
    before = sorted(p.name for p in (layout.root / "blobs" / "sha256").iterdir())
    with pytest.raises(CorruptStoreError, match="layerkit check"):
        layout.gc(grace=0)
    assert sorted(p.name for p in (layout.root / "blobs" / "sha256").iterdir()) == before


def _hold_writer_lock(root: str, locked: multiprocessing.synchronize.Event,
                      release: multiprocessing.synchronize.Event) -> None:
    with OCILayout(root).lock():
        locked.set()
        release.wait(30)


def test_gc_waits_for_writers_in_other_processes(layout: OCILayout, make_image: MakeImage) -> None:
    orphan = make_image(layout, {"f": b"x"}, index_entry=False)
    locked, release = FORK.Event(), FORK.Event()
    writer = FORK.Process(target=_hold_writer_lock, args=(str(layout.root), locked, release))
    writer.start()
    try:
        assert locked.wait(30)
        with pytest.raises(LockTimeoutError, match="another layerkit process"):
            layout.gc(grace=0, timeout=0.3)
        assert layout.has_blob(orphan.digest)
    finally:
        release.set()
        writer.join(30)
    assert orphan.digest in layout.gc(grace=0, timeout=30).removed


def test_gc_inside_this_process_write_is_refused_not_deadlocked(layout: OCILayout) -> None:
    with layout.lock(), pytest.raises(StoreError, match="already holds it"):
        layout.gc()


# --- check ---------------------------------------------------------------------------------------


def test_check_passes_on_a_healthy_layout(layout: OCILayout, make_image: MakeImage) -> None:
    make_image(layout, {"a": b"1"}, "a")
    make_image(layout, {"b": b"2"}, "b")
    result = layout.check()
    assert result.ok and result.problems == []
    assert result.blobs_checked == 6 and result.bytes_checked > 0


def test_check_finds_a_flipped_byte_and_repair_lets_a_new_copy_heal_it(
    layout: OCILayout, make_image: MakeImage
) -> None:
    make_image(layout, {"data": os.urandom(10_000)}, "v1")
    layer = layout.image("v1").layers[0]
    good = layout.blob_path(layer.digest).read_bytes()
    flip_a_byte(layout.blob_path(layer.digest))
    result = layout.check()
    assert not result.ok
    assert f"blob {layer.digest} is corrupt: its content hashes to sha256:" in result.problems[0]
    assert f"image v1: layer 0 {layer.digest} is corrupt" in result.problems
    repaired = layout.check(repair=True)
    assert repaired.repaired == [layer.digest] and not layout.has_blob(layer.digest)
    layout.put_blob(io.BytesIO(good), layer.descriptor)  # what a re-pull does
    assert layout.check().ok


def test_check_reports_missing_and_truncated_blobs_and_stray_files(
    layout: OCILayout, make_image: MakeImage
) -> None:
    make_image(layout, {"a": b"1"}, "v1")
    image = layout.image("v1")
    layout.blob_path(image.layers[0].digest).unlink()
    config = layout.blob_path(image.manifest.config.digest)
    config.write_bytes(config.read_bytes()[:-1])
    (layout.root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"?")
    problems = layout.check().problems
    assert f"image v1: layer 0 {image.layers[0].digest} is missing" in problems
    assert any(p.startswith(f"image v1: config {image.manifest.config.digest} is ") and "descriptor says" in p
               for p in problems)
    assert "blobs/sha256/not-a-digest: not named by a digest" in problems


def test_check_reports_an_unparseable_manifest_and_index(layout: OCILayout) -> None:
    bad = b'{"schemaVersion": 2, "layers": "nope"}'
    digest, size = layout.put_json(bad)
    with layout._edit_index() as entries:  # a hand-edited index.json, as another tool might leave it
        entries.append(Descriptor(mt.OCI_MANIFEST, digest, size).to_json())
    assert any("'layers' missing or not a list" in p for p in layout.check().problems)
    (layout.root / "index.json").write_text("{ truncated")
    assert any("index.json: not valid JSON" in p for p in layout.check().problems)


def test_digest_named_files_are_rehashed_not_trusted(layout: OCILayout) -> None:
    liar = sha256_bytes(b"claimed")
    (layout.root / "blobs" / "sha256" / liar.hex).write_bytes(b"actual")
    assert layout.check().problems == [f"blob {liar} is corrupt: its content hashes to {sha256_bytes(b'actual')}"]
    json.loads((layout.root / "index.json").read_bytes())  # untouched
