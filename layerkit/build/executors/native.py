"""The ``native`` executor: Linux namespaces + overlayfs over cached per-layer snapshots.

One step: the parent's layers are (or become) snapshot dirs (:mod:`.snapshots`); an overlay mounts
them newest-first under a fresh upper dir in the store's ``tmp`` dir; :mod:`.sandbox` runs argv in
new mount/PID/IPC/UTS namespaces (plus a network namespace with only ``lo`` for ``--network=none``)
after ``pivot_root``; the upper dir then becomes the layer (:mod:`.overlay_diff`).

Without root it runs the same way inside a user namespace where the kernel allows overlayfs there
(Linux ≥ 5.11): the caller is mapped to the step's uid/gid, the overlay is mounted with
``userxattr`` over the *userxattr* snapshots (:mod:`.snapshots`), and the owners of the changes are
read back from the image (:mod:`.owners`). Limits of one mapped id, as for ``rootless``: no
``chown`` to other users, no supplementary groups, no device nodes from the parent image.
:meth:`NativeExecutor.unavailable` says which of the three things a step needs the kernel refused.

Network: ``none`` → own namespace, loopback only. ``default`` and ``host`` → the host's network
(what BuildKit's default gives a step: outbound access, e.g. ``apk add``).

Mounts (``RUN --mount``): a context ``bind`` is bound read-only, or — ``rw`` — through an overlay with
a throwaway upper dir (a file is copied); ``from=`` an image is an overlay of *its* snapshots;
``cache`` binds the persistent host dir (sharing modes: :mod:`.cache_mounts`); ``tmpfs`` is a tmpfs; ``secret`` is a copy with the asked
mode/owner in a private temp dir, bound read-only. Mount points the image lacked are removed from
the change set and their parent's mtime restored, so mounts never show in the layer.

Cache keys: nothing here reads ``RunRequest.extra`` or any host path into the layer; secrets are
only ever file *paths* in the request (the builder must hash the secret id, not the content).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ...errors import BuildError
from ...spec import chain_ids
from ..executor import Mount, Output, RunOutcome, RunRequest, WriteLayer
from . import sandbox
from .cache_mounts import hold_cache_mounts
from .launcher import SANDBOX_SCRIPT, launch, probe
from .overlay_diff import (
    MOUNT_OPTIONS,
    USERXATTR_MOUNT_OPTIONS,
    LowerView,
    overlay_changes,
    restore_copy_up_times,
)
from .owners import OwnerMap
from .snapshots import Snapshots

__all__ = ["SANDBOX_SCRIPT", "TAIL_BYTES", "NativeExecutor", "OutputTail", "create_executor", "etc_files",
           "explain_probe", "run_on_overlay"]

#: bytes of the step's output kept for error messages
TAIL_BYTES = 8192
_probe_result: dict[bool, str | None] = {}
#: a ``write_layer`` that does not say how it clamps mtimes (``source_date_epoch``, as the builder's
#: LayerFactory does): its layer's snapshot cannot be predicted, so it is unpacked when needed
_UNKNOWN = object()


def _unprivileged() -> bool:
    return os.geteuid() != 0


def _mount_options() -> str:
    return USERXATTR_MOUNT_OPTIONS if _unprivileged() else MOUNT_OPTIONS


class OutputTail:
    """Streams output chunks to ``output`` and keeps the last :data:`TAIL_BYTES` for messages."""

    def __init__(self, output: Output) -> None:
        self._output = output
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._output(chunk)
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= TAIL_BYTES:
            self._size -= len(self._chunks.popleft())

    def text(self, extra: str = "") -> str:
        data = b"".join(self._chunks)[-TAIL_BYTES:]
        return data.decode("utf-8", "replace") + extra


def etc_files(request: RunRequest, into: Path) -> dict[str, str]:
    """``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname`` for the step, as temp files."""
    into.mkdir(parents=True, exist_ok=True)
    hosts = f"127.0.0.1\tlocalhost {request.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    try:
        resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        resolv = ""
    if request.network == "none" or not resolv.strip():
        resolv = ""  # nothing to resolve without a network; an empty file keeps libc quiet
    files = {"hosts": hosts, "resolv.conf": resolv, "hostname": request.hostname + "\n"}
    out: dict[str, str] = {}
    for name, text in files.items():
        path = into / name
        path.write_text(text)
        path.chmod(0o644)
        out[name] = str(path)
    return out


def _opt_path(path: str | os.PathLike[str], work: Path) -> str:
    """A path usable inside overlay mount options (no ``,`` ``:`` ``\\``): a symlink if needed."""
    text = os.fspath(path)
    if not any(c in text for c in ",:\\="):
        return text
    link = Path(tempfile.mktemp(prefix="l", dir=work))
    link.symlink_to(text)
    return str(link)


def _overlay_opts(lowers: list[str], upper: Path, workdir: Path, work: Path, snaps: Snapshots | None = None) -> str:
    """Overlay mount options. Snapshot lower dirs are named relative to the snapshots root (the
    sandbox mounts from there, as containerd does): mount data is one page, and 64-hex names keep
    ~60 layers within it where absolute paths would allow far fewer."""
    root = str(snaps.root) + "/" if snaps is not None else None
    low = ":".join(d[len(root):] if root and d.startswith(root) and "/" not in d[len(root):] else _opt_path(d, work)
                   for d in lowers)
    return f"lowerdir={low},upperdir={_opt_path(upper, work)},workdir={_opt_path(workdir, work)},{_mount_options()}"


def _copy_owned(src: Path, dst: Path, mode: int, uid: int, gid: int) -> None:
    shutil.copyfile(src, dst)
    _chown(dst, uid, gid)
    os.chmod(dst, mode)


def _chown(path: Path, uid: int, gid: int) -> None:
    """chown as root; without root the caller's files already are the step's (one mapped id)."""
    if not _unprivileged():
        os.chown(path, uid, gid)


class NativeExecutor:
    name = "native"

    def unavailable(self) -> str | None:
        if not sys.platform.startswith("linux"):
            return "needs Linux (namespaces and overlayfs)"
        return _probe(_unprivileged())

    def run(self, request: RunRequest, *, write_layer: WriteLayer, output: Output) -> RunOutcome:
        return run_on_overlay(request, write_layer, output)

    def snapshots(self, store: Any) -> Snapshots:
        """Where this executor's steps find their parent's layers unpacked: a builder that knows a
        layer's entries as it writes them (COPY, ADD) stages the snapshot there too
        (:meth:`.snapshots.Snapshots.stage`), so the next step unpacks nothing."""
        return Snapshots(store)


def run_on_overlay(request: RunRequest, write_layer: WriteLayer, output: Output, fuse_program: str = "") -> RunOutcome:
    """One step on an overlay of the parent's snapshots: kernel overlayfs, or ``fuse_program``
    (fuse-overlayfs, for the rootless executor) mounted inside the sandbox; the upper dir is the layer."""
    store = request.store
    snaps = Snapshots(store)
    lowers = [str(p) for p in snaps.lowerdirs(request.image)]
    work = Path(tempfile.mkdtemp(prefix="run-", dir=store.tmp_dir))
    try:
        upper, ovwork, rootfs = work / "upper", work / "work", work / "rootfs"
        for d in (upper, ovwork, rootfs):
            d.mkdir()
        with hold_cache_mounts(request.mounts) as mounts:
            request = dataclasses.replace(request, mounts=mounts)
            if fuse_program:  # absolute lower paths: fuse-overlayfs has no mount-page limit
                low = ":".join(_opt_path(d, work) for d in lowers)
                spec = sandbox_spec(request, rootfs, None, snaps, work)
                spec["fuse_overlay"] = {"program": fuse_program, "options":
                                        f"lowerdir={low},upperdir={_opt_path(upper, work)},workdir={_opt_path(ovwork, work)}"}
            else:
                spec = sandbox_spec(request, rootfs, _overlay_opts(lowers, upper, ovwork, work, snaps), snaps, work)
            code, tail = run_sandbox(spec, work, output, request)
        if code != 0:
            return RunOutcome(exit_code=code, output_tail=tail)
        if fuse_program:
            restore_copy_up_times(upper, lowers)
        sandbox.remove_stubs(upper, json.loads((work / "stubs.json").read_text()))
        changes = overlay_changes(upper, lowers)
        if snaps.userxattr:  # one mapped id: owners come back from the image
            view = LowerView(lowers)
            changes.fix_entry = OwnerMap(request, lambda path: view.lookup(path) is not None,
                                         _new_dirs(request.workdir, view))
        if not len(changes):
            return RunOutcome(exit_code=0, output_tail=tail)
        epoch: Any = getattr(write_layer, "source_date_epoch", _UNKNOWN)
        if fuse_program or snaps.userxattr or epoch is _UNKNOWN:
            layer = write_layer(changes.write)
        else:  # the upper dir becomes the new layer's snapshot: the next step needs no unpacking
            written = changes.entries()
            size = sum(entry.size for entry, _host in written)
            layer = write_layer(lambda writer: changes.write(writer, written), size_hint=size)  # type: ignore[call-arg]
            chain = chain_ids([*(lay.diff_id for lay in request.image.layers), layer.diff_id])[-1]
            snaps.adopt(upper, chain, written, None if epoch is None else int(epoch) * 1_000_000_000)
        return RunOutcome(exit_code=0, output_tail=tail, layer=layer)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _new_dirs(workdir: str, view: LowerView) -> list[str]:
    """The components of ``workdir`` the parent image lacks (the sandbox creates them, root's)."""
    out, path = [], ""
    for comp in [c for c in workdir.split("/") if c not in ("", ".")]:
        path = f"{path}/{comp}" if path else comp
        if view.lookup(path) is None:
            out.append(path)
    return out


def sandbox_spec(request: RunRequest, rootfs: Path, overlay: str | None, snaps: Snapshots, work: Path) -> dict[str, Any]:
    """The JSON spec :mod:`.sandbox` runs: ``rootfs`` is the overlay mount point, or (``overlay``
    None) a plain tree the step runs in directly."""
    return {
        "rootfs": str(rootfs),
        "overlay": overlay,
        "argv": list(request.argv),
        "env": list(request.env),
        "workdir": request.workdir or "/",
        "uid": request.uid,
        "gid": request.gid,
        "groups": list(request.groups),
        "hostname": request.hostname,
        "network": "none" if request.network == "none" else "host",
        "etc": etc_files(request, work / "etc"),
        "mounts": [_mount_spec(m, i, snaps, work) for i, m in enumerate(request.mounts)],
        "stubs_file": str(work / "stubs.json"),
        "overlay_cwd": str(snaps.root),
        # without root: a user namespace, the caller standing for the step's ids
        "userns": {"uid": request.uid, "gid": request.gid} if _unprivileged() else None,
    }


def _mount_spec(m: Mount, i: int, snaps: Snapshots, work: Path) -> dict[str, Any]:
    what = f"RUN --mount=type={m.type},target={m.target}"
    base: dict[str, Any] = {"target": m.target, "readonly": m.readonly}
    if m.type == "tmpfs":
        return {**base, "kind": "tmpfs", "size": m.size, "readonly": False}
    if m.type == "bind" and m.image is not None:
        # from= a stage or image: an overlay of its snapshots; writes (rw) go to a throwaway upper
        mdir = work / f"mount{i}"
        for sub in ("upper", "work", "mnt"):
            (mdir / sub).mkdir(parents=True)
        lowers = [str(p) for p in snaps.lowerdirs(m.image)]
        return {**base, "kind": "overlay", "mountpoint": str(mdir / "mnt"), "subpath": m.source,
                "options": _overlay_opts(lowers, mdir / "upper", mdir / "work", work, snaps)}
    if m.host_path is None:
        raise BuildError(f"{what}: the builder passed no host path")
    src = Path(m.host_path)
    if m.type == "cache":
        if not src.exists():
            src.mkdir(parents=True, mode=0o755)
            _chown(src, m.uid, m.gid)
            os.chmod(src, m.mode if m.mode is not None else 0o755)
        return {**base, "kind": "bind", "source": str(src), "is_dir": True}
    if m.type == "secret":
        sdir = work / "secrets"
        sdir.mkdir(mode=0o700, exist_ok=True)
        copy = sdir / f"secret{i}"
        _copy_owned(src, copy, m.mode if m.mode is not None else 0o400, m.uid, m.gid)
        return {**base, "kind": "bind", "source": str(copy), "is_dir": False, "readonly": True}
    if m.type != "bind":
        raise BuildError(f"{what}: unknown mount type {m.type!r}; use bind, cache, tmpfs or secret")
    if not src.exists():
        raise BuildError(f"{what}: source {src} does not exist")
    if m.readonly:
        return {**base, "kind": "bind", "source": str(src), "is_dir": src.is_dir()}
    if src.is_dir():
        mdir = work / f"mount{i}"
        for sub in ("upper", "work", "mnt"):
            (mdir / sub).mkdir(parents=True)
        return {**base, "kind": "overlay", "mountpoint": str(mdir / "mnt"), "subpath": "",
                "options": _overlay_opts([str(src)], mdir / "upper", mdir / "work", work)}
    copy = work / f"mount{i}-file"
    shutil.copy2(src, copy)
    return {**base, "kind": "bind", "source": str(copy), "is_dir": False}

def run_sandbox(spec: dict[str, Any], work: Path, output: Output, request: RunRequest) -> tuple[int, str]:
    """Run :mod:`.sandbox` on ``spec`` (forked by the :mod:`.launcher`); ``(exit code, output
    tail)``. A command that cannot be executed is exit 127 (as a shell reports it); a sandbox that
    cannot be set up is a BuildError."""
    spec_file = work / "spec.json"
    spec_file.write_text(json.dumps(spec))
    tail = OutputTail(output)
    out_r, out_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        child = launch({"op": "run", "spec_file": str(spec_file)}, [out_w, status_w])
    except BaseException:
        os.close(out_r)
        os.close(status_r)
        raise
    finally:
        os.close(out_w)
        os.close(status_w)
    done = False
    try:
        while chunk := os.read(out_r, 1 << 16):
            tail.feed(chunk)
        code, problem = child.result()
        with os.fdopen(status_r, "rb") as f:
            status_r = -1
            status = f.read().decode("utf-8", "replace")
        done = True
    finally:
        if not done:
            child.kill()
        child.close()
        os.close(out_r)
        if status_r >= 0:
            os.close(status_r)
    if status.startswith("exec: "):
        # like a shell's "command not found": the step failed, the user fixes the Dockerfile
        message = f"\nrunning {request.argv[0]!r}: {status[6:]}\n"
        output(message.encode())
        return 127, tail.text(message)
    if status or problem:
        raise BuildError(f"running {request.step or 'RUN'}: setting up the sandbox failed: "
                         f"{(status or problem).removeprefix('setup: ')}")
    return code, tail.text()


def _probe(unprivileged: bool) -> str | None:
    if unprivileged not in _probe_result:
        with tempfile.TemporaryDirectory(prefix="layerkit-probe-") as scratch:
            try:
                reason = probe(scratch, _mount_options(), userns=unprivileged)
            except (OSError, BuildError) as exc:
                reason = str(exc)
        _probe_result[unprivileged] = None if reason is None else explain_probe(reason, unprivileged)
    return _probe_result[unprivileged]


def explain_probe(reason: str, unprivileged: bool) -> str:
    """What a failed sandbox probe means, and what to do about it."""
    if not unprivileged:
        return (f"cannot create namespaces and an overlay mount here ({reason}); run on a host or a privileged "
                "container, or use --executor=docker")
    if reason.startswith("creating a user namespace"):
        fix = ("unprivileged user namespaces are disabled: set sysctl user.max_user_namespaces > 0 (and "
               "kernel.unprivileged_userns_clone=1 or kernel.apparmor_restrict_unprivileged_userns=0 where they exist)")
    elif reason.startswith("mounting overlayfs"):
        fix = "this kernel refuses overlayfs in a user namespace (it needs Linux >= 5.11 with the userxattr option)"
    else:
        fix = "overlayfs in a user namespace cannot record deletions here"
    return f"not root, and {fix} ({reason}); run as root, or use --executor=rootless"


def create_executor() -> NativeExecutor:
    return NativeExecutor()
