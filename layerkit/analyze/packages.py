"""Installed-package databases inside an image: apk, dpkg and Python ``*.dist-info/METADATA``.

Parsers take the file's bytes and return ``{name: version}``; :func:`diff_packages` compares two
such maps. Paths are image paths without the leading ``/``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "APK_DB",
    "DPKG_DB",
    "diff_packages",
    "is_package_db",
    "is_python_metadata",
    "parse_apk_installed",
    "parse_dpkg_status",
    "parse_python_metadata",
]

APK_DB = "lib/apk/db/installed"
DPKG_DB = "var/lib/dpkg/status"
_PY_METADATA = re.compile(r"(?:^|/)(?:site|dist)-packages/[^/]+\.dist-info/METADATA$")


def is_python_metadata(path: str) -> bool:
    return _PY_METADATA.search(path) is not None


def is_package_db(path: str) -> bool:
    return path == APK_DB or path == DPKG_DB or is_python_metadata(path)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def parse_apk_installed(data: bytes) -> dict[str, str]:
    """apk's database: blank-line separated records of ``X:value`` lines (``P`` name, ``V`` version)."""
    out: dict[str, str] = {}
    name = version = ""
    for line in _text(data).splitlines() + [""]:
        if not line.strip():
            if name:
                out[name] = version
            name = version = ""
        elif line.startswith("P:"):
            name = line[2:].strip()
        elif line.startswith("V:"):
            version = line[2:].strip()
    return out


def parse_dpkg_status(data: bytes) -> dict[str, str]:
    """dpkg's status file: RFC 822 paragraphs; only packages whose ``Status`` ends in ``installed``."""
    out: dict[str, str] = {}
    fields: dict[str, str] = {}
    for line in _text(data).splitlines() + [""]:
        if not line.strip():
            status = fields.get("status", "").split()
            if fields.get("package") and (not status or status[-1] == "installed"):
                out[fields["package"]] = fields.get("version", "")
            fields = {}
        elif line[0] not in " \t":
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
    return out


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def parse_python_metadata(data: bytes) -> dict[str, str]:
    """A core-metadata file's ``Name`` and ``Version`` headers (the body after a blank line is ignored)."""
    name = version = ""
    for line in _text(data).splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "name" and not name:
            name = value.strip()
        elif key == "version" and not version:
            version = value.strip()
    return {_normalize(name): version} if name else {}


def diff_packages(before: dict[str, str], after: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """``added``/``removed`` as ``{name, version}``, ``changed`` as ``{name, version, previousVersion}``."""
    added = [{"name": n, "version": after[n]} for n in sorted(after.keys() - before.keys())]
    removed = [{"name": n, "version": before[n]} for n in sorted(before.keys() - after.keys())]
    changed = [{"name": n, "version": after[n], "previousVersion": before[n]}
               for n in sorted(before.keys() & after.keys()) if before[n] != after[n]]
    return {"added": added, "removed": removed, "changed": changed}
