"""Content-addressed image storage: OCI image layouts on disk and layerkit's local store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes
from .layout import GC_GRACE_SECONDS, BlobWriter, OCILayout
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

#: defined on first use: the local store (reading an ``oci:`` layout needs none of it) and the
#: maintenance reports (see :mod:`.results`)
__getattr__ = lazy_attributes(__name__, {
    **dict.fromkeys(("LocalStore", "default_home", "normalize_tag", "open_store"), ".local"),
    **dict.fromkeys(("CheckResult", "GcResult", "ImageSummary"), ".results"),
})

if TYPE_CHECKING:  # pragma: no cover
    from .local import LocalStore, default_home, normalize_tag, open_store
    from .results import CheckResult, GcResult, ImageSummary
