"""The step cache: ``key → (layer descriptor, diff ID) | no layer``, one small JSON file per key
under ``<store cache_dir>/steps/``.

Keys are content addresses: ``sha256`` of the parent chain ID, the normalized instruction and its
inputs (see the builder for what each instruction feeds in). A record is only a hit while its
layer blob is still in the store (gc may have collected it); a stale record is a miss and gets
overwritten. Secrets never reach a key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digest import Digest
from ..errors import LayerkitError
from ..spec import Descriptor, canonical_json

if TYPE_CHECKING:  # pragma: no cover
    from ..store import LocalStore

__all__ = ["CacheRecord", "StepCache", "cache_key"]

_VERSION = "layerkit-build-cache-v1"


def cache_key(*parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts`` (strings, numbers, lists, dicts)."""
    return hashlib.sha256(canonical_json([_VERSION, *parts])).hexdigest()


@dataclass(frozen=True)
class CacheRecord:
    """What a cached step produced: a layer (descriptor + diff ID), or nothing (``layer is None``)."""

    layer: Descriptor | None
    diff_id: Digest | None
    #: when the layer was made: a cached step keeps it, so an unchanged rebuild is the same image
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.layer is None:
            return {"layer": None, "created": self.created}
        return {"layer": self.layer.to_json(), "diff_id": str(self.diff_id), "created": self.created}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CacheRecord:
        created = str(doc.get("created") or "")
        if doc.get("layer") is None:
            return cls(None, None, created)
        return cls(Descriptor.from_json(doc["layer"], "cache record"), Digest(doc["diff_id"]), created)


class StepCache:
    """Lookups and inserts; ``enabled=False`` (``--no-cache``) misses every lookup but still
    records results, so the next cached build reuses them."""

    def __init__(self, store: LocalStore, *, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled
        self.dir = Path(store.cache_dir) / "steps"

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> CacheRecord | None:
        if not self.enabled:
            return None
        try:
            record = CacheRecord.from_json(json.loads(self._path(key).read_text()))
        except (OSError, ValueError, KeyError, TypeError, LayerkitError):
            return None  # a missing or malformed record is a miss, never a failed build
        if record.layer is not None and not self.store.has_blob(record.layer.digest):
            return None
        return record

    def put(self, key: str, record: CacheRecord) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record.to_json(), sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            pass  # a cache that cannot be written only makes the next build slower
