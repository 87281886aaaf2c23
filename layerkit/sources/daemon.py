"""The ``docker-daemon:`` transport: images in a Docker Engine's store, through the docker SDK.

The Engine API has no per-blob access, so reading costs one ``docker save``: the whole image
(uncompressed layers) is streamed into an anonymous temp file (under the store's tmp dir, or
``$TMPDIR``) and then read as a docker-archive — disk for one uncompressed copy of the image and the
time of the Engine's tar export. The temp file has no name, so it disappears when the image is
garbage-collected or the process ends, whatever happens. Writing builds a docker-archive in a temp
file and hands it to ``docker load`` (streamed, never in memory), then makes sure the tag is set.

``docker`` is imported lazily (≈120 ms) and its errors are translated in one place
(``_docker_errors``), so no docker or requests exception escapes this module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Self, cast

from ..errors import (
    DaemonUnavailableError,
    ImageNotFoundError,
    InvalidReferenceError,
    SourceError,
)
from ..image import Image
from ..mediatypes import Compression
from ..reference import DockerReference
from ..spec import Descriptor, Platform
from . import archive

__all__ = ["DaemonSink", "client", "daemon_available", "docker_host", "open_image"]

#: how long a bare-name lookup waits for an Engine before moving on to the registry
AVAILABILITY_TIMEOUT = 2.0
#: API calls that move whole images (save/load) may take long on a busy Engine
TRANSFER_TIMEOUT = 600


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _unavailable(what: str, exc: BaseException) -> DaemonUnavailableError:
    return DaemonUnavailableError(
        f"{what}: cannot reach the Docker Engine at {docker_host()} ({_cause(exc)}): "
        "start dockerd or set DOCKER_HOST"
    )


_CAUSES = (
    ("No such file or directory", "no socket there"),
    ("Connection refused", "connection refused"),
    ("Permission denied", "permission denied on the socket"),
    ("timed out", "timed out"),
    ("Name or service not known", "unknown host"),
)


def _cause(exc: BaseException) -> str:
    """requests buries the real cause in a long nested repr; name it in a few words."""
    text = str(exc)
    for needle, cause in _CAUSES:
        if needle in text:
            return cause
    return text if len(text) < 200 else text[:200] + "…"


@contextmanager
def _docker_errors(what: str) -> Iterator[None]:
    """Translate docker SDK / requests exceptions into layerkit errors (the only place that does)."""
    import docker.errors  # type: ignore[import-untyped]
    import requests.exceptions

    try:
        yield
    except docker.errors.NotFound:  # ImageNotFound is a subclass
        raise ImageNotFoundError(
            f"{what}: no such image in the Docker Engine at {docker_host()}; pull, build or load it first"
        ) from None
    except docker.errors.APIError as exc:
        raise SourceError(f"{what}: the Docker Engine answered {exc.status_code}: {exc.explanation or exc}") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise _unavailable(what, exc) from None
    except docker.errors.DockerException as exc:  # from_env: version probe failed, bad DOCKER_HOST, …
        raise _unavailable(what, exc) from None


@contextmanager
def client(what: str, timeout: float = TRANSFER_TIMEOUT) -> Iterator[Any]:
    """A ``docker.DockerClient`` for the Engine at :func:`docker_host`, closed on exit; SDK errors
    raised inside (and while connecting) become layerkit errors prefixed with ``what``."""
    import docker

    with _docker_errors(what):
        engine = docker.from_env(timeout=timeout)  # negotiates the API version (1.41 on Engine 20.10)
    try:
        with _docker_errors(what):
            yield engine
    finally:
        engine.close()


def daemon_available(timeout: float = AVAILABILITY_TIMEOUT) -> bool:
    """True when a Docker Engine answers a ping within ``timeout`` seconds."""
    try:
        with client("pinging the Docker Engine", timeout=timeout) as engine:
            return bool(engine.ping())
    except (DaemonUnavailableError, SourceError):
        return False


def _check_name(name: str, what: str) -> str:
    if name.startswith("sha256:"):
        return name
    try:
        return DockerReference.parse(name).familiar
    except InvalidReferenceError as exc:
        raise InvalidReferenceError(f"{what}: {exc}") from None


def open_image(name: str, *, platform: Platform | None = None, tmp_dir: str | os.PathLike[str] | None = None) -> Image:
    """``docker-daemon:NAME[:TAG]`` (or an image ID): saved to a temp file, then read as an archive."""
    what = f"reading docker-daemon:{name}"
    name = _check_name(name, what)
    # nameless, so it vanishes with the image (or the process) whatever happens; the source keeps it
    spool = tempfile.TemporaryFile(dir=tmp_dir, prefix="layerkit-daemon-save-")  # noqa: SIM115
    try:
        with client(what) as engine:
            img = engine.images.get(name)
            # save under the name asked for, so the archive's RepoTags say what was read
            for chunk in img.save(chunk_size=1 << 20, named=name if name in img.tags else True):
                spool.write(chunk)
        spool.flush()
        source = archive.read_archive(name, fileobj=cast(BinaryIO, spool), name=f"docker-daemon:{name}")
    except BaseException:
        spool.close()
        raise
    entry = archive.select(source, "" if len(source.entries) == 1 else name)
    return archive.image_from_entry(source, entry, f"docker-daemon:{name}", platform)


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


class DaemonSink:
    """Loads images into the Docker Engine: a docker-archive in a temp file, ``docker load``, tag."""

    preserve_layer_compression = True

    def __init__(self, name: str, *, tmp_dir: str | os.PathLike[str] | None = None) -> None:
        what = f"writing docker-daemon:{name}"
        if name.startswith("sha256:"):
            raise InvalidReferenceError(f"{what}: a destination needs a name, not an image ID")
        self.ref = DockerReference.parse(name)
        if not self.ref.tag:
            raise InvalidReferenceError(f"{what}: a destination needs a tag, not only a digest")
        self.name = f"docker-daemon:{self.ref.familiar}"
        with client(what, timeout=AVAILABILITY_TIMEOUT * 5) as engine:  # fail before copying anything
            version = str(engine.version().get("Version", ""))
        #: layer codecs ``docker load`` understands: zstd arrived with Engine 23 (20.10 fails with
        #: "archive/tar: invalid tar header"), so copy recompresses zstd layers to gzip for older ones
        self.layer_compressions = frozenset(Compression) if _major(version) >= 23 else frozenset(
            {Compression.NONE, Compression.GZIP})
        self._dir = tempfile.TemporaryDirectory(dir=tmp_dir, prefix="layerkit-daemon-load-")
        self._archive = archive.ArchiveSink(Path(self._dir.name) / "image.tar", [self.ref.familiar])
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def has_blob(self, descriptor: Descriptor) -> bool:
        return self._archive.has_blob(descriptor)

    def put_blob(self, descriptor: Descriptor, stream: Any) -> None:
        self._archive.put_blob(descriptor, stream)

    def put_image(self, image: Image) -> None:
        self._archive.put_image(image)

    def close(self) -> None:
        """Load the archive into the Engine (the commit point) and make sure the tag is set."""
        if self._closed:
            return
        self._closed = True
        try:
            self._archive.close()
            what = f"loading into {self.name}"
            with client(what) as engine, open(self._archive.path, "rb") as f:
                loaded = engine.images.load(f)
                repo = self.ref.familiar.rsplit(":", 1)[0]
                for img in loaded:
                    if self.ref.familiar not in img.tags:
                        img.tag(repo, self.ref.tag)
        finally:
            self._dir.cleanup()

    def abort(self) -> None:
        self._closed = True
        self._archive.abort()
        self._dir.cleanup()
