"""Filesystem writes confined to one directory tree, whatever the (hostile) paths asked for.

Every operation starts from an open file descriptor of the root and resolves the *parent* of the
target path component by component in the kernel; the last component is then acted on with
``dir_fd`` and never followed (``O_NOFOLLOW``, ``AT_SYMLINK_NOFOLLOW``). ``os.path.realpath`` and
string prefix checks on attacker data are never used.

Two resolution policies for intermediate components:

- ``"in-root"`` (default, umoci's and containerd's behaviour): a symlink met while resolving a parent
  is followed *inside the root*, as if the root were ``/`` — an absolute target or a ``..`` at the top
  stays in the root (``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``; on kernels before 5.6 the
  same walk is done by hand with ``O_PATH | O_NOFOLLOW`` and ``readlinkat``).
- ``"never"``: any symlink (or ``..``) in an intermediate component is refused with
  :class:`UnsafePathError`. The unpacker uses this: the union index guarantees that every ancestor of
  a surviving path is a real directory, so meeting a symlink there means something is wrong and
  writing must stop. Nothing is ever followed, so no openat2 is needed: each component is opened
  from its parent's fd with ``O_NOFOLLOW | O_DIRECTORY``, which a symlink fails (usually just one
  component, below the cached parent).

openat2 has no Python binding; it is called through ``ctypes``, imported on the first ``"in-root"``
lookup (an unpack never pays for that import).

Refusals raise ``UnsafePathError(path, reason)``; ordinary failures (ENOSPC, EPERM, ENOENT) are the
``OSError`` the kernel gave. Paths are root-relative (a leading ``/`` is ignored).
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from typing import Any, BinaryIO, Literal, Self

from ..digest import CHUNK
from ..errors import UnsafePathError

__all__ = ["Resolve", "SafeRoot", "openat2_available"]

Resolve = Literal["in-root", "never"]

_SYS_OPENAT2 = 437  # same number on every Linux architecture (new syscalls share the table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_MAX_SYMLINKS = 40
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_O_DIR_READ = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@functools.cache
def _openat2_call() -> Any:
    """``call(dirfd, path, flags, resolve) -> fd`` for the openat2 syscall, or ``None`` without a libc."""
    import ctypes

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no dynamic libc
        return None

    def call(dirfd: int, path: str, flags: int, resolve: int) -> int:
        how = OpenHow(flags, 0, resolve)
        raw = os.fsencode(path)
        for _ in range(16):  # EAGAIN: a concurrent rename/mount raced the lookup; the kernel asks to retry
            fd = libc.syscall(_SYS_OPENAT2, dirfd, raw, ctypes.byref(how), ctypes.sizeof(how))
            if fd >= 0:
                return int(fd)
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.EINTR):
                raise OSError(err, os.strerror(err), path)
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)

    return call


def _openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    call = _openat2_call()
    assert call is not None
    return int(call(dirfd, path, flags, resolve))


@functools.cache
def openat2_available() -> bool:
    """Whether this kernel (5.6 or later) and libc can make the openat2 syscall."""
    if _openat2_call() is None:
        return False
    root = os.open("/", _O_PATH_DIR)
    try:
        os.close(_openat2(root, ".", _O_PATH_DIR, _RESOLVE_IN_ROOT))
    except OSError:
        return False
    finally:
        os.close(root)
    return True


def _is_root(path: str) -> bool:
    """True for the root spelled any way ("", ".", "/", "./", and ".." clamped at the root)."""
    if path in ("", ".", "/", "./"):
        return True
    return not path.strip("/.") and all(c in ("", ".", "..") for c in path.split("/"))


def _components(path: str, what: str) -> list[str]:
    if "\x00" in path:
        raise UnsafePathError(what, "the path contains a NUL byte")
    return [c for c in path.split("/") if c not in ("", ".")]


class SafeRoot:
    """A directory tree that every operation stays inside. Use as a context manager (holds fds).

    ``SafeRoot(target, resolve="never")`` for the unpacker, ``"in-root"`` to follow symlinks inside
    the root. ``use_openat2=False`` forces the manual ``"in-root"`` walk (tests run both); ``"never"``
    always walks.
    """

    def __init__(self, root: str | os.PathLike[str], *, resolve: Resolve = "in-root", use_openat2: bool | None = None) -> None:
        self.path = os.fspath(root)
        self.resolve = resolve
        self._use_openat2 = use_openat2  # None: if the kernel has it, asked on the first in-root lookup
        self.fd = os.open(self.path, _O_PATH_DIR | os.O_NOFOLLOW)
        # one cached parent (path -> O_PATH fd): consecutive entries usually share a directory
        self._cache_path: str | None = None
        self._cache_fd = -1

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        self._drop_cache()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop_cache(self) -> None:
        if self._cache_fd >= 0:
            os.close(self._cache_fd)
        self._cache_fd = -1
        self._cache_path = None

    # -- resolution ----------------------------------------------------------------------------------

    def _split(self, path: str) -> tuple[str, str]:
        """``(parent, name)``; refuses the root itself and ``..`` as the last component."""
        if (
            path
            and path[0] != "/"
            and path[-1] != "/"
            and "\x00" not in path
            and "//" not in path
            and "./" not in path
            and not path.endswith("/.")
            and not path.endswith("/..")
            and path not in (".", "..")
        ):  # already clean (every path the unioner hands over): no per-component work
            head, _, name = path.rpartition("/")
            return head, name
        comps = _components(path, path)
        if not comps:
            raise UnsafePathError(path or "/", "the root itself cannot be created or replaced")
        name = comps[-1]
        if name == "..":
            raise UnsafePathError(path, "the last component is '..'")
        if self.resolve == "never" and ".." in comps:
            raise UnsafePathError(path, "'..' components are refused")
        return "/".join(comps[:-1]), name

    def _dir(self, rel: str, what: str) -> int:
        """An O_PATH fd of directory ``rel`` (root-relative), resolved per policy. Caller must not close."""
        if rel == self._cache_path:
            return self._cache_fd
        fd = self._open_dir(rel, what)
        self._drop_cache()
        self._cache_path, self._cache_fd = rel, fd
        return fd

    def open_dir(self, path: str) -> int:
        """A new O_PATH fd of the directory at ``path`` (the caller closes it)."""
        return self._open_dir("/".join(_components(path, path)), path)

    def _open_dir(self, rel: str, what: str) -> int:
        if not rel:
            return os.dup(self.fd)
        start, sub = self.fd, rel
        cached = self._cache_path
        if self.resolve == "never" and cached and rel.startswith(cached + "/"):
            # no symlinks and no '..' allowed: walking the suffix from the cached parent is equivalent
            start, sub = self._cache_fd, rel[len(cached) + 1 :]
        if self.resolve == "never":
            return self._walk_no_symlinks(start, sub, rel, what)
        if self._use_openat2 is not False:
            self._use_openat2 = openat2_available()
        if not self._use_openat2:
            return self._walk(start, sub, what)
        try:
            return _openat2(start, sub, _O_PATH_DIR, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise UnsafePathError(what, f"{rel!r} resolves outside the root") from None
            raise

    def _walk_no_symlinks(self, start: int, sub: str, rel: str, what: str) -> int:
        """``sub`` below ``start``, one ``openat`` per component; a symlink (or ``..``) is refused."""
        fd = -1
        try:
            for comp in sub.split("/"):
                if comp in ("", "."):
                    continue
                if comp == "..":
                    raise UnsafePathError(what, "'..' components are refused")
                at = start if fd < 0 else fd
                try:
                    nxt = os.open(comp, _O_PATH_DIR | os.O_NOFOLLOW, dir_fd=at)
                except OSError as exc:  # a symlink fails O_DIRECTORY (ENOTDIR) when it is not followed
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP) and stat.S_ISLNK(
                        os.stat(comp, dir_fd=at, follow_symlinks=False).st_mode
                    ):
                        raise UnsafePathError(what, f"a parent component of {rel!r} is a symlink") from None
                    raise
                if fd >= 0:
                    os.close(fd)
                fd = nxt
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return fd if fd >= 0 else os.dup(start)

    def _walk(self, start: int, rel: str, what: str) -> int:
        """Manual RESOLVE_IN_ROOT walk for kernels without openat2."""
        stack = [os.dup(start)]
        todo = list(reversed(rel.split("/")))
        hops = 0
        try:
            while todo:
                comp = todo.pop()
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                fd = os.open(comp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
                mode = os.fstat(fd).st_mode
                if stat.S_ISLNK(mode):
                    os.close(fd)
                    hops += 1
                    if hops > _MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel)
                    target = os.readlink(comp, dir_fd=stack[-1])
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                    todo.extend(reversed(target.split("/")))
                    continue
                if not stat.S_ISDIR(mode):
                    os.close(fd)
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), rel)
                stack.append(fd)
            return stack.pop()
        finally:
            for fd in stack:
                os.close(fd)

    def _at(self, path: str) -> tuple[int, str]:
        rel, name = self._split(path)
        return self._dir(rel, path), name

    # -- queries -----------------------------------------------------------------------------------

    def lstat(self, path: str) -> os.stat_result | None:
        """``lstat`` of ``path`` (the root for ``""``), ``None`` when it does not exist."""
        if _is_root(path):
            return os.stat(self.fd)
        try:
            pfd, name = self._at(path)
            return os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def listdir(self, path: str = "") -> list[str]:
        fd = self._open_read_dir(path)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str:
        pfd, name = self._at(path)
        return os.readlink(name, dir_fd=pfd)

    def _open_read_dir(self, path: str) -> int:
        if _is_root(path):
            return os.open(".", _O_DIR_READ, dir_fd=self.fd)
        pfd, name = self._at(path)
        return os.open(name, _O_DIR_READ, dir_fd=pfd)

    # -- creation ----------------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int = 0o755, *, exist_ok: bool = True) -> bool:
        """Create a directory; ``False`` if a directory (not a symlink to one) is already there."""
        pfd, name = self._at(path)
        try:
            os.mkdir(name, mode, dir_fd=pfd)
            return True
        except FileExistsError:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if exist_ok and stat.S_ISDIR(st.st_mode):
                return False
            raise

    def create_file(self, path: str, mode: int = 0o600) -> int:
        """A new regular file opened for writing (``O_EXCL | O_NOFOLLOW``); the caller closes the fd."""
        pfd, name = self._at(path)
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode & 0o777, dir_fd=pfd)

    def write_file(self, path: str, content: BinaryIO, mode: int = 0o644) -> int:
        """Create ``path`` with the bytes of ``content``; returns the byte count."""
        fd = self.create_file(path, mode)
        try:
            return copy_to_fd(content, fd)
        finally:
            os.close(fd)

    def symlink(self, path: str, target: str) -> None:
        """Create a symlink holding ``target`` verbatim (it is data: never followed here)."""
        if "\x00" in target:
            raise UnsafePathError(path, "the symlink target contains a NUL byte")
        pfd, name = self._at(path)
        os.symlink(target, name, dir_fd=pfd)

    def link(self, path: str, target: str) -> None:
        """Hard-link ``path`` to the existing regular file ``target`` (root-relative, not followed)."""
        missing = f"hard link target {target!r} does not exist (links are never resolved through symlinks)"
        try:
            tpfd, tname = self._at(target)
        except UnsafePathError:
            raise UnsafePathError(path, missing) from None
        except (FileNotFoundError, NotADirectoryError):
            raise UnsafePathError(path, missing) from None
        tfd = os.dup(tpfd)  # the cache may move on while resolving ``path``
        try:
            try:
                st = os.stat(tname, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise UnsafePathError(path, missing) from None
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePathError(
                    path, f"hard link target {target!r} is a {_kind(st.st_mode)}; only regular files can be linked"
                )
            pfd, name = self._at(path)
            os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def mknod(self, path: str, kind: Literal["char", "block"], mode: int, major: int, minor: int) -> None:
        fmt = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
        pfd, name = self._at(path)
        os.mknod(name, fmt | (mode & 0o777), os.makedev(major, minor), dir_fd=pfd)

    def mkfifo(self, path: str, mode: int = 0o644) -> None:
        pfd, name = self._at(path)
        os.mkfifo(name, mode & 0o777, dir_fd=pfd)

    # -- metadata (never follows the last component) ------------------------------------------------

    def set_attrs(self, path: str, *, owner: tuple[int, int] | None, mode: int | None, mtime_ns: int) -> None:
        """Owner (``None``: leave it), permission bits (``None`` for a symlink, which has none) and
        times of ``path`` itself, resolved once; the last component is never followed (a ``mode``
        meant for something that turns out to be a symlink fails instead of reaching its target)."""
        if _is_root(path):
            pfd, name, follow = self.fd, ".", True  # "." of our own root fd is the root itself
        else:
            (pfd, name), follow = self._at(path), False
        if owner is not None:
            os.chown(name, owner[0], owner[1], dir_fd=pfd, follow_symlinks=follow)
        if mode is not None:  # after chown, which clears setuid/setgid
            os.chmod(name, mode & 0o7777, dir_fd=pfd, follow_symlinks=follow)
        os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=follow)

    def setxattr(self, path: str, key: str, value: bytes) -> None:
        """Set an extended attribute on ``path`` itself (symlinks included, never their target)."""
        if _is_root(path):
            fd = os.open(".", _O_DIR_READ, dir_fd=self.fd)
            try:
                os.setxattr(fd, key, value)
            finally:
                os.close(fd)
            return
        pfd, name = self._at(path)
        # the parent is our own trusted fd; the last component is not followed
        os.setxattr(f"/proc/self/fd/{pfd}/{name}", key, value, follow_symlinks=False)

    # -- removal ------------------------------------------------------------------------------------

    def remove(self, path: str) -> bool:
        """Remove ``path`` (a whole directory tree included) without following any symlink.

        Returns ``False`` when nothing was there.
        """
        pfd, name = self._at(path)
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISDIR(st.st_mode):
            pfd = os.dup(pfd)
            self._drop_cache()  # the cached parent may live inside what goes away
            try:
                _rmtree_at(pfd, name)
            finally:
                os.close(pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        return True

    def clear_dir(self, path: str, keep: set[str] | None = None) -> None:
        """Remove every child of directory ``path`` except the names in ``keep``."""
        dfd = self._open_read_dir(path)
        self._drop_cache()
        try:
            for entry in os.scandir(dfd):
                if keep and entry.name in keep:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    _rmtree_at(dfd, entry.name)
                else:
                    os.unlink(entry.name, dir_fd=dfd)
        finally:
            os.close(dfd)


def _rmtree_at(pfd: int, name: str) -> None:
    """Remove directory ``name`` under ``pfd`` iteratively with O(1) open fds (trees nest deeply).

    Descends with ``O_NOFOLLOW`` opens and climbs back through ``..`` checked against the recorded
    (dev, inode) of the parent, so a swapped directory is noticed instead of followed.
    """
    top = os.open(name, _O_DIR_READ, dir_fd=pfd)
    top_st = os.fstat(top)
    pst = os.fstat(pfd)
    # stack of (name in parent, (dev, ino) of the parent, remaining (name, is_dir) to visit)
    stack: list[tuple[str, tuple[int, int], list[tuple[str, bool]]]] = []
    cur = top
    cur_id = (top_st.st_dev, top_st.st_ino)
    stack.append((name, (pst.st_dev, pst.st_ino), _scan(cur)))
    try:
        while True:
            dname, parent_id, todo = stack[-1]
            if todo:
                child, is_dir = todo.pop()
                if not is_dir:
                    os.unlink(child, dir_fd=cur)
                    continue
                nfd = os.open(child, _O_DIR_READ, dir_fd=cur)
                nst = os.fstat(nfd)
                stack.append((child, cur_id, _scan(nfd)))
                os.close(cur)
                cur, cur_id = nfd, (nst.st_dev, nst.st_ino)
                continue
            stack.pop()
            if not stack:
                os.close(cur)
                cur = -1
                os.rmdir(dname, dir_fd=pfd)
                return
            up = os.open("..", _O_DIR_READ, dir_fd=cur)
            ust = os.fstat(up)
            os.close(cur)
            cur = up
            if (ust.st_dev, ust.st_ino) != parent_id:
                raise UnsafePathError(dname, "a directory was moved while it was being removed")
            cur_id = parent_id
            os.rmdir(dname, dir_fd=cur)
    finally:
        if cur >= 0:
            os.close(cur)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "special file"


def _scan(dfd: int) -> list[tuple[str, bool]]:
    with os.scandir(dfd) as it:
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]


def copy_to_fd(content: BinaryIO, fd: int) -> int:
    """Copy a stream into an fd in pieces of up to 1 MiB; returns the byte count. A tar member's
    content is written straight from the reader's buffer (``read_some`` hands out views of it)."""
    total = 0
    read = getattr(content, "read_some", None) or content.read
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return total
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        total += len(chunk)
