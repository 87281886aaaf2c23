"""OCI / Docker image documents as immutable records, parsed from and rendered to JSON.

Documents keep their raw bytes when they were read (a digest is over bytes, not over a
re-serialisation); freshly made ones render canonically (sorted keys, no spaces).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

from . import mediatypes as mt
from .digest import Digest, sha256_bytes
from .errors import InvalidDigestError, ManifestError

__all__ = [
    "Descriptor",
    "History",
    "ImageConfig",
    "Index",
    "Manifest",
    "Platform",
    "canonical_json",
    "chain_ids",
    "host_platform",
    "parse_manifest_or_index",
]

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact separators, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"parsing {what}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"parsing {what}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _media_type(doc: Mapping[str, Any], what: str) -> str:
    value = doc.get("mediaType") or ""
    if not isinstance(value, str):
        raise ManifestError(f"parsing {what}: mediaType is not a string")
    return value


def _annotations(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value or {}, Mapping):
        raise ManifestError(f"parsing {what}: annotations is not an object")
    return dict(value or {})


def _digest(value: Any, what: str) -> Digest:
    if not isinstance(value, str):
        raise ManifestError(f"parsing {what}: digest missing or not a string")
    try:
        return Digest(value)
    except InvalidDigestError as exc:
        raise ManifestError(f"parsing {what}: {exc}") from None


_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
           "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64"}


class Platform(NamedTuple):
    """The platform an image runs on (``os/architecture[/variant]``), as in an index entry."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""
    os_version: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]`` as in ``--platform linux/arm64/v8``."""
        parts = text.strip().split("/")
        if not 1 <= len(parts) <= 3 or not all(parts):
            from .errors import InvalidReferenceError

            raise InvalidReferenceError(f"invalid platform {text!r}: expected os/arch[/variant]")
        if len(parts) == 1:
            return cls(os="linux", architecture=parts[0])
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Platform:
        return cls(str(d.get("os", "")), str(d.get("architecture", "")), str(d.get("variant", "") or ""),
                   str(d.get("os.version", "") or ""))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        return d

    def matches(self, want: Platform) -> bool:
        """True when this (an index entry's platform) satisfies ``want``; an empty variant on either
        side matches any variant, and arm64's implied v8 equals no variant."""
        if self.os != want.os or self.architecture != want.architecture:
            return False
        a, b = self.variant or "", want.variant or ""
        if self.architecture == "arm64":
            a, b = a.replace("v8", ""), b.replace("v8", "")
        return not a or not b or a == b

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class _Document:
    """Equality and ``repr`` for the documents below, over their compared fields, shared: a data class
    generates (``exec``) its own for every class at every start, ~0.25 ms each with the frozen ones'
    hashing, which these never had (they hold dicts)."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.compare)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{type(self).__qualname__}({shown})"


def host_platform() -> Platform:
    machine = os.uname().machine  # what platform.machine() returns on POSIX, without importing it (~2 ms)
    arch = _GOARCH.get(machine.lower(), machine.lower())
    variant = "v8" if arch == "arm64" else ("v7" if machine == "armv7l" else "")
    return Platform("linux", arch, variant)


@dataclass(frozen=True, eq=False, repr=False)
class Descriptor(_Document):
    """A reference to a blob by media type, digest and size (OCI ``descriptor.md``)."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""

    @classmethod
    def from_json(cls, d: Any, what: str = "descriptor") -> Descriptor:
        if not isinstance(d, Mapping):
            raise ManifestError(f"parsing {what}: expected an object")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"parsing {what}: size missing or invalid")
        plat = d.get("platform")
        urls = d.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ManifestError(f"parsing {what}: urls is not a list of strings")
        return cls(
            media_type=_media_type(d, what),
            digest=_digest(d.get("digest"), what),
            size=size,
            annotations=_annotations(d.get("annotations"), what),
            platform=Platform.from_json(plat) if isinstance(plat, Mapping) else None,
            urls=tuple(urls),
            artifact_type=str(d.get("artifactType", "") or ""),
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        if self.urls:
            d["urls"] = list(self.urls)
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        return d

    def with_annotations(self, **extra: str) -> Descriptor:
        return replace(self, annotations={**self.annotations, **extra})


def _raw_or_render(raw: bytes | None, obj: Any) -> bytes:
    return raw if raw is not None else canonical_json(obj)


@dataclass(frozen=True, eq=False, repr=False)
class Manifest(_Document):
    """An image manifest, OCI or Docker schema2 (same shape, different media types)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    raw: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str = "") -> Manifest:
        doc = _load(raw, "manifest")
        if doc.get("schemaVersion") != 2:
            raise ManifestError(
                f"parsing manifest: schemaVersion {doc.get('schemaVersion')!r} is not supported (only 2)"
            )
        mtype = _media_type(doc, "manifest") or media_type or mt.OCI_MANIFEST
        if mtype in mt.INDEX_TYPES or "manifests" in doc:
            raise ManifestError("parsing manifest: this is an index, not an image manifest")
        if mtype not in mt.MANIFEST_TYPES:
            raise ManifestError(f"parsing manifest: unsupported media type {mtype!r}")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("parsing manifest: 'layers' missing or not a list")
        return cls(
            media_type=mtype,
            config=Descriptor.from_json(doc.get("config"), "manifest config descriptor"),
            layers=tuple(Descriptor.from_json(x, f"manifest layer {i}") for i, x in enumerate(layers)),
            annotations=_annotations(doc.get("annotations"), "manifest"),
            subject=Descriptor.from_json(doc["subject"], "subject") if doc.get("subject") else None,
            raw=raw,
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [x.to_json() for x in self.layers],
        }
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.subject is not None:
            d["subject"] = self.subject.to_json()
        return d

    def to_bytes(self) -> bytes:
        return _raw_or_render(self.raw, self.to_json())

    def digest(self) -> Digest:
        return sha256_bytes(self.to_bytes())

    def descriptor(self, **annotations: str) -> Descriptor:
        data = self.to_bytes()
        return Descriptor(self.media_type, sha256_bytes(data), len(data), annotations=annotations)

    @property
    def is_docker(self) -> bool:
        return self.media_type == mt.DOCKER_MANIFEST

    def convert(self, docker: bool) -> Manifest:
        """The same image as a Docker schema2 or OCI manifest (new bytes, so a new digest)."""
        if docker == self.is_docker:
            return self
        config = replace(self.config, media_type=mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG)
        layers = tuple(
            replace(x, media_type=mt.layer_media_type(mt.layer_compression(x.media_type), docker=docker))
            if mt.is_layer(x.media_type)
            else x
            for x in self.layers
        )
        return Manifest(
            media_type=mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
            config=config,
            layers=layers,
            annotations={} if docker else dict(self.annotations),
            subject=None if docker else self.subject,
        )


@dataclass(frozen=True, eq=False, repr=False)
class Index(_Document):
    """An OCI image index or Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    raw: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str = "") -> Index:
        doc = _load(raw, "index")
        if doc.get("schemaVersion") != 2:
            raise ManifestError(f"parsing index: schemaVersion {doc.get('schemaVersion')!r} is not supported")
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise ManifestError("parsing index: 'manifests' missing or not a list")
        return cls(
            media_type=_media_type(doc, "index") or media_type or mt.OCI_INDEX,
            manifests=tuple(Descriptor.from_json(x, f"index entry {i}") for i, x in enumerate(manifests)),
            annotations=_annotations(doc.get("annotations"), "index"),
            raw=raw,
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [x.to_json() for x in self.manifests],
        }
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def to_bytes(self) -> bytes:
        return _raw_or_render(self.raw, self.to_json())

    def digest(self) -> Digest:
        return sha256_bytes(self.to_bytes())

    def select(self, want: Platform | None = None) -> Descriptor:
        """The manifest for ``want`` (default: this host), or a clear error listing what exists."""
        want = want or host_platform()
        images = [d for d in self.manifests if d.media_type in mt.MANIFEST_TYPES or d.platform]
        for d in images:
            if d.platform is not None and d.platform.matches(want):
                return d
        if len(images) == 1 and images[0].platform is None:
            return images[0]
        have = ", ".join(str(d.platform) for d in images if d.platform) or "none"
        raise ManifestError(f"no image for platform {want} in index (available: {have}); pass --platform")


def parse_manifest_or_index(raw: bytes, media_type: str = "") -> Manifest | Index:
    doc = _load(raw, "manifest")
    mtype = _media_type(doc, "manifest") or media_type
    if mtype in mt.INDEX_TYPES or (not mtype and "manifests" in doc):
        return Index.from_bytes(raw, mtype)
    return Manifest.from_bytes(raw, mtype)


class History(NamedTuple):
    """One entry of an image config's ``history``: the step that made a layer (or none)."""

    created: str = ""
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> History:
        return cls(str(d.get("created", "") or ""), str(d.get("created_by", "") or ""),
                   str(d.get("author", "") or ""), str(d.get("comment", "") or ""), bool(d.get("empty_layer")))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.created:
            d["created"] = self.created
        if self.created_by:
            d["created_by"] = self.created_by
        if self.author:
            d["author"] = self.author
        if self.comment:
            d["comment"] = self.comment
        if self.empty_layer:
            d["empty_layer"] = True
        return d


@dataclass(frozen=True, eq=False, repr=False)
class ImageConfig(_Document):
    """The image configuration blob. ``config`` keeps the OCI field names (``Env``, ``Cmd``, …) as a
    plain dict so unknown fields survive a round trip; ``extra`` keeps unknown top-level fields."""

    architecture: str = "amd64"
    os: str = "linux"
    variant: str = ""
    created: str = ""
    author: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[History, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    raw: bytes | None = field(default=None, compare=False, repr=False)

    _KNOWN = ("architecture", "os", "variant", "created", "author", "config", "rootfs", "history")

    @classmethod
    def from_bytes(cls, raw: bytes) -> ImageConfig:
        doc = _load(raw, "image config")
        rootfs = doc.get("rootfs") or {}
        if not isinstance(rootfs, Mapping):
            raise ManifestError("parsing image config: 'rootfs' is not an object")
        diff_ids = rootfs.get("diff_ids") or []
        if not isinstance(diff_ids, list):
            raise ManifestError("parsing image config: rootfs.diff_ids is not a list")
        history = doc.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
            raise ManifestError("parsing image config: 'history' is not a list of objects")
        cfg = doc.get("config") or {}
        if not isinstance(cfg, Mapping):
            raise ManifestError("parsing image config: 'config' is not an object")
        return cls(
            architecture=str(doc.get("architecture", "") or ""),
            os=str(doc.get("os", "") or ""),
            variant=str(doc.get("variant", "") or ""),
            created=str(doc.get("created", "") or ""),
            author=str(doc.get("author", "") or ""),
            config=dict(cfg),
            diff_ids=tuple(_digest(x, "image config diff_id") for x in diff_ids),
            history=tuple(History.from_json(h) for h in history),
            extra={k: v for k, v in doc.items() if k not in cls._KNOWN},
            raw=raw,
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.extra)
        d["architecture"] = self.architecture
        d["os"] = self.os
        if self.variant:
            d["variant"] = self.variant
        if self.created:
            d["created"] = self.created
        if self.author:
            d["author"] = self.author
        d["config"] = dict(self.config)
        d["rootfs"] = {"type": "layers", "diff_ids": [str(x) for x in self.diff_ids]}
        if self.history:
            d["history"] = [h.to_json() for h in self.history]
        return d

    def to_bytes(self) -> bytes:
        return _raw_or_render(self.raw, self.to_json())

    def digest(self) -> Digest:
        return sha256_bytes(self.to_bytes())

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)

    def evolve(self, **changes: Any) -> ImageConfig:
        """A modified copy; drops the raw bytes since they no longer match."""
        return replace(self, raw=None, **changes)


def chain_ids(diff_ids: list[Digest] | tuple[Digest, ...]) -> list[Digest]:
    """OCI chain IDs: ChainID(L0)=DiffID(L0); ChainID(Ln)=sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[Digest] = []
    for d in diff_ids:
        out.append(d if not out else sha256_bytes(f"{out[-1]} {d}".encode()))
    return out
