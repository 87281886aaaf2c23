"""Several ``layerkit`` processes on one store at once: builds and pulls all land, ``gc`` never takes
a blob a running writer is about to reference, and ``index.json`` is always a complete document.

The store engineer's tests cover concurrent library writers; these run the real commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from safety_helpers import assert_store_sound, run_layerkit, start_layerkit

from layerkit.store import open_store


@pytest.fixture(scope="module")
def registry_alpine(registry: str, alpine_image_oci: Path) -> str:
    ref = f"{registry}/safety/concurrency-alpine:3.20"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{alpine_image_oci}:3.20",
                    f"docker://{ref}"], check=True, capture_output=True, timeout=120)
    return ref


def make_context(root: Path, base: str, name: str, *, run: bool = True) -> Path:
    """A context whose layers differ from every other context's: COPY of its own bytes, then a RUN."""
    root.mkdir(parents=True)
    (root / "payload").write_bytes(name.encode() + os.urandom(2_000_000))
    (root / "Dockerfile").write_text(f"FROM {base}\nCOPY payload /payload-{name}\n"
                                     + (f"RUN echo {name} > /built-by\n" if run else ""))
    return root


class IndexWatcher:
    """Reads ``index.json`` in a loop while writers run: it must always parse, and (unless the test
    untags on purpose) a tag, once seen, must never vanish — only move to another digest."""

    def __init__(self, home: Path, *, tags_stay: bool = True) -> None:
        self.file = home / "oci" / "index.json"
        self.tags_stay = tags_stay
        self.seen: set[str] = set()
        self.reads = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._read()

    def _read(self) -> None:
        try:
            raw = self.file.read_bytes()
        except FileNotFoundError:
            return
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            self.problems.append(f"index.json does not parse ({exc}): {raw[:200]!r}")
            return
        self.reads += 1
        tags = {(m.get("annotations") or {}).get("org.opencontainers.image.ref.name") for m in doc["manifests"]}
        if self.tags_stay and (lost := self.seen - tags):
            self.problems.append(f"tags vanished: {sorted(lost)}")
        self.seen |= tags - {None}

    @contextmanager
    def running(self) -> Iterator[IndexWatcher]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)
            # the loop's last read may predate the writers' last write: read the final document too
            self._read()


class GcLoop:
    """Collects garbage with no grace period, over and over, from a thread of this process (each
    round a separate ``flock`` holder, like another ``layerkit gc``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.rounds = 0
        self.removed = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = open_store(self.home).gc(grace=0)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                return
            self.rounds += 1
            self.removed += len(result.removed)
            self._stop.wait(0.005)  # leave the writers some CPU

    @contextmanager
    def running(self) -> Iterator[GcLoop]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(60)
        assert not self.errors, self.errors


def _finish(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for what, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{what}: {stderr.decode()}"


def test_two_builds_and_a_pull_into_one_store_at_once(tmp_path: Path, alpine_image_oci: Path,
                                                      registry_alpine: str) -> None:
    home = tmp_path / "home"
    base = f"oci:{alpine_image_oci}:3.20"
    contexts = {tag: make_context(tmp_path / tag.replace("/", "-").replace(":", "-"), base, tag[-3:])
                for tag in ("safety/build-a:1", "safety/build-b:1")}
    with IndexWatcher(home).running() as watcher:
        procs = {f"build {tag}": start_layerkit(home, "build", "-t", tag, "--progress", "plain", str(ctx))
                 for tag, ctx in contexts.items()}
        procs["pull"] = start_layerkit(home, "pull", registry_alpine)
        _finish(procs)
    state = assert_store_sound(home)
    assert set(state.tags) == {*contexts, registry_alpine}
    assert watcher.reads and not watcher.problems, watcher.problems[:3]
    assert watcher.seen == set(state.tags)
    # the builds share the base layer with the pull: one copy of it in the store
    store = open_store(home)
    base_layer = store.image(registry_alpine).layers[0].digest
    assert all(store.image(tag).layers[0].digest == base_layer for tag in contexts)


def test_gc_in_a_loop_never_breaks_a_running_pull(tmp_path: Path, registry_alpine: str) -> None:
    home = tmp_path / "home"
    with IndexWatcher(home, tags_stay=False).running() as watcher, GcLoop(home).running() as gc:
        for _ in range(3):
            pulled = run_layerkit(home, "pull", registry_alpine)
            assert pulled.returncode == 0, pulled.stderr
            assert registry_alpine in assert_store_sound(home).tags
            untag = run_layerkit(home, "rmi", registry_alpine)  # so the next pull writes every blob again
            assert untag.returncode == 0, untag.stderr
    assert gc.rounds > 3 and gc.removed > 0  # gc did run in between, and did collect the untagged pulls
    assert watcher.reads and not watcher.problems, watcher.problems[:3]


def test_gc_in_a_loop_never_breaks_a_running_build(tmp_path: Path, alpine_image_oci: Path) -> None:
    home = tmp_path / "home"
    ctx = make_context(tmp_path / "ctx", f"oci:{alpine_image_oci}:3.20", "gc", run=False)
    with GcLoop(home).running() as gc:
        for i in range(3):
            (ctx / "changing").write_text(str(i))  # a new COPY layer each time (the cache cannot serve it)
            (ctx / "Dockerfile").write_text(f"FROM oci:{alpine_image_oci}:3.20\nCOPY payload changing /\n")
            built = run_layerkit(home, "build", "-t", f"safety/gc:{i}", "--progress", "plain", str(ctx))
            assert built.returncode == 0, built.stderr
    state = assert_store_sound(home)
    assert set(state.tags) == {f"safety/gc:{i}" for i in range(3)}
    assert gc.rounds > 3


def test_a_built_image_is_listed_once_and_rmi_then_gc_reclaims_it(tmp_path: Path) -> None:
    """The other side of gc safety: what nothing references any more does go away."""
    home = tmp_path / "home"
    ctx = make_context(tmp_path / "ctx", "scratch", "reclaim", run=False)
    for _ in range(2):  # the second build moves the tag to a new image
        (ctx / "payload").write_bytes(os.urandom(1000))
        built = run_layerkit(home, "build", "-t", "safety/reclaim:1", "--progress", "plain", str(ctx))
        assert built.returncode == 0, built.stderr
    listed = json.loads(run_layerkit(home, "images", "--json").stdout)
    assert [row["name"] for row in listed] == ["safety/reclaim:1"]
    assert run_layerkit(home, "rmi", "safety/reclaim:1").returncode == 0
    assert run_layerkit(home, "gc", "--grace", "0").returncode == 0
    assert assert_store_sound(home).blobs == frozenset()
