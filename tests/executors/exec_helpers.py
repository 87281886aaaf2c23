"""Helpers for the RUN executor tests: the builder's ``write_layer`` contract, a ``run_step`` that
returns the outcome plus the layer's entries, and the merged view of a base image plus step layers."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from layerkit.build.executor import Mount, RunOutcome, RunRequest
from layerkit.mediatypes import Compression
from layerkit.spec import host_platform
from layerkit.store import LocalStore
from layerkit.tarfs.compression import open_decompressed
from layerkit.tarfs.entry import Entry
from layerkit.tarfs.reader import iter_layer
from layerkit.tarfs.whiteout import is_whiteout
from layerkit.tarfs.writer import LayerResult, LayerWriter

#: "rootless" is fuse-overlayfs where it works (here); "rootless-copy" its last fallback (rootfs copy + tree diff)
EXECUTORS = ("native", "rootless", "rootless-copy", "docker")
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def make_write_layer(store: LocalStore) -> Any:
    """The builder's contract: a LayerWriter on a store blob writer; nothing committed if fill raises."""

    def write_layer(fill: Any) -> LayerResult:
        with store.blob_writer() as sink:
            writer = LayerWriter(sink, Compression.GZIP)
            try:
                fill(writer)
            except BaseException:
                writer.abort()
                raise
            result = writer.close()
            sink.commit(result.digest)
        return result

    return write_layer


def load_executor(name: str) -> Any:
    if name == "rootless-copy":
        from layerkit.build.executors.rootless import RootlessExecutor

        executor: Any = RootlessExecutor(mode="copy")
        executor.name = name  # its own cache dirs and test ids in the suite
    else:
        executor = importlib.import_module(f"layerkit.build.executors.{name}").create_executor()
    reason = executor.unavailable()
    if reason:
        pytest.skip(f"executor {name} cannot run here: {reason}")
    return executor


@dataclass
class Step:
    outcome: RunOutcome
    output: bytes
    entries: dict[str, Entry] = field(default_factory=dict)
    content: dict[str, bytes] = field(default_factory=dict)
    blob: bytes = b""

    def sha(self, path: str) -> str:
        return hashlib.sha256(self.content[path]).hexdigest()


class StoredLayer:
    """A layer blob in the store as :class:`layerkit.union.Union` wants it."""

    def __init__(self, store: LocalStore, result: LayerResult) -> None:
        self.store, self.digest = store, result.digest

    def open_tar(self) -> Any:
        return open_decompressed(self.store.open_blob(self.digest))


def run_step(executor: Any, store: LocalStore, image: Any, script: str, *, argv: tuple[str, ...] | None = None,
             env: tuple[str, ...] = (PATH,), workdir: str = "/", uid: int = 0, gid: int = 0,
             groups: tuple[int, ...] = (), network: str = "none", mounts: tuple[Mount, ...] = ()) -> Step:
    chunks: list[bytes] = []
    request = RunRequest(
        image=image, argv=argv or ("/bin/sh", "-c", script), env=env, workdir=workdir, uid=uid, gid=gid,
        groups=groups, platform=host_platform(), store=store, network=network, mounts=mounts,
        step=f"RUN {script}", location="Dockerfile:2",
    )
    outcome = executor.run(request, write_layer=make_write_layer(store), output=chunks.append)
    step = Step(outcome, b"".join(chunks))
    if outcome.layer is not None:
        with store.open_blob(outcome.layer.digest) as f:
            step.blob = f.read()
        with store.open_blob(outcome.layer.digest) as f:
            for entry, content in iter_layer(f):
                step.entries[entry.path] = entry
                if content is not None:
                    step.content[entry.path] = content.read()
    return step


def union_with(image: Any, store: LocalStore, *results: LayerResult) -> Any:
    """The merged view of ``image`` plus the step layers."""
    from layerkit.union import Union

    return Union([*image.layers, *(StoredLayer(store, r) for r in results)])


def docker_layers(client: Any, ref: str) -> list[bytes]:
    """The uncompressed layer tars of an image in the Docker Engine, bottom first (``docker save``)."""
    buf = io.BytesIO()
    for chunk in client.images.get(ref).save(named=False):
        buf.write(chunk)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        members = [tf.extractfile(name) for name in manifest[0]["Layers"]]
        return [m.read() for m in members if m is not None]


def layer_summary(entries: Any) -> dict[str, tuple[Any, ...]]:
    """Entries by path: type, mode, owner, size, content hash, link target (no times); whiteout
    markers compared by what they hide (Docker writes mode 0600/0755 markers, we write 0644)."""
    out: dict[str, tuple[Any, ...]] = {}
    for entry, content in entries:
        if is_whiteout(entry.path):
            out[entry.path] = ("whiteout",)
            continue
        digest = hashlib.sha256(content.read()).hexdigest() if content is not None else ""
        out[entry.path] = (entry.type.value, entry.mode, entry.uid, entry.gid, entry.size, digest, entry.linkname)
    return out


REPO = Path(__file__).resolve().parents[2]

#: run one step as whoever runs this script: argv = repo, store home, OCI layout, script, uid, executor
#: ("native", "rootless", "rootless-fuse", "rootless-copy"); prints the outcome and the layer's summary as JSON
NOBODY_SCRIPT = r"""
import hashlib, json, sys, time
sys.path.insert(0, sys.argv[1])
from layerkit.build.executor import RunRequest
from layerkit.build.executors import native, rootless
from layerkit.mediatypes import Compression
from layerkit.sources.oci import open_image
from layerkit.spec import host_platform
from layerkit.store import open_store
from layerkit.tarfs.reader import iter_layer
from layerkit.tarfs.whiteout import is_whiteout
from layerkit.tarfs.writer import LayerWriter

store = open_store(sys.argv[2])
image = open_image(sys.argv[3], "3.20")
name = sys.argv[6]
executor = {"native": native.NativeExecutor, "rootless": rootless.RootlessExecutor,
            "rootless-fuse": lambda: rootless.RootlessExecutor(mode="fuse"),
            "rootless-copy": lambda: rootless.RootlessExecutor(mode="copy")}[name]()
reason = executor.unavailable()
if reason:
    print(json.dumps({"unavailable": reason}))
    sys.exit(0)

def write_layer(fill):
    with store.blob_writer() as sink:
        writer = LayerWriter(sink, Compression.GZIP)
        fill(writer)
        result = writer.close()
        sink.commit(result.digest)
    return result

out = []
request = RunRequest(image=image, argv=("/bin/sh", "-c", sys.argv[4]), env=("PATH=/usr/bin:/bin:/usr/sbin:/sbin",),
                     workdir="/work", uid=int(sys.argv[5]), gid=int(sys.argv[5]), platform=host_platform(),
                     store=store, network="none")
started = time.monotonic()
outcome = executor.run(request, write_layer=write_layer, output=out.append)
seconds = time.monotonic() - started
entries = {}
if outcome.layer:
    with store.open_blob(outcome.layer.digest) as f:
        for e, c in iter_layer(f):
            entries[e.path] = ["whiteout"] if is_whiteout(e.path) else [
                e.type.value, e.mode, e.uid, e.gid, hashlib.sha256(c.read()).hexdigest() if c else "", e.linkname]
print(json.dumps({"exit": outcome.exit_code, "output": b"".join(out).decode(), "entries": entries,
                  "seconds": seconds}))
"""


def unprivileged_python() -> str | None:
    """An interpreter an unprivileged user can run (the test venv may live in root's home)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_as_nobody(base: Path, script: str, uid: int, executor: str) -> dict[str, Any]:
    """Run one step as 'nobody' (setpriv) in ``base`` (see the ``nobody_dir`` fixture)."""
    python = unprivileged_python()
    assert python is not None
    r = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--reset-env", python, "-I",
         str(base / "run.py"), str(REPO), str(base / "home"), str(base / "alpine"), script, str(uid), executor],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    if "unavailable" in doc:
        pytest.skip(f"{executor} cannot run as 'nobody' here: {doc['unavailable']}")
    return doc
