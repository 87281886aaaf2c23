"""Content-addressed image storage: OCI image layouts on disk and layerkit's local store."""

from __future__ import annotations

from .layout import (
    GC_GRACE_SECONDS,
    BlobWriter,
    CheckResult,
    GcResult,
    ImageSummary,
    OCILayout,
)
from .local import LocalStore, default_home, normalize_tag, open_store
from .lock import FileLock, LockTimeoutError

__all__ = [
    "GC_GRACE_SECONDS",
    "BlobWriter",
    "CheckResult",
    "FileLock",
    "GcResult",
    "ImageSummary",
    "LocalStore",
    "LockTimeoutError",
    "OCILayout",
    "default_home",
    "normalize_tag",
    "open_store",
]
