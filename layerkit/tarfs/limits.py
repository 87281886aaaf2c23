"""Resource limits for reading layers, one value for every reader, and how a user raises them.

A hostile layer may claim a huge uncompressed size (a gzip bomb: 2 GiB of zeros in 2 MB), millions
of entries, megabyte headers or endless sparse maps. Every reader (the union index, unpack, export,
``ls``/``cat``, inspect, diff, copy's recompression, the builder's snapshots) takes a
:class:`Limits`; ``None`` means :func:`default_limits`: the built-in defaults, overridden by the
``LAYERKIT_MAX_*`` environment variables. The CLI adds ``--max-layer-size``, ``--max-entries``,
``--max-ratio``, ``--max-header-size`` and ``--max-sparse-members`` over the same fields, and every
:class:`~layerkit.errors.LimitExceededError` names the layer, the limit and the flag that raises it.

The compression-ratio default was chosen by measurement: the Alpine minirootfs layers decompress at
2.3:1, typical rootfs layers at 2-5:1, but a zero-filled file (``/var/log/lastlog`` after
``useradd`` with a large uid) reaches gzip's maximum of ~1030:1, so a legitimate small layer can
have any ratio. The ratio is therefore checked only past :attr:`Limits.ratio_after` (1 GiB) of
uncompressed bytes: below that a bomb costs nothing worth refusing, above it no real layer stays
under 1 % of its size compressed, and a bomb of any claimed size stops after reading ~1 GiB.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import NamedTuple

from ..errors import ConfigError, LimitExceededError

__all__ = ["DEFAULT_LIMITS", "LIMIT_SETTINGS", "Limits", "default_limits", "limit_error", "parse_limit", "parse_size"]


class Limits(NamedTuple):
    """Resource ceilings for reading one layer; defaults no real image reaches.

    ``max_bytes``: the uncompressed tar, and the expanded size of one sparse member (64 GiB).
    ``max_entries``: members of one layer (10 M). ``max_header_bytes``: one PAX/GNU long-name
    payload or sparse map (1 MiB). ``max_sparse_members``: data segments in one sparse file's map
    (1 M). ``max_ratio``: uncompressed/compressed bytes (100), checked when the compressed size is
    known and only past ``ratio_after`` uncompressed bytes (see the module docstring); ``None``
    disables it.
    """

    max_bytes: int = 64 << 30
    max_entries: int = 10_000_000
    max_header_bytes: int = 1 << 20
    max_sparse_members: int = 1_000_000
    max_ratio: float | None = 100.0
    ratio_after: int = 1 << 30

    def ratio_cap(self, compressed_size: int | None) -> int | None:
        """Uncompressed bytes allowed by the ratio for a blob of ``compressed_size`` bytes."""
        if self.max_ratio is None or compressed_size is None:
            return None
        return max(self.ratio_after, int(self.max_ratio * max(compressed_size, 1)))


DEFAULT_LIMITS = Limits()

#: Limits field -> (CLI flag, environment variable) that sets it
LIMIT_SETTINGS: dict[str, tuple[str, str]] = {
    "max_bytes": ("--max-layer-size", "LAYERKIT_MAX_LAYER_SIZE"),
    "max_entries": ("--max-entries", "LAYERKIT_MAX_ENTRIES"),
    "max_ratio": ("--max-ratio", "LAYERKIT_MAX_RATIO"),
    "max_header_bytes": ("--max-header-size", "LAYERKIT_MAX_HEADER_SIZE"),
    "max_sparse_members": ("--max-sparse-members", "LAYERKIT_MAX_SPARSE_MEMBERS"),
}

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2,
          "gi": 1024**3, "gib": 1024**3, "ti": 1024**4, "tib": 1024**4}


def parse_size(text: str, what: str = "a size") -> int:
    """``64GiB``, ``500MB``, ``1.5G``, ``1048576`` → bytes (decimal and binary units)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"reading {what}: {text!r} is not a size; use e.g. 64GiB, 500MB or 1048576")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _parse_count(text: str, what: str) -> int:
    if not text.strip().isdigit():
        raise ConfigError(f"reading {what}: {text!r} is not a whole number")
    return int(text)


def _parse_ratio(text: str, what: str) -> float | None:
    if text.strip().lower() in ("off", "none", "disabled"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"reading {what}: {text!r} is not a positive number (or 'off')")
    return value


def parse_limit(field: str, text: str, what: str) -> int | float | None:
    """The value of Limits ``field`` spelled ``text`` (as on the command line or in the environment)."""
    if field in ("max_bytes", "max_header_bytes"):
        return parse_size(text, what)
    if field == "max_ratio":
        return _parse_ratio(text, what)
    return _parse_count(text, what)


def default_limits(environ: Mapping[str, str] | None = None) -> Limits:
    """The built-in defaults with the ``LAYERKIT_MAX_*`` variables of ``environ`` applied."""
    env = os.environ if environ is None else environ
    changes: dict[str, object] = {}
    for name, (_flag, var) in LIMIT_SETTINGS.items():
        text = env.get(var)
        if text:
            changes[name] = parse_limit(name, text, f"${var}")
    return DEFAULT_LIMITS._replace(**changes) if changes else DEFAULT_LIMITS  # type: ignore[arg-type]


def limit_error(what: str, field: str, detail: str) -> LimitExceededError:
    """``"<what>: <detail>; if the layer is trusted, raise the limit with <flag> (or $<VAR>)"``."""
    flag, var = LIMIT_SETTINGS[field]
    return LimitExceededError(
        f"{what}: {detail}; if the layer is trusted, raise the limit with {flag} (or ${var})", limit=field
    )
