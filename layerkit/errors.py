"""Exceptions raised by layerkit.

Every error layerkit raises on purpose derives from :class:`LayerkitError`; the CLI catches that one
class, prints its message and exits 1. Messages are lower-case, "doing X: cause", and name the thing
(reference, blob digest, Dockerfile line) plus the fix where there is one.

::

    LayerkitError
    ├── InvalidReferenceError (ValueError)
    ├── ConfigError                   a bad layerkit settings file (e.g. .layerkit-ci.yaml)
    ├── DigestError
    │   ├── InvalidDigestError (ValueError)
    │   └── DigestMismatchError
    ├── ManifestError                 malformed or unsupported manifest/config/index
    ├── LayerError
    │   ├── UnsafePathError           entry would escape or abuse the target root
    │   ├── InvalidWhiteoutError
    │   ├── UnsupportedMediaTypeError
    │   ├── LimitExceededError        bomb protection (size, ratio, entries)
    │   └── TarFormatError            truncated or malformed archive
    ├── StoreError
    │   ├── BlobNotFoundError
    │   └── CorruptStoreError
    ├── SourceError
    │   ├── ImageNotFoundError
    │   ├── AuthenticationError
    │   ├── RegistryError             HTTP status + registry error code
    │   └── DaemonUnavailableError
    └── BuildError
        ├── DockerfileSyntaxError     file:line
        ├── UnsupportedInstructionError
        ├── ExecutorUnavailableError
        └── StepFailedError           file:line, exit code, output tail
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BlobNotFoundError",
    "BuildError",
    "ConfigError",
    "CorruptStoreError",
    "DaemonUnavailableError",
    "DigestError",
    "DigestMismatchError",
    "DockerfileSyntaxError",
    "ExecutorUnavailableError",
    "ImageNotFoundError",
    "InvalidDigestError",
    "InvalidReferenceError",
    "InvalidWhiteoutError",
    "LayerError",
    "LayerkitError",
    "LimitExceededError",
    "ManifestError",
    "RegistryError",
    "SourceError",
    "StepFailedError",
    "StoreError",
    "TarFormatError",
    "UnsafePathError",
    "UnsupportedInstructionError",
    "UnsupportedMediaTypeError",
]


class LayerkitError(Exception):
    """Root of every error layerkit raises on purpose."""


class InvalidReferenceError(LayerkitError, ValueError):
    """An image or transport reference that does not parse."""


class ConfigError(LayerkitError, ValueError):
    """A settings file layerkit reads (``.layerkit-ci.yaml``…) that does not parse; names file:line."""


class DigestError(LayerkitError):
    pass


class InvalidDigestError(DigestError, ValueError):
    pass


class DigestMismatchError(DigestError):
    """Bytes read do not hash to the digest they were fetched under."""

    def __init__(self, expected: str, actual: str, what: str = "blob", source: str = "") -> None:
        self.expected = expected
        self.actual = actual
        where = f" from {source}" if source else ""
        super().__init__(
            f"{what} {expected}{where} is corrupt: its content hashes to {actual}; "
            "fetch it again or, for the local store, run `layerkit check` and re-pull"
        )


class ManifestError(LayerkitError):
    """A manifest, index or config that is malformed or of an unsupported type."""


class LayerError(LayerkitError):
    pass


class UnsafePathError(LayerError):
    """A layer entry that would create, modify or follow something outside the target root."""

    def __init__(self, member: str, reason: str, layer: str = "") -> None:
        self.member = member
        self.reason = reason
        self.layer = layer
        where = f" in layer {layer}" if layer else ""
        super().__init__(f"refusing entry {member!r}{where}: {reason}")


class InvalidWhiteoutError(LayerError):
    pass


class UnsupportedMediaTypeError(LayerError):
    pass


class LimitExceededError(LayerError):
    """A resource limit (uncompressed size, ratio, entry count) was hit; raise it with a flag.

    ``limit`` names the :class:`layerkit.tarfs.limits.Limits` field (``max_bytes``…) when known."""

    def __init__(self, message: str, limit: str = "") -> None:
        self.limit = limit
        super().__init__(message)


class TarFormatError(LayerError):
    """A truncated or malformed tar archive."""


class StoreError(LayerkitError):
    pass


class BlobNotFoundError(StoreError):
    def __init__(self, digest: str, where: str = "") -> None:
        self.digest = digest
        super().__init__(f"blob {digest} not found{' in ' + where if where else ''}")


class CorruptStoreError(StoreError):
    pass


class SourceError(LayerkitError):
    pass


class ImageNotFoundError(SourceError):
    pass


class AuthenticationError(SourceError):
    pass


class RegistryError(SourceError):
    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class DaemonUnavailableError(SourceError):
    pass


class BuildError(LayerkitError):
    pass


class DockerfileSyntaxError(BuildError):
    """A Dockerfile that does not parse; the message starts with ``file:line``."""

    def __init__(self, message: str, file: str = "Dockerfile", line: int | None = None) -> None:
        self.file = file
        self.line = line
        loc = f"{file}:{line}" if line is not None else file
        super().__init__(f"{loc}: {message}")


class UnsupportedInstructionError(DockerfileSyntaxError):
    pass


class ExecutorUnavailableError(BuildError):
    pass


class StepFailedError(BuildError):
    def __init__(self, step: str, location: str, exit_code: int, output_tail: str = "") -> None:
        self.step = step
        self.location = location
        self.exit_code = exit_code
        self.output_tail = output_tail
        msg = f"{location}: {step!r} failed with exit code {exit_code}"
        if output_tail:
            msg += "\n" + output_tail.rstrip()
        super().__init__(msg)
