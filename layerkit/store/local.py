"""layerkit's local image store: an OCI layout under ``$LAYERKIT_HOME`` plus working directories.

::

    $LAYERKIT_HOME/            (default ~/.local/share/layerkit, i.e. $XDG_DATA_HOME/layerkit)
      oci/                     the OCI image layout: every stored image, tagged by familiar name
      snapshots/               unpacked layer trees keyed by chain ID (the builder's)
      cache/                   build cache records
      tmp/                     scratch space on the same filesystem (renames stay atomic)

Tags are familiar references: ``demo``, ``demo:latest`` and ``docker.io/library/demo:latest`` all name
the entry ``demo:latest``; ``localhost:5000/app:1`` stays as it is.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidReferenceError
from ..reference import DockerReference
from ..spec import Descriptor
from .layout import GC_GRACE_SECONDS, OCILayout, _is_digest

if TYPE_CHECKING:  # pragma: no cover
    from .layerindex import LayerIndexCache
    from .results import GcResult

__all__ = ["LocalStore", "default_home", "normalize_tag", "open_store"]

#: a short digest (``docker images`` style ID) must have at least this many hex digits
MIN_SHORT_DIGEST = 6


def default_home() -> Path:
    """``$LAYERKIT_HOME``, else ``$XDG_DATA_HOME/layerkit``, else ``~/.local/share/layerkit``."""
    env = os.environ.get("LAYERKIT_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "layerkit"


def normalize_tag(name: str) -> str:
    """The familiar form a store tag is kept under (``alpine`` → ``alpine:latest``)."""
    ref = DockerReference.parse(name)
    if ref.digest is not None:
        raise InvalidReferenceError(f"invalid tag {name!r}: a tag cannot contain a digest")
    return ref.familiar


class LocalStore(OCILayout):
    """The local store: an ``OCILayout`` whose tags are familiar references."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        # absolute: RUN sandboxes mount paths below it after changing directory
        self.home = Path(os.path.abspath(home))
        self.snapshots_dir = self.home / "snapshots"
        self.cache_dir = self.home / "cache"
        self.tmp_dir = self.home / "tmp"
        for d in (self.snapshots_dir, self.cache_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        super().__init__(self.home / "oci", create=True)
        self.name = f"local store {self.home}"

    def __repr__(self) -> str:
        return f"<LocalStore {self.home}>"

    @property
    def layer_index(self) -> LayerIndexCache:
        """Member lists of layers read before: a union over them (a build's COPY planning) reads
        none of them again."""
        from .layerindex import LayerIndexCache

        return LayerIndexCache(self.cache_dir / "layers")

    def normalize_name(self, name: str) -> str:
        return normalize_tag(name)

    def reference_for(self, name_or_digest: str) -> str:
        return name_or_digest if _is_digest(name_or_digest) else normalize_tag(name_or_digest)

    def gc(self, dry_run: bool = False, *, grace: float = GC_GRACE_SECONDS,
           timeout: float | None = None) -> GcResult:
        """``OCILayout.gc`` plus leftovers in ``tmp/`` untouched for ``grace`` seconds (files of any
        process that died before cleaning up; a file still open elsewhere survives its unlink)."""
        result = super().gc(dry_run, grace=grace, timeout=timeout)
        cutoff = time.time() - grace
        stale = [p for p in sorted(self.tmp_dir.iterdir()) if _newest_mtime(p) <= cutoff]
        if not dry_run:
            import shutil  # only gc needs it (with bz2 and lzma, 4 ms of every command otherwise)

            for path in stale:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            self.layer_index.prune(lambda hex_: _is_digest(f"sha256:{hex_}") and self.has_blob(f"sha256:{hex_}"))
        return replace(result, temp_files_removed=result.temp_files_removed + len(stale))

    def _resolve_other(self, name: str, entries: list[Descriptor]) -> Descriptor | None:
        """A unique hex prefix of an entry's digest, as ``docker images`` shows IDs."""
        prefix = name.removeprefix("sha256:")
        if len(prefix) < MIN_SHORT_DIGEST or any(c not in "0123456789abcdef" for c in prefix):
            return None
        hits = {d.digest: d for d in entries if d.digest.hex.startswith(prefix)}
        return next(iter(hits.values())) if len(hits) == 1 else None


def _newest_mtime(path: Path) -> float:
    """The latest mtime in a tree: a directory someone still writes into is not stale."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def open_store(home: str | os.PathLike[str] | None = None) -> LocalStore:
    """The local store at ``home`` (default: ``default_home()``), created on first use."""
    return LocalStore(Path(home) if home is not None else default_home())
