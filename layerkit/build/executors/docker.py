"""The ``docker`` executor: run the step in a Docker Engine container and take its committed layer.

One step: the parent image is put into the Engine unless it is there already (its image ID is the
config digest; otherwise a docker-archive is loaded through :class:`~layerkit.sources.daemon.
DaemonSink`, ``FROM scratch`` imports an empty image); a container runs argv (entrypoint
overridden, so the image's ``ENTRYPOINT`` never wraps it) with the step's user, groups, workdir,
env and hostname; it is committed, ``docker save`` is streamed to a temp file and the last
``Layers`` member of its ``manifest.json`` is the step's layer (its sha256 is checked against the
committed image's last diff ID). That tar is re-emitted through ``write_layer`` in canonical order,
with Docker's quirks normalised: whiteouts are regular ``.wh.*`` files (mode 0600, sometimes with a
stale link name) → OCI whiteouts; hard links regrouped so the first path in layer order holds the
content; mount points Docker created for ``RUN --mount`` targets (and parents it made for them)
dropped. Temporary containers and images are removed whatever happens.

Network: ``none`` → ``network_mode="none"`` (only ``lo``); ``default``/``host`` → ``host``, as the
native executor does. Mounts: context binds are bound (``rw`` ones from a throwaway copy), ``from=``
images from an unpacked rootfs snapshot, caches bind their host dir, secrets a private copy with
the asked mode/owner, tmpfs a tmpfs. The Engine must share this host's filesystem (a local daemon).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ...digest import CHUNK
from ...errors import BuildError, LayerkitError
from ...tarfs.entry import Entry, EntryType
from ...tarfs.paths import clean_member
from ...tarfs.reader import iter_entries
from ...tarfs.whiteout import (
    is_opaque,
    is_whiteout,
    opaque_path,
    whiteout_path,
    whiteout_target,
)
from ...tarfs.writer import LayerWriter, layer_order_key
from ..executor import Mount, Output, RunOutcome, RunRequest, WriteLayer
from .cache_mounts import hold_cache_mounts
from .native import OutputTail
from .sandbox import resolve_in_root
from .snapshots import Snapshots

__all__ = ["DockerExecutor", "create_executor", "normalize_docker_layer"]

_LABEL = {"org.layerkit.executor": "docker"}


def _is_member_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def normalize_docker_layer(layer_tar: Path, spool: Path, drop: set[str], parent_exists: Any) -> list[tuple[Entry, str]]:
    """Docker's layer tar as ``(entry, content file)`` in canonical layer order (see the module
    docstring). ``drop``: mount targets to leave out (with what Docker made for them);
    ``parent_exists(path) -> Entry | None`` answers from the parent image."""
    kept: dict[str, tuple[Entry, str]] = {}
    links: dict[str, str] = {}  # hard link path -> its target path in the tar
    with open(layer_tar, "rb") as f:
        for n, (entry, content) in enumerate(iter_entries(f, layer="committed container layer")):
            path = entry.path
            if path == ".":
                continue
            if is_whiteout(path):  # whatever its tar type (Docker: '0' or '1' with stale names)
                marker = opaque_path(path.rpartition("/")[0] or ".") if is_opaque(path) else whiteout_path(whiteout_target(path))
                kept[marker] = (Entry(marker, EntryType.FILE, mode=0o644), "")
                continue
            host = ""
            if entry.type is EntryType.FILE and entry.size:
                host = str(spool / str(n))
                assert content is not None
                with open(host, "wb") as sink:
                    shutil.copyfileobj(content, sink, CHUNK)
            if entry.type is EntryType.HARDLINK:
                links[path] = entry.linkname
            kept[path] = (entry, host)
    # mount points Docker created: the targets, then the directories that only existed for them
    touched: set[str] = set()
    for top in drop:
        for path in [p for p in kept if _is_member_under(p, top)]:
            del kept[path]
        head = top.rpartition("/")[0]
        while head:
            touched.add(head)
            head = head.rpartition("/")[0]
    for d in sorted(touched, key=lambda p: -p.count("/")):
        entry_host = kept.get(d)
        if entry_host is None or any(p != d and _is_member_under(p, d) for p in kept):
            continue
        before = parent_exists(d)
        e = entry_host[0]
        if before is None or (before.mode, before.uid, before.gid) == (e.mode, e.uid, e.gid):
            del kept[d]
    # hard links: the first path of each group in layer order holds the content
    group_of: dict[str, str] = {}
    for path, target in links.items():
        root = target
        while root in links:
            root = links[root]
        group_of[path] = root
    grouped = set(group_of.values())
    first: dict[str, str] = {}
    out: list[tuple[Entry, str]] = []
    for path in sorted(kept, key=layer_order_key):
        entry, host = kept[path]
        root = group_of.get(path, path)
        if root not in grouped:
            out.append((entry, host))
            continue
        leader = first.get(root)
        if leader is not None:
            out.append((Entry(path, EntryType.HARDLINK, entry.mode, entry.uid, entry.gid, 0, entry.mtime_ns,
                              leader, 0, 0, dict(entry.xattrs)), ""))
            continue
        if root not in kept:  # the link's target was dropped: no dangling link
            continue
        src, src_host = kept[root]
        first[root] = path
        out.append((Entry(path, EntryType.FILE, src.mode, src.uid, src.gid, src.size, src.mtime_ns, "", 0, 0,
                          dict(src.xattrs)), src_host))
    return out


class DockerExecutor:
    name = "docker"

    def unavailable(self) -> str | None:
        try:
            import docker  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            return "needs the Python package 'docker': pip install docker"
        from ...sources.daemon import daemon_available, docker_host

        if not daemon_available():
            return f"no Docker Engine answers at {docker_host()}: start dockerd or set DOCKER_HOST"
        return None

    def run(self, request: RunRequest, *, write_layer: WriteLayer, output: Output) -> RunOutcome:
        from ...sources.daemon import client as docker_client

        what = f"running {request.step or 'RUN'} in the Docker Engine"
        work = Path(tempfile.mkdtemp(prefix="run-", dir=request.store.tmp_dir))
        cleanup: list[Any] = []
        try:
            with docker_client(what) as client:
                try:
                    return self._run(client, request, work, cleanup, write_layer, output)
                finally:
                    for undo in reversed(cleanup):
                        try:
                            undo()
                        except Exception:  # noqa: BLE001, S110 - best effort: never mask the step's result
                            pass
        except BuildError:
            raise
        except LayerkitError as exc:
            raise BuildError(f"{what}: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- steps -----------------------------------------------------------------------------------
    def _parent(self, client: Any, request: RunRequest, cleanup: list[Any]) -> str:
        import docker.errors  # type: ignore[import-untyped]

        image = request.image
        tag = f"layerkit-exec-parent:{uuid.uuid4().hex[:16]}"
        if not image.layers:
            empty = io.BytesIO()
            tarfile.open(fileobj=empty, mode="w").close()
            client.api.import_image_from_data(empty.getvalue(), repository=tag.partition(":")[0], tag=tag.partition(":")[2])
            cleanup.append(lambda: client.images.remove(tag, force=True))
            return tag
        config_digest = str(image.manifest.config.digest)
        try:
            return str(client.images.get(config_digest).id)
        except docker.errors.ImageNotFound:
            pass
        from ...ops.copy import copy_image
        from ...sources.daemon import DaemonSink

        with DaemonSink(tag, tmp_dir=request.store.tmp_dir) as sink:
            copy_image(image, sink, format="docker")
        cleanup.append(lambda: client.images.remove(tag, force=True))
        return tag

    def _mounts(self, request: RunRequest, work: Path) -> tuple[dict[str, Any], dict[str, str]]:
        binds: dict[str, Any] = {}
        tmpfs: dict[str, str] = {}
        snaps = Snapshots(request.store)
        for i, m in enumerate(request.mounts):
            src, mode = self._mount_source(m, i, snaps, work)
            if src is None:
                tmpfs[m.target] = f"size={m.size}" if m.size else ""
                continue
            binds[str(src)] = {"bind": m.target, "mode": mode}
        return binds, tmpfs

    def _mount_source(self, m: Mount, i: int, snaps: Snapshots, work: Path) -> tuple[Path | None, str]:
        what = f"RUN --mount=type={m.type},target={m.target}"
        if m.type == "tmpfs":
            return None, ""
        if m.type == "bind" and m.image is not None:
            src = Path(resolve_in_root(str(snaps.rootfs(m.image)), m.source))
        elif m.host_path is None:
            raise BuildError(f"{what}: the builder passed no host path")
        else:
            src = Path(m.host_path)
        if m.type == "cache":
            if not src.exists():
                src.mkdir(parents=True, mode=0o755)
                os.chown(src, m.uid, m.gid)
                os.chmod(src, m.mode if m.mode is not None else 0o755)
            return src, "ro" if m.readonly else "rw"
        if m.type == "secret":
            copy = work / f"secret{i}"
            shutil.copyfile(src, copy)
            os.chown(copy, m.uid, m.gid)
            os.chmod(copy, m.mode if m.mode is not None else 0o400)
            return copy, "ro"
        if m.type != "bind":
            raise BuildError(f"{what}: unknown mount type {m.type!r}; use bind, cache, tmpfs or secret")
        if not src.exists():
            raise BuildError(f"{what}: source {src} does not exist")
        if m.readonly:
            return src, "ro"
        copy = work / f"mount{i}"  # rw: writes go to a throwaway copy
        if src.is_dir():
            shutil.copytree(src, copy, symlinks=True)
        else:
            shutil.copy2(src, copy)
        return copy, "rw"

    def _run(self, client: Any, request: RunRequest, work: Path, cleanup: list[Any],
             write_layer: WriteLayer, output: Output) -> RunOutcome:
        parent = self._parent(client, request, cleanup)
        with hold_cache_mounts(request.mounts) as mounts:
            request = dataclasses.replace(request, mounts=mounts)
            return self._create(client, parent, request, work, cleanup, write_layer, output)

    def _create(self, client: Any, parent: str, request: RunRequest, work: Path, cleanup: list[Any],
                write_layer: WriteLayer, output: Output) -> RunOutcome:
        binds, tmpfs = self._mounts(request, work)
        container = client.containers.create(
            parent,
            entrypoint=[request.argv[0]],
            command=list(request.argv[1:]),
            environment=list(request.env),
            working_dir=request.workdir or "/",
            user=f"{request.uid}:{request.gid}",
            group_add=[str(g) for g in request.groups] or None,
            hostname=request.hostname,
            network_mode="none" if request.network == "none" else "host",
            volumes=binds or None,
            tmpfs=tmpfs or None,
            labels=_LABEL,
            detach=True,
        )
        cleanup.append(lambda: container.remove(force=True, v=True))
        return self._start(client, container, parent, request, work, cleanup, write_layer, output)

    def _start(self, client: Any, container: Any, parent: str, request: RunRequest, work: Path, cleanup: list[Any],
               write_layer: WriteLayer, output: Output) -> RunOutcome:
        tail = OutputTail(output)
        import docker.errors

        try:
            container.start()
        except docker.errors.APIError as exc:
            if "exec" not in str(exc.explanation or exc):
                raise
            # argv[0] cannot be executed: a step failure the user fixes, as a shell's 127
            message = f"running {request.argv[0]!r}: {exc.explanation or exc}\n"
            output(message.encode())
            return RunOutcome(exit_code=127, output_tail=message)
        for chunk in container.logs(stream=True, follow=True):
            tail.feed(chunk)
        code = int(container.wait().get("StatusCode", 1))
        if code != 0:
            return RunOutcome(exit_code=code, output_tail=tail.text())
        committed = container.commit(repository="layerkit-exec-step", tag=uuid.uuid4().hex[:16])
        cleanup.append(lambda: client.images.remove(committed.id, force=True))
        before = client.images.get(parent).attrs["RootFS"].get("Layers") or []
        if committed.attrs["RootFS"].get("Layers", []) == before:
            return RunOutcome(exit_code=0, output_tail=tail.text())  # the Engine adds no layer for no change
        entries = self._top_layer(committed, request, work)
        if not entries:
            return RunOutcome(exit_code=0, output_tail=tail.text())

        def fill(writer: LayerWriter) -> None:
            for entry, host in entries:
                if host:
                    writer.add_file_from_path(entry, host)
                else:
                    writer.add(entry)

        return RunOutcome(exit_code=0, output_tail=tail.text(), layer=write_layer(fill))

    def _top_layer(self, committed: Any, request: RunRequest, work: Path) -> list[tuple[Entry, str]]:
        saved = work / "saved.tar"
        with open(saved, "wb") as f:
            f.writelines(committed.save(chunk_size=CHUNK, named=False))
        layer_tar = work / "layer.tar"
        h = hashlib.sha256()
        with tarfile.open(saved) as tf:
            manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
            member = tf.extractfile(manifest[0]["Layers"][-1])
            assert member is not None
            with open(layer_tar, "wb") as out:
                while chunk := member.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
        saved.unlink()
        expected = committed.attrs["RootFS"]["Layers"][-1]
        if f"sha256:{h.hexdigest()}" != expected:
            raise BuildError(f"reading the committed layer from the Docker Engine: it hashes to sha256:{h.hexdigest()}, "
                             f"not its diff ID {expected}; retry, or check the Engine's storage")
        spool = work / "spool"
        spool.mkdir()
        drop = {clean_member(m.target) for m in request.mounts}
        union: Any = None

        def parent_entry(path: str) -> Entry | None:
            nonlocal union
            if not request.image.layers:
                return None
            if union is None:
                from ...union import Union

                union = Union(request.image)
            try:
                return union.stat(path).entry  # type: ignore[no-any-return]
            except OSError:
                return None

        drop = {d for d in drop if parent_entry(d) is None}
        return normalize_docker_layer(layer_tar, spool, drop, parent_entry)


def create_executor() -> DockerExecutor:
    return DockerExecutor()
