"""Owners of a step's changes when it ran with one mapped id (a user namespace without root).

Everything the step touched is owned on disk by the caller, who stood for the step's uid/gid. So a
*new* file owned by the caller belongs to the step's uid/gid; a file that *existed* before (copied
up or edited in place) keeps the owner the image's own layer headers give it — the step could not
``chown`` it; directories made for ``WORKDIR`` belong to root, as BuildKit creates them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Any

from ...tarfs.entry import Entry
from ..executor import RunRequest

__all__ = ["OwnerMap"]


class OwnerMap:
    """``ChangeSet.fix_entry`` for a run with one mapped id; ``existed(path)`` answers whether the
    parent image had ``path``; ``workdir`` holds the workdir components the run created."""

    def __init__(self, request: RunRequest, existed: Callable[[str], bool], workdir: Collection[str] = ()) -> None:
        self.request = request
        self.existed = existed
        self.workdir = set(workdir)
        self.euid, self.egid = os.geteuid(), os.getegid()
        self._union: Any = None

    def __call__(self, entry: Entry) -> None:
        if entry.path in self.workdir:
            entry.uid, entry.gid = 0, 0
            return
        if self.existed(entry.path):
            if self.euid == 0:
                return  # root unpacked the real owners; the step could not change them
            if self._union is None:
                from ...union import Union

                self._union = Union(self.request.image)
            try:
                node = self._union.stat(entry.path)
            except OSError:
                return
            entry.uid, entry.gid = node.entry.uid, node.entry.gid
            return
        if entry.uid == self.euid:
            entry.uid = self.request.uid
        if entry.gid == self.egid:
            entry.gid = self.request.gid
