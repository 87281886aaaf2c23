"""Several processes writing one store, and writers killed mid-ingest: index.json stays valid and
tags only ever name complete images."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layerkit.spec import Descriptor
from layerkit.store import OCILayout, open_store

MakeImage = Callable[..., Descriptor]
FORK = multiprocessing.get_context("fork")  # children inherit the make_image helper; no pickling


def _write_images(home: str, worker: int, count: int, make_image: MakeImage) -> None:
    store = open_store(home)
    for i in range(count):
        with store.lock():
            make_image(store, {f"w{worker}/f{i}": os.urandom(2048)}, f"app{worker}:v{i}")
            make_image(store, {"contended": f"{worker}-{i}".encode()}, "shared")  # every worker moves it


def test_concurrent_writers_all_land_and_index_json_stays_valid(
    tmp_path: Path, make_image: MakeImage, oci_validate: Any
) -> None:
    home = tmp_path / "home"
    workers, count = 4, 6
    procs = [FORK.Process(target=_write_images, args=(str(home), w, count, make_image)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * workers
    store = open_store(home)
    expected = {f"app{w}:v{i}" for w in range(workers) for i in range(count)} | {"shared:latest"}
    assert set(store.tags()) == expected
    index = json.loads((store.root / "index.json").read_bytes())
    oci_validate("index", index)
    assert len(index["manifests"]) == len(expected)  # no duplicate of the contended tag
    assert store.check().ok
    for tag in expected:
        assert store.image(tag).layers[0].size > 0


def _ingest_forever(root: str, progress: multiprocessing.synchronize.Event, after: int,
                    make_image: MakeImage) -> None:
    """A pull that dies mid-layer: one complete untagged image, then a big layer that never ends."""
    layout = OCILayout(root)
    chunk = os.urandom(1 << 20)
    with layout.lock():
        make_image(layout, {"complete": b"but never tagged"}, index_entry=False)
        with layout.blob_writer() as w:
            while True:
                w.write(chunk)
                if w.size >= after:
                    progress.set()


def test_kill_9_in_the_middle_of_ingest_leaves_a_consistent_store(
    tmp_path: Path, make_image: MakeImage
) -> None:
    layout = OCILayout(tmp_path / "layout", create=True)
    make_image(layout, {"base": b"tagged before the crash"}, "base")
    blobs_before = {p.name for p in (layout.root / "blobs" / "sha256").iterdir()}
    progress = FORK.Event()
    child = FORK.Process(target=_ingest_forever, args=(str(layout.root), progress, 8 << 20, make_image))
    child.start()
    try:
        assert progress.wait(60), "the child never got 8 MiB into the blob"
    finally:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    assert child.exitcode == -signal.SIGKILL

    temps = list((layout.root / ".layerkit" / "ingest").iterdir())
    assert len(temps) == 1 and temps[0].stat().st_size >= 6 << 20  # the half-written layer (minus the buffer)
    result = layout.check()
    assert result.ok, result.problems
    assert set(layout.tags()) == {"base"}
    assert layout.image("base").layers[0].size > 0

    # the kernel dropped the dead writer's lock, so gc runs at once and reclaims what it left
    gc = layout.gc(grace=0, timeout=10)
    assert gc.temp_files_removed == 1
    assert {p.name for p in (layout.root / "blobs" / "sha256").iterdir()} == blobs_before
    assert len(gc.removed) == 3  # the untagged image's layer, config and manifest
    assert layout.check().ok
