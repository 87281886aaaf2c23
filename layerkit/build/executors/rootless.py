"""The ``rootless`` executor: fuse-overlayfs over the snapshots, or ``bwrap`` over a copy of the rootfs.

For hosts where the native executor cannot run (no kernel overlay mount, e.g. a kernel that refuses
overlayfs in a user namespace). Two ways, the first that works (``mode`` forces one):

**fuse-overlayfs** (``mode="fuse"``): exactly the native executor's step
(:func:`.native.run_on_overlay`, in a user namespace when not root) with the snapshots mounted by
fuse-overlayfs instead of the kernel — it reads the same lower-dir format (0/0 whiteouts,
``user.overlay.opaque``/``trusted.overlay.opaque``) — and its upper dir diffed by
:mod:`.overlay_diff`. Nothing is copied: on the Alpine base a step starts in the time of the mount,
where the copy path first copies the whole rootfs. (``RUN --mount`` binds that are read-write or
``from=`` an image still use a kernel overlay.)

**copy** (``mode="copy"``), the last fallback, one step:

As root (a host without overlayfs, or ``--executor=rootless`` asked for) the step runs in
layerkit's own :mod:`.sandbox` over the copy instead of ``bwrap``: real root inside, groups, chown.

1. the parent's merged rootfs is unpacked once per chain ID (:meth:`.snapshots.Snapshots.rootfs`,
   ``rootless`` ownership when not root) and copied (``cp -a``, reflinks where the filesystem has
   them) into a work dir — the copy is the step's ``/``;
2. ``bwrap`` runs argv in new user, PID, IPC, UTS (and, for ``--network=none``, network)
   namespaces with the step's uid/gid mapped to the caller, a fresh ``/proc`` and ``/dev``, the
   host's ``/sys`` read-only, the ``/etc`` files and ``RUN --mount`` targets bound in;
3. the copy is compared with the untouched rootfs (:func:`.tree_diff.diff_trees`), the mount
   points we had to create are taken out first.

Limits, inherent to one mapped uid: supplementary groups are not set; the step cannot ``chown`` to
other users; files it creates are recorded as owned by the step's uid/gid. Without root, existing
files' owners come from the image's own layer headers (the on-disk copy belongs to the caller)
and device nodes of the parent image are absent from the step's view. Network ``default``/``host``
share the host's network, as in the native executor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ...errors import BuildError
from ..executor import Mount, Output, RunOutcome, RunRequest, WriteLayer
from . import sandbox
from .cache_mounts import hold_cache_mounts
from .launcher import probe
from .native import (
    OutputTail,
    etc_files,
    run_on_overlay,
    run_sandbox,
    sandbox_spec,
)
from .owners import OwnerMap
from .snapshots import Snapshots
from .tree_diff import diff_trees, fs_clock_ns

__all__ = ["RootlessExecutor", "create_executor"]

_probe_result: dict[str, str | None] = {}
MODES = ("auto", "fuse", "copy")


def _bwrap() -> str | None:
    return shutil.which("bwrap")


class RootlessExecutor:
    """``mode``: ``auto`` (fuse-overlayfs when it works here, else the copy), ``fuse`` or ``copy``."""

    name = "rootless"

    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"rootless mode {mode!r}: choose one of {', '.join(MODES)}")
        self.mode = mode

    def unavailable(self) -> str | None:
        if self.mode == "copy":
            return self._copy_unavailable()
        fuse = _fuse_unavailable()
        if fuse is None or self.mode == "fuse":
            return fuse
        copy = self._copy_unavailable()
        return None if copy is None else f"{copy}; and {fuse}"

    def _copy_unavailable(self) -> str | None:
        if shutil.which("cp") is None:
            return "needs cp (coreutils) to copy the root filesystem"
        if os.geteuid() == 0:
            return None  # root runs the step in layerkit's own sandbox over the copy
        if _bwrap() is None:
            return "needs bubblewrap: apt-get install bubblewrap (or dnf install bubblewrap)"
        if "rootless" not in _probe_result:
            try:
                r = subprocess.run(
                    [str(_bwrap()), "--unshare-user", "--unshare-pid", "--ro-bind", "/", "/", "true"],
                    check=False, capture_output=True, text=True, timeout=30,
                )
                reason = None if r.returncode == 0 else r.stderr.strip()[-300:]
            except (OSError, subprocess.SubprocessError) as exc:
                reason = str(exc)
            _probe_result["rootless"] = None if reason is None else (
                f"bwrap cannot create a user namespace here ({reason}); enable unprivileged user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces) or run as root")
        return _probe_result["rootless"]

    def run(self, request: RunRequest, *, write_layer: WriteLayer, output: Output) -> RunOutcome:
        if self.mode != "copy" and _fuse_unavailable() is None:
            return run_on_overlay(request, write_layer, output, fuse_program=str(shutil.which("fuse-overlayfs")))
        snaps = Snapshots(request.store)
        before = snaps.rootfs(request.image)
        work = Path(tempfile.mkdtemp(prefix="run-", dir=request.store.tmp_dir))
        try:
            after = work / "rootfs"
            subprocess.run(["cp", "-a", "--reflink=auto", f"{before}/.", str(after)], check=True, capture_output=True)
            since_ns = fs_clock_ns(work)
            root = str(after)
            made_workdir: list[str] = []  # part of the layer, owned by root (BuildKit creates it so)
            sandbox.resolve_in_root(root, request.workdir or "/", create="dir", created=made_workdir)
            with hold_cache_mounts(request.mounts) as mounts:
                request = dataclasses.replace(request, mounts=mounts)
                if os.geteuid() == 0:
                    # root without overlayfs (or asked for this executor): our own sandbox, real root
                    # inside, so chown, groups and device nodes work; only the diff differs from native
                    code, tail = run_sandbox(sandbox_spec(request, after, None, snaps, work), work, output, request)
                    stubs = json.loads((work / "stubs.json").read_text()) if code == 0 else []
                else:
                    stubs = []
                    args = self._bwrap_args(request, root, snaps, work, stubs)
                    code, tail = self._execute(args, request, output)
            if code != 0:
                return RunOutcome(exit_code=code, output_tail=tail)
            sandbox.remove_stubs(root, stubs)
            changes = diff_trees(str(before), root, since_ns=since_ns)
            changes.fix_entry = OwnerMap(request, lambda path: os.path.lexists(before / path), made_workdir)
            if not len(changes):
                return RunOutcome(exit_code=0, output_tail=tail)
            return RunOutcome(exit_code=0, output_tail=tail, layer=write_layer(changes.write))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _bwrap_args(self, request: RunRequest, root: str, snaps: Snapshots, work: Path,
                    stubs: list[dict[str, Any]]) -> list[str]:
        args = [str(_bwrap()), "--unshare-user", "--uid", str(request.uid), "--gid", str(request.gid),
                "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
                "--hostname", request.hostname, "--bind", root, "/"]
        if request.network == "none":
            args.append("--unshare-net")
        for path, opt in (("/proc", "--proc"), ("/dev", "--dev")):
            sandbox.make_stub(root, path, "dir", stubs)
            args += [opt, path]
        sandbox.make_stub(root, "/sys", "dir", stubs)
        args += ["--ro-bind", "/sys", "/sys"]
        for name, src in sorted(etc_files(request, work / "etc").items()):
            sandbox.make_stub(root, "/etc/" + name, "file", stubs)
            args += ["--bind", src, "/etc/" + name]
        for i, m in enumerate(sorted(request.mounts, key=lambda m: m.target.count("/"))):
            args += self._mount_args(m, i, snaps, work, root, stubs)
        return [*args, "--chdir", request.workdir or "/"]

    def _mount_args(self, m: Mount, i: int, snaps: Snapshots, work: Path, root: str,
                    stubs: list[dict[str, Any]]) -> list[str]:
        what = f"RUN --mount=type={m.type},target={m.target}"
        if m.type == "tmpfs":
            sandbox.make_stub(root, m.target, "dir", stubs)
            return (["--size", str(m.size)] if m.size else []) + ["--tmpfs", m.target]
        if m.type == "bind" and m.image is not None:
            src = Path(sandbox.resolve_in_root(str(snaps.rootfs(m.image)), m.source))
        elif m.host_path is None:
            raise BuildError(f"{what}: the builder passed no host path")
        else:
            src = Path(m.host_path)
        if m.type == "cache":
            src.mkdir(parents=True, exist_ok=True, mode=m.mode if m.mode is not None else 0o755)
            readonly = m.readonly
        elif m.type == "secret":
            sdir = work / "secrets"
            sdir.mkdir(mode=0o700, exist_ok=True)
            copy = sdir / f"secret{i}"
            shutil.copyfile(src, copy)
            copy.chmod(m.mode if m.mode is not None else 0o400)
            src, readonly = copy, True
        elif m.type == "bind":
            if not src.exists():
                raise BuildError(f"{what}: source {src} does not exist")
            readonly = m.readonly
            if not readonly:  # rw: the step writes to a throwaway copy
                copy = work / f"mount{i}"
                if src.is_dir():
                    shutil.copytree(src, copy, symlinks=True)
                else:
                    shutil.copy2(src, copy)
                src = copy
        else:
            raise BuildError(f"{what}: unknown mount type {m.type!r}; use bind, cache, tmpfs or secret")
        sandbox.make_stub(root, m.target, "dir" if src.is_dir() else "file", stubs)
        return ["--ro-bind" if readonly else "--bind", str(src), m.target]

    def _execute(self, args: list[str], request: RunRequest, output: Output) -> tuple[int, str]:
        status_r, status_w = os.pipe()
        args = [args[0], "--json-status-fd", str(status_w), *args[1:], "--", *request.argv]
        env = dict(e.partition("=")[::2] for e in request.env)
        tail = OutputTail(output)
        try:
            proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, pass_fds=(status_w,), close_fds=True)
        finally:
            os.close(status_w)
        try:
            assert proc.stdout is not None
            with proc.stdout:
                fd = proc.stdout.fileno()
                while chunk := os.read(fd, 1 << 16):
                    tail.feed(chunk)
            code = proc.wait()
            with os.fdopen(status_r, "rb") as f:
                status_r = -1
                docs = [json.loads(line) for line in f.read().decode().splitlines() if line.strip().startswith("{")]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if status_r >= 0:
                os.close(status_r)
        if not any("child-pid" in d for d in docs):
            raise BuildError(f"running {request.step or 'RUN'}: bwrap could not set up the sandbox: "
                             f"{tail.text().strip()[-500:]}")
        exits = [d["exit-code"] for d in docs if "exit-code" in d]
        return (exits[-1] if exits else code), tail.text()


def _fuse_unavailable() -> str | None:
    """Why fuse-overlayfs cannot carry a step here (None when it can), probed once per process."""
    key = f"fuse-{os.geteuid()}"
    if key not in _probe_result:
        program = shutil.which("fuse-overlayfs")
        if program is None:
            reason: str | None = "needs fuse-overlayfs: apt-get install fuse-overlayfs"
        elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
            reason = "fuse-overlayfs needs /dev/fuse (modprobe fuse; in a container: --device /dev/fuse)"
        else:
            with tempfile.TemporaryDirectory(prefix="layerkit-probe-") as scratch:
                try:
                    reason = probe(scratch, "", userns=os.geteuid() != 0, fuse_program=program)
                except (OSError, BuildError) as exc:
                    reason = str(exc)
            if reason is not None:
                reason = f"fuse-overlayfs cannot mount the snapshots here ({reason})"
        _probe_result[key] = reason
    return _probe_result[key]


def create_executor() -> RootlessExecutor:
    return RootlessExecutor()
