"""Advisory file locks (``fcntl.flock``) that coordinate processes sharing one OCI layout.

Two locks live in ``<layout>/.layerkit/``:

- ``index.lock`` — held *exclusively* for every read-modify-write of ``index.json``, so concurrent
  taggers never lose each other's updates. Readers take no lock: ``index.json`` is replaced by an
  atomic rename, so they always see a complete old or new file.
- ``ingest.lock`` — the garbage-collection barrier. Every writer holds it *shared* from the first blob
  it ingests until its tag is in ``index.json`` (``OCILayout.lock()``); ``gc`` holds it *exclusively*.
  So gc never runs while a blob exists that a pending tag is about to make reachable.

``flock`` locks belong to an open file description, so two opens in one process conflict like two
processes do. ``FileLock`` therefore counts holders per path inside a process: nested shared holds
reuse one descriptor, and asking for the exclusive lock while this process holds it shared is an
error instead of a self-deadlock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import StoreError

__all__ = ["FileLock", "LockTimeoutError"]

_POLL = 0.05


class LockTimeoutError(StoreError):
    """The lock stayed held by another process for longer than the caller was willing to wait."""


class _Held:
    """One open lock file of this process and how many holders share it."""

    def __init__(self, fd: int, exclusive: bool) -> None:
        self.fd = fd
        self.exclusive = exclusive
        self.count = 1


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()
# A forked child does not own its parent's holds: it must take its own lock (a new descriptor).
os.register_at_fork(after_in_child=_HELD.clear)


def _flock(fd: int, op: int, timeout: float | None, path: str, what: str) -> None:
    if timeout is None:
        fcntl.flock(fd, op)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise LockTimeoutError(
                f"taking the {what} lock {path}: still held by another layerkit process after {timeout:g} s; "
                "wait for it (a running build, pull or gc) to finish and retry"
            )
        time.sleep(_POLL)


class FileLock:
    """A named ``flock`` on ``path`` (created on first use), shared or exclusive."""

    def __init__(self, path: str | os.PathLike[str], what: str = "store") -> None:
        self.path = str(path)
        self.what = what

    def _open(self) -> int:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    @contextmanager
    def shared(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock shared; re-entrant within the process (and under its own exclusive hold)."""
        with _HELD_GUARD:
            held = _HELD.get(self.path)
            if held is not None:
                held.count += 1
        if held is None:
            fd = self._open()
            try:
                _flock(fd, fcntl.LOCK_SH, timeout, self.path, self.what)
            except BaseException:
                os.close(fd)
                raise
            with _HELD_GUARD:
                held = _HELD.get(self.path)
                if held is None:
                    held = _HELD[self.path] = _Held(fd, exclusive=False)
                    fd = -1
                else:  # another thread of ours got there first: share its descriptor
                    held.count += 1
            if fd >= 0:
                os.close(fd)
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock exclusively; refuses (rather than deadlocks) when this process holds it."""
        with _HELD_GUARD:
            if self.path in _HELD:
                raise StoreError(
                    f"taking the {self.what} lock {self.path} exclusively: this process already holds it; "
                    "finish the running write first"
                )
        fd = self._open()
        try:
            _flock(fd, fcntl.LOCK_EX, timeout, self.path, self.what)
        except BaseException:
            os.close(fd)
            raise
        with _HELD_GUARD:
            _HELD[self.path] = _Held(fd, exclusive=True)
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with _HELD_GUARD:
            held = _HELD[self.path]
            held.count -= 1
            if held.count:
                return
            del _HELD[self.path]
        os.close(held.fd)  # closing the last descriptor drops the flock
