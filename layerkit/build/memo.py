"""The build memo: a rebuild whose inputs are all unchanged is answered without dispatching a step.

The step cache (:mod:`.cache`) already makes such a rebuild run nothing, but it still parses the
Dockerfile, resolves each base image and fingerprints every COPY source: most of a no-change
rebuild's time is the Python of that. The memo keeps, per context and Dockerfile, one record of
the last build: a key over everything the build read and the image it made. When the key matches
and the image is still whole in the store, the build is that image.

The key is conservative: the Dockerfile's bytes, the ignore file's bytes, the options, and the
lstat of every visible context entry (so any change below the context is a miss, even to a file
no COPY reads or one touched without a change; the step cache then answers). Directory times are
left out, as the step cache leaves them out: they change when an ignored file comes or goes. A build is recorded only when running it again gives
the same image: its base images came from the local store (the record names their digests, checked
again on use), nothing came from the network (``ADD <url>``), and its ``created`` times came from
layers, not the clock. Records are a cache: a missing, stale or unreadable one is only a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..spec import Descriptor, Platform

if TYPE_CHECKING:  # pragma: no cover
    from ..image import Image
    from ..store.local import LocalStore

__all__ = ["BaseImage", "BuildMemo", "MemoRecord"]

_VERSION = 1


class BaseImage(NamedTuple):
    """An image the build read from the local store: ``name`` resolved to ``digest`` for ``platform``."""

    name: str
    platform: str
    digest: str


class MemoRecord(NamedTuple):
    """What a recorded build produced: the manifest and the base images it read; to answer again,
    every step as it was shown (``BuildEvent`` fields), the filesystem steps, the target stage and
    the Dockerfile's warnings."""

    manifest: Descriptor
    bases: tuple[BaseImage, ...]
    trail: tuple[dict[str, Any], ...]
    fs_steps: tuple[str, ...]
    target: str
    warnings: tuple[str, ...]


class BuildMemo:
    """The memo slot of one (context, Dockerfile) pair in ``store``, and the key of this build."""

    def __init__(self, store: LocalStore, context_dir: Path, dockerfile: Path, dockerfile_bytes: bytes,
                 ignore_file: Path | None, options: Mapping[str, Any]) -> None:
        self.store = store
        context = os.path.realpath(context_dir)
        slot = hashlib.sha256(f"{context}\0{os.path.realpath(dockerfile)}".encode("utf-8", "surrogateescape"))
        self.path = Path(store.cache_dir) / "memo" / f"{slot.hexdigest()[:32]}.json"
        self._context = Path(context)
        self._ignore_file = ignore_file
        self._head = {
            "version": _VERSION,
            "dockerfile": hashlib.sha256(dockerfile_bytes).hexdigest(),
            "ignore": _file_digest(ignore_file),
            "options": options,
        }
        self._key: str | None = None

    @property
    def key(self) -> str:
        """The key: computed on first use (it walks the whole context)."""
        if self._key is None:
            h = hashlib.sha256(json.dumps(self._head, sort_keys=True, separators=(",", ":")).encode())
            for rel, st in _visible_tree(self._context, self._ignore_file):
                if stat.S_ISDIR(st.st_mode):  # its entries are walked; its times change with ignored files
                    line = f"{rel}\0{st.st_mode:o}\n"
                else:  # a changed file or link target changes ctime (and usually the rest)
                    line = f"{rel}\0{st.st_mode:o} {st.st_size} {st.st_mtime_ns} {st.st_ino} {st.st_ctime_ns}\n"
                h.update(line.encode("utf-8", "surrogateescape"))
            self._key = h.hexdigest()
        return self._key

    def lookup(self) -> tuple[MemoRecord, Image] | None:
        """The recorded build and its image if the record's key is this build's and everything it
        names is still in the store (base tags resolve to the same digests, every blob is present)."""
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        try:
            if doc.get("key") != self.key:
                return None
            record = MemoRecord(
                Descriptor.from_json(doc["manifest"]),
                tuple(BaseImage(*b) for b in doc["bases"]),
                tuple(dict(e) for e in doc["trail"]),
                tuple(doc["fs_steps"]), str(doc["target"]), tuple(doc["warnings"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        image = self._image(record)
        return (record, image) if image is not None else None

    def _image(self, record: MemoRecord) -> Image | None:
        from ..errors import LayerkitError

        try:
            for base in record.bases:
                platform = Platform.parse(base.platform) if base.platform else None
                if str(self.store.image(base.name, platform).digest) != base.digest:
                    return None
            image = self.store.image(str(record.manifest.digest))
        except LayerkitError:
            return None
        blobs = (image.manifest.config, *image.manifest.layers)
        return image if all(self.store.has_blob(d.digest) for d in blobs) else None

    def record(self, record: MemoRecord) -> None:
        """Remember this build (best effort, atomic: a memo that cannot be written is only slower)."""
        doc = {"key": self.key, **record._asdict()}
        doc["manifest"] = record.manifest.to_json()
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)

    def forget(self) -> None:
        """Drop the record: a build that cannot be memoized leaves no stale answer behind."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass


def _file_digest(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def _visible_tree(root: Path, ignore_file: Path | None) -> Iterable[tuple[str, os.stat_result]]:
    """Every context entry COPY could see (``.dockerignore`` applied), with its lstat."""
    from .context import BuildContext
    from .dockerignore import read_ignore_file

    context = BuildContext(root, read_ignore_file(ignore_file))
    for rel, _below, _host, st in context.walk_lstat("."):
        yield rel, st
