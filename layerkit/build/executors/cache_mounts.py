"""``RUN --mount=type=cache`` sharing modes, held by an executor for the whole step.

- ``shared`` (BuildKit's default): the one directory; concurrent steps use it together.
- ``locked``: an exclusive ``flock`` on ``<dir>.lock``; concurrent steps (and builds) take turns.
  Taken in path order, so two steps locking the same set cannot deadlock.
- ``private``: BuildKit gives each concurrent user its own cache. The step takes the first of
  ``<dir>``, ``<dir>.private-1``, ``<dir>.private-2``… whose lock is free — never waiting — and
  keeps that lock while it runs; a sibling that does not exist yet starts empty (the executor
  creates it with the mount's owner and mode). Siblings persist and are reused by later private
  users, as BuildKit keeps every cache mount it made. A private step also excludes a ``locked``
  one from the directory it holds: both ask for the directory to themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..executor import Mount

__all__ = ["hold_cache_mounts", "private_sibling"]


def private_sibling(path: Path, n: int) -> Path:
    """The ``n``-th private copy of the cache dir ``path`` (0 is ``path`` itself)."""
    return path if n == 0 else path.with_name(f"{path.name}.private-{n}")


def _lock(path: Path, *, wait: bool) -> BinaryIO | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(f"{path}.lock", "a+b")  # noqa: SIM115 - kept open (locked) for the step, closed by the caller
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    return f


@contextlib.contextmanager
def hold_cache_mounts(mounts: tuple[Mount, ...]) -> Iterator[tuple[Mount, ...]]:
    """Take the locks the cache mounts' sharing modes ask for; yield the mounts with each private
    cache pointed at the directory this step got. The locks are released on exit."""
    with contextlib.ExitStack() as stack:
        locked = sorted({str(m.host_path) for m in mounts if m.type == "cache" and m.sharing == "locked" and m.host_path})
        for path in locked:
            f = _lock(Path(path), wait=True)
            assert f is not None
            stack.enter_context(f)
        out: list[Mount] = []
        for m in mounts:
            if m.type == "cache" and m.sharing == "private" and m.host_path is not None:
                for n in itertools.count():
                    candidate = private_sibling(Path(m.host_path), n)
                    f = _lock(candidate, wait=False)
                    if f is not None:
                        stack.enter_context(f)
                        m = dataclasses.replace(m, host_path=candidate)
                        break
            out.append(m)
        yield tuple(out)
