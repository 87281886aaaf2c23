"""Namespace and mount helpers, and the sandbox process that runs one RUN step (Linux; root, or a
user namespace).

This module is stdlib-only on purpose: it runs as a *script* in its own interpreter because
``unshare(2)`` needs a single-threaded process and the builder's process has worker threads — once
per executor process as the *launcher* (``python -I sandbox.py --serve FD``, see :mod:`.launcher`),
which forks a child per step, or once per use (``SPEC``, ``--probe``). Python 3.11 has no
``os.unshare``, so the syscalls go through ctypes.

What a step's child does, from a JSON spec written by the executor:

1. ``unshare(NEWNS|NEWPID|NEWIPC|NEWUTS [|NEWNET])`` and fork; the child is PID 1 of the new PID
   namespace (when it exits every process of the step dies with it, like BuildKit's runc).
2. the child makes every mount private, mounts the step's overlay, creates *stubs* for mount points
   missing from the image (recorded in a JSON file so the executor removes them from the change set
   and restores the parent's mtime, as BuildKit's stub cleanup does), mounts ``/proc``, a minimal
   ``/dev``, ``/sys`` read-only, ``/etc/hosts|resolv.conf|hostname`` bind-mounted from temp files,
   and the ``RUN --mount`` targets — each resolved *inside* the rootfs (symlinks followed as if the
   rootfs were ``/``), so an image symlink cannot redirect a mount onto the host;
3. ``pivot_root`` into the rootfs (not just chroot: root in a chroot can walk out), sets the
   hostname, brings ``lo`` up in a new network namespace, creates the workdir, drops to the
   requested uid/gid/groups and execs ``argv`` with exactly ``env``.

Without root (spec ``userns``), step 1 also makes a user namespace owning the others, with the
caller mapped to the step's uid/gid (one id each: no ``newuidmap`` helper is involved), so every
mount is made with the namespace's capabilities: overlayfs needs ``userxattr`` then, device nodes
are bind-mounted from the host's ``/dev`` (a namespace cannot ``mknod`` them), read-only remounts
keep the flags the kernel locked on host mounts, and supplementary groups cannot be set.

Infrastructure failures are written to the status fd (close-on-exec, so a successful exec leaves it
empty) and the script exits 125; otherwise its exit status is the step's.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from typing import Any

__all__ = [
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "INFRA_EXIT",
    "enter_userns",
    "main",
    "make_stub",
    "mount",
    "mount_fuse_overlay",
    "remount_readonly",
    "remove_stubs",
    "resolve_in_root",
    "run_spec",
    "serve",
    "umount",
    "unshare",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
SYS_PIVOT_ROOT = 155  # x86_64
SYS_PIVOT_ROOT_BY_ARCH = {"x86_64": 155, "aarch64": 41, "armv7l": 218, "ppc64le": 203, "s390x": 217, "riscv64": 41}

#: exit status of the sandbox script when setting up (not the step) failed
INFRA_EXIT = 125

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype is not None else None,
            flags,
            data.encode() if data is not None else None,
        ),
        f"mount {fstype or 'bind'} {source} on {target}",
    )


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def enter_userns(flags: int, uid: int, gid: int) -> None:
    """``unshare(CLONE_NEWUSER | flags)`` and map the caller's uid/gid to ``uid``/``gid`` inside
    (``setgroups`` denied, as the kernel requires for an unprivileged gid map)."""
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER | flags)
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {outer_uid} 1"), ("gid_map", f"{gid} {outer_gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


# statvfs flag -> mount flag, for the flags a user namespace may not drop from a host mount
_LOCKED = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
           (os.ST_NOATIME, 1024), (os.ST_NODIRATIME, 2048), (os.ST_RELATIME, 1 << 21))


def remount_readonly(target: str) -> None:
    """Make the bind mount at ``target`` read-only. In a user namespace the kernel refuses to clear
    flags it locked on a host mount (nosuid, nodev, atime…), so retry with the mount's own flags."""
    try:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    except PermissionError:
        have = os.statvfs(target).f_flag
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | sum(ms for st, ms in _LOCKED if have & st))


def mount_fuse_overlay(fuse: dict[str, str], target: str) -> None:
    """Mount fuse-overlayfs (``fuse["program"]`` with ``fuse["options"]``) on ``target``.

    This process makes the FUSE mount itself and hands the ``/dev/fuse`` fd to the daemon as
    ``/dev/fd/N`` (libfuse >= 3.3): in a user namespace where the caller stands for a non-root uid,
    an exec'd daemon has no capabilities left to mount with. Started from inside the sandbox's
    namespaces, the daemon lives in the step's PID namespace and is killed with it: nothing to
    unmount or reap afterwards."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        rootmode = stat.S_IFMT(os.stat(target).st_mode)
        mount("fuse-overlayfs", target, "fuse", 0,
              f"fd={fd},rootmode={rootmode:o},user_id={os.geteuid()},group_id={os.getegid()},"
              "allow_other,default_permissions")
        # stderr to a file, not a pipe: the daemon keeps it open, so a pipe would never reach EOF
        with tempfile.TemporaryFile() as errors:
            r = subprocess.run([fuse["program"], "-o", fuse["options"], f"/dev/fd/{fd}"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=errors, pass_fds=(fd,), check=False)
            if r.returncode != 0:
                errors.seek(0)
                err = errors.read().decode("utf-8", "replace").strip()[-300:]
                raise OSError(errno.EIO, f"fuse-overlayfs on {target} failed ({r.returncode}): {err}")
    finally:
        os.close(fd)


def _pivot_root(new_root: str, put_old: str) -> None:
    nr = SYS_PIVOT_ROOT_BY_ARCH.get(os.uname().machine, SYS_PIVOT_ROOT)
    _check(_libc.syscall(nr, new_root.encode(), put_old.encode()), "pivot_root")


def resolve_in_root(root: str, path: str, *, create: str | None = None, created: list[str] | None = None) -> str:
    """Host path of ``path`` inside ``root``, symlinks resolved as if ``root`` were ``/``.

    ``create`` (``"dir"`` or ``"file"``) makes missing components (directories, then the last one
    of that kind) and appends each created in-root path to ``created``. Like securejoin: ``..`` and
    absolute link targets never leave ``root``.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        comp = parts.pop(0)
        if comp == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, comp)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            if create is None:
                done.append(comp)
                continue
            last = not parts
            if last and create == "file":
                os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
            else:
                os.mkdir(host, 0o755)
            if created is not None:
                created.append("/".join([*done, comp]))
            done.append(comp)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, f"too many symlinks resolving {path!r}")
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            parts[:0] = [p for p in target.split("/") if p not in ("", ".")]
            continue
        done.append(comp)
    return os.path.join(root, *done)


#: what fuse-overlayfs puts in a directory it creates in the upper dir (opaque markers)
_FUSE_MARKERS = frozenset({".wh..wh..opq", ".wh..opq"})


def remove_stubs(tree: str | os.PathLike[str], stubs: list[dict[str, Any]]) -> None:
    """Take the mount points :func:`make_stub` created out of ``tree`` (an upper dir or a rootfs),
    deepest first and only if still empty, and give their parents back their mtime when the step
    did not touch them."""
    restore: dict[str, int] = {}
    last_after: dict[str, int] = {}
    for stub in stubs:
        restore.setdefault(stub["parent"], stub["parent_mtime_before"])
        last_after[stub["parent"]] = stub["parent_mtime_after"]
    untouched = set()
    for parent, after in last_after.items():
        try:
            if os.lstat(os.path.join(tree, parent)).st_mtime_ns == after:
                untouched.add(parent)
        except FileNotFoundError:
            pass
    for stub in reversed(stubs):
        for rel in reversed(stub["created"]):
            host = os.path.join(tree, rel)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    names = os.listdir(host)
                    if names and set(names) <= _FUSE_MARKERS:  # only fuse-overlayfs' opaque markers
                        for name in names:
                            os.unlink(os.path.join(host, name))
                    os.rmdir(host)
                except OSError:
                    pass  # the step put something there: it is part of the layer
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(host)
    for parent in untouched:
        os.utime(os.path.join(tree, parent), ns=(restore[parent], restore[parent]), follow_symlinks=False)


# -- the sandbox child ------------------------------------------------------------------------------

_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))


def _mount_dev(dev: str, userns: bool = False) -> None:
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
    for name, major, minor in _DEVICES:
        node = os.path.join(dev, name)
        if userns:  # no mknod in a user namespace: bind the host's node (as bwrap does)
            os.close(os.open(node, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            mount("/dev/" + name, node, None, MS_BIND)
            continue
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(node, 0o666)
    for sub, mode in (("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o755)):
        os.mkdir(os.path.join(dev, sub), mode)
    # gid 5 (tty) is unmapped in a user namespace of one id
    mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620" + ("" if userns else ",gid=5"))
    mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))


def _lo_up() -> None:
    """``ip link set lo up`` through SIOCSIFFLAGS, so no tool is needed in the image."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), siocgifflags, req))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


def make_stub(root: str, target: str, kind: str, stubs: list[dict[str, Any]]) -> str:
    """Resolve a mount target in the rootfs, creating (and recording) what is missing."""
    created: list[str] = []
    parent_times: dict[str, int] = {}
    # remember the mtime of the deepest existing ancestor before we create anything under it
    probe = resolve_in_root(root, target)
    if not os.path.lexists(probe):
        anc = os.path.dirname(probe)
        while not os.path.lexists(anc) and anc != root:
            anc = os.path.dirname(anc)
        parent_times[os.path.relpath(anc, root)] = os.lstat(anc).st_mtime_ns
    host = resolve_in_root(root, target, create=kind, created=created)
    if created:
        (anc_rel, mtime_before), = parent_times.items()
        stubs.append({
            "created": created,
            "parent": anc_rel,
            "parent_mtime_before": mtime_before,
            "parent_mtime_after": os.lstat(os.path.join(root, anc_rel)).st_mtime_ns,
        })
    return host


def _setup(spec: dict[str, Any]) -> None:
    root = spec["rootfs"]
    os.chdir(spec["overlay_cwd"])  # relative lower dir names in the overlay options start here
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if spec.get("fuse_overlay"):
        mount_fuse_overlay(spec["fuse_overlay"], root)
        # pivot_root re-roots every process of the mount namespace that shares the old root — the
        # FUSE daemon too, which would then resolve its own paths through the mount it serves and
        # hang: the step gets a mount namespace of its own (with a copy of the mount) instead
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    elif spec["overlay"]:
        mount("overlay", root, "overlay", 0, spec["overlay"])
    else:  # a plain tree (the rootless executor's copy): pivot_root needs a mount point
        mount(root, root, None, MS_BIND | MS_REC)
    stubs: list[dict[str, Any]] = []
    # kernel filesystems
    proc = make_stub(root, "/proc", "dir", stubs)
    mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = make_stub(root, "/dev", "dir", stubs)
    _mount_dev(dev, userns=bool(spec.get("userns")))
    sysfs = make_stub(root, "/sys", "dir", stubs)
    try:
        mount("sysfs", sysfs, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:  # sysfs is refused without a network namespace of our own: bind the host's read-only
        mount("/sys", sysfs, None, MS_BIND | MS_REC)
        remount_readonly(sysfs)
    # /etc/hosts, resolv.conf, hostname: bound from files outside the rootfs, so they never reach the layer
    for name, src in sorted(spec["etc"].items()):
        tgt = make_stub(root, "/etc/" + name, "file", stubs)
        mount(src, tgt, None, MS_BIND)
    # RUN --mount targets, shallow first so nested targets land on their parents' mounts
    for m in sorted(spec["mounts"], key=lambda m: m["target"].count("/")):
        kind = "dir" if m["kind"] in ("tmpfs", "overlay") or m.get("is_dir", True) else "file"
        tgt = make_stub(root, m["target"], kind, stubs)
        if m["kind"] == "tmpfs":
            opts = "mode=1777" + (f",size={m['size']}" if m.get("size") else "")
            mount("tmpfs", tgt, "tmpfs", MS_NOSUID | MS_NODEV, opts)
            continue
        src = m.get("source", "")
        if m["kind"] == "overlay":  # rw bind of a directory: writes land in a throwaway upper
            mount("overlay", m["mountpoint"], "overlay", 0, m["options"])
            src = os.path.join(m["mountpoint"], m.get("subpath", "").lstrip("/"))
        mount(src, tgt, None, MS_BIND | MS_REC)
        if m.get("readonly"):
            remount_readonly(tgt)
    with open(spec["stubs_file"], "w") as f:
        json.dump(stubs, f)
    # enter the rootfs for good
    os.chdir(root)
    _pivot_root(".", ".")
    umount(".", MNT_DETACH)
    os.chdir("/")
    hostname = spec["hostname"].encode()
    _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
    if spec["network"] == "none":
        _lo_up()
    workdir = resolve_in_root("/", spec["workdir"], create="dir")
    os.chdir(workdir)
    if not spec.get("userns"):  # setgroups is denied in an unprivileged user namespace
        os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.umask(0o022)


def _child(spec: dict[str, Any], status_fd: int) -> None:
    phase = "setup"
    try:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _setup(spec)
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in spec["env"])
        argv = spec["argv"]
        fcntl.fcntl(status_fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        phase = "exec"
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - report and leave: nothing of the parent interpreter may run on
        try:
            os.write(status_fd, f"{phase}: {exc}".encode("utf-8", "replace"))
        finally:
            os._exit(INFRA_EXIT)


def probe(scratch: str, options: str, userns: bool, fuse_program: str = "") -> str | None:
    """Why a sandbox cannot be made here (None when it can): the namespaces (in a user namespace
    when ``userns``), an overlay mount with ``options`` over a scratch dir (by ``fuse_program``
    when given), and a deletion in it recorded as a whiteout — the three things a step needs."""
    what = "creating namespaces"
    try:
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
        if userns:
            what = "creating a user namespace"
            enter_userns(flags, 0, 0)
        else:
            unshare(flags)
    except OSError as exc:
        return f"{what}: {exc}"
    # the rest runs as PID 1 of the new namespace, as a step does (a FUSE daemon must not be PID 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # a probe that hangs is killed with its parent
        os.close(r)
        reason = _probe_mounts(scratch, options, userns, fuse_program)
        os.write(w, (reason or "").encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reason = f.read().decode("utf-8", "replace")
    os.waitpid(pid, 0)
    return reason or None


def _probe_mounts(scratch: str, options: str, userns: bool, fuse_program: str) -> str | None:
    what = "making mounts private"
    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        lower, upper, work, merged = (os.path.join(scratch, d) for d in ("lower", "upper", "work", "merged"))
        for d in (lower, upper, work, merged):
            os.mkdir(d)
        with open(os.path.join(lower, "f"), "w"):
            pass
        what = ("mounting fuse-overlayfs" if fuse_program else "mounting overlayfs") + (
            " in a user namespace" if userns else "")
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}" + (f",{options}" if options else "")
        if fuse_program:
            mount_fuse_overlay({"program": fuse_program, "options": opts}, merged)
        else:
            mount("overlay", merged, "overlay", 0, opts)
        what = "deleting a file on overlayfs"
        os.unlink(os.path.join(merged, "f"))
        try:
            st = os.lstat(os.path.join(upper, "f"))
            ok = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        except FileNotFoundError:  # fuse-overlayfs without mknod writes a .wh.f file
            ok = os.path.exists(os.path.join(upper, ".wh.f"))
        if not ok:
            return f"{what}: the upper dir holds no whiteout"
        if not userns and not fuse_program:
            what = "creating a device node"
            os.mknod(os.path.join(merged, "probe"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError as exc:
        return f"{what}: {exc}"
    return None


def run_spec(spec: dict[str, Any]) -> int:
    """Run the step ``spec`` describes (this process becomes the parent of its PID 1): its exit
    status, or :data:`INFRA_EXIT` after writing why to ``spec["status_fd"]``."""
    status_fd = int(spec["status_fd"])
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if spec["network"] == "none":
        flags |= CLONE_NEWNET
    userns = spec.get("userns")
    try:
        if userns:
            enter_userns(flags, userns["uid"], userns["gid"])
        else:
            unshare(flags)
    except OSError as exc:
        os.write(status_fd, f"setup: {exc}".encode())
        return INFRA_EXIT
    pid = os.fork()
    if pid == 0:
        _child(spec, status_fd)
    os.close(status_fd)
    # forward termination to the step (PID 1 of its namespace takes the whole namespace down)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(pid, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return INFRA_EXIT
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# -- the launcher -----------------------------------------------------------------------------------
#
# Starting this script costs a Python interpreter start (~0.1 s of CPU, more under load) — most of a
# small step's cost. The executor's process cannot fork its own sandboxes (it has threads; unshare
# needs a single thread, and a forked copy of a threaded interpreter may hold another thread's
# locks), so it starts this script once as a *launcher* (``--serve FD``): a single-threaded process
# that forks one child per request from its warm interpreter. Requests come over a SOCK_SEQPACKET
# socket as JSON with their file descriptors attached (SCM_RIGHTS); the reply is the child's pid, so
# the executor can kill it. The child reports its result — the step's exit status, or a probe's
# verdict — on the last descriptor it was given. The launcher leaves when the executor's end of the
# socket closes (the executor exited), and its children die with it (PR_SET_PDEATHSIG).


def _launched(request: dict[str, Any], fds: list[int]) -> None:
    """One launched child: ``run`` (fds: output, status, result) or ``probe`` (fds: result)."""
    code = INFRA_EXIT
    result = fds[-1]
    try:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the launcher died before prctl: nobody is waiting for us
            os._exit(INFRA_EXIT)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for fd in fds:
            os.set_inheritable(fd, False)
        if request["op"] == "probe":
            reason = probe(request["scratch"], request["options"], request["userns"], request.get("fuse", ""))
            code = 0
            os.write(result, ("0 " + (reason or "")).encode("utf-8", "replace"))
            return
        out, status = fds[0], fds[1]
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        with open(request["spec_file"]) as f:
            spec = json.load(f)
        spec["status_fd"] = status
        code = run_spec(spec)
        os.write(result, b"%d" % code)
    except BaseException as exc:  # noqa: BLE001 - a forked copy of the launcher must never return into its loop
        try:
            os.write(result, f"{INFRA_EXIT} {exc}".encode("utf-8", "replace"))
        except OSError:
            pass
    finally:
        os._exit(code)


def serve(fd: int) -> int:
    """The launcher loop on the socket ``fd`` (see above); returns when the executor is gone."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    # Ctrl-C reaches the whole process group: the executor handles it (and kills its launched children)
    signal.signal(signal.SIGINT, lambda _s, _f: None)
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 8)
        except OSError:
            return 0
        if not data:  # the executor's end closed
            return 0
        while True:  # reap finished children (a zombie until now, so the executor's kill never hits a reused pid)
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        try:
            request = json.loads(data)
            pid = os.fork()
        except BaseException as exc:  # noqa: BLE001 - reply, keep serving
            for f in fds:
                os.close(f)
            sock.send(f"error {exc}".encode("utf-8", "replace"))
            continue
        if pid == 0:
            sock.close()
            _launched(request, fds)
        for f in fds:
            os.close(f)
        sock.send(b"%d" % pid)


def main(argv: list[str]) -> int:
    if argv[1] == "--serve":  # --serve SOCKET-FD
        return serve(int(argv[2]))
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the executor died: take the step down too
    if argv[1] == "--probe":  # --probe SCRATCH OVERLAY-OPTIONS userns|root [FUSE-PROGRAM]
        reason = probe(argv[2], argv[3], argv[4] == "userns", argv[5] if len(argv) > 5 else "")
        print(reason or "ok")
        return 0 if reason is None else 1
    with open(argv[1]) as f:
        return run_spec(json.load(f))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
