"""What the store's maintenance commands report: ``gc``, ``check`` and the ``images`` listing.

Kept apart from :mod:`.layout` so that reading and writing images (every build, pull and inspect)
does not define these classes (~2 ms of start-up: dataclasses compile their methods at import).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..digest import Digest
from ..spec import Descriptor, Platform

__all__ = ["CheckResult", "GcResult", "ImageSummary"]


@dataclass(frozen=True)
class GcResult:
    """What ``gc`` removed (or, with ``dry_run``, would remove)."""

    removed: list[Digest]
    freed_bytes: int
    #: unreferenced blobs left alone because they are younger than the grace period
    kept_recent: list[Digest] = field(default_factory=list)
    #: abandoned ingest temp files (from crashed writers) that were deleted
    temp_files_removed: int = 0
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "removed": [str(d) for d in self.removed],
            "freedBytes": self.freed_bytes,
            "keptRecent": [str(d) for d in self.kept_recent],
            "tempFilesRemoved": self.temp_files_removed,
            "dryRun": self.dry_run,
        }


@dataclass(frozen=True)
class CheckResult:
    """The outcome of ``check``: ``ok`` is False when ``problems`` lists any damage."""

    ok: bool
    problems: list[str]
    blobs_checked: int = 0
    bytes_checked: int = 0
    #: corrupt blobs deleted by ``check(repair=True)`` so that the next pull fetches them again
    repaired: list[Digest] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "blobsChecked": self.blobs_checked,
            "bytesChecked": self.bytes_checked,
            "repaired": [str(d) for d in self.repaired],
        }


@dataclass(frozen=True)
class ImageSummary:
    """One ``index.json`` entry as ``layerkit images`` shows it."""

    name: str  # "" for an untagged entry
    descriptor: Descriptor
    created: str
    #: bytes of every distinct blob the entry references (compressed layers, configs, manifests)
    size: int
    platforms: tuple[Platform, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": str(self.descriptor.digest),
            "mediaType": self.descriptor.media_type,
            "created": self.created,
            "size": self.size,
            "platform": ",".join(str(p) for p in self.platforms),
        }
