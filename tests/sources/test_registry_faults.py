"""Network faults between layerkit and a real registry, injected by a loopback proxy: resets, 5xx,
stalls and short bodies. Pulls and pushes either succeed after bounded retries (a blob download
resumes with Range) or fail with a clear message — never a hang, never a retry of 4xx."""

from __future__ import annotations

import dataclasses
import io
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest
from registry_helpers import Fault, FaultProxy, make_image, push

from layerkit.errors import ImageNotFoundError, RegistryError
from layerkit.image import Image
from layerkit.reference import DockerReference
from layerkit.sources.registry import RegistrySink, RetryPolicy, open_image

pytestmark = pytest.mark.registry

#: quick retries and a 1 s stall limit keep these tests short; the defaults are 4 tries and 30 s
FAST = RetryPolicy(attempts=4, backoff=0.02, max_backoff=0.1, connect_timeout=2, read_timeout=1.0)
BLOB = r"/blobs/sha256:"
UPLOADS = r"/blobs/uploads/"
MANIFEST = r"/manifests/"


@pytest.fixture
def proxy(registry: str) -> Iterator[FaultProxy]:
    p = FaultProxy(registry)
    yield p
    p.close()


@pytest.fixture(scope="module")
def image() -> Image:
    return make_image([{"payload": os.urandom(3 << 20)}], compress=False)  # 3 MiB, several 1 MiB reads


def ref_via(proxy: FaultProxy, tag: str = "1") -> DockerReference:
    return DockerReference.parse(f"{proxy.host}/faults/{uuid.uuid4().hex[:10]}:{tag}")


def pull_all(ref: DockerReference) -> bytes:
    pulled = open_image(ref, policy=FAST)
    return b"".join(layer.open().read() for layer in pulled.layers) + pulled.raw_config


def expected(image: Image) -> bytes:
    return b"".join(layer.open().read() for layer in image.layers) + image.raw_config


def pushed(proxy: FaultProxy, image: Image) -> DockerReference:
    ref = ref_via(proxy)
    push(image, RegistrySink(ref, policy=FAST))
    return ref


@pytest.mark.parametrize(
    "fault",
    [
        Fault("reset", "GET", MANIFEST),
        Fault("status", "GET", MANIFEST, status=500, times=2),
        Fault("short", "GET", MANIFEST, keep=10),
        Fault("status", "GET", BLOB, status=503),
        Fault("reset", "GET", BLOB, times=3),
        Fault("short", "GET", BLOB, keep=1_500_000, times=2),  # resumes at the offset with Range
        Fault("reset-body", "GET", BLOB, keep=2_500_000),
        Fault("slow", "GET", BLOB, delay=2.5),  # stalls past the 1 s read timeout
    ],
    ids=lambda f: f"{f.kind}-{f.path.strip('/').split('/')[-1] or 'blob'}-x{f.times}",
)
def test_pull_survives_transient_faults(proxy: FaultProxy, image: Image, fault: Fault) -> None:
    ref = pushed(proxy, image)
    if fault.path == BLOB:
        fault = dataclasses.replace(fault, path=BLOB + image.layers[0].digest.hex)  # the 3 MiB layer
    proxy.inject(fault)

    assert pull_all(ref) == expected(image)

    assert not proxy.faults  # every injected fault was hit
    if fault.kind == "short" and fault.path.startswith(BLOB):
        assert 206 in [status for *_, status in proxy.seen]  # resumed with Range, not fetched again


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", "POST", UPLOADS, status=500),
        Fault("reset", "POST", UPLOADS, times=2),
        Fault("reset", "PUT", UPLOADS),  # the blob body broke off: a new upload session is started
        Fault("status", "PUT", UPLOADS, status=502),
        Fault("status", "HEAD", BLOB, status=503),
        Fault("reset", "PUT", MANIFEST),
        Fault("status", "PUT", MANIFEST, status=500, times=3),
    ],
    ids=lambda f: f"{f.kind}-{f.method}-{f.path.strip('/').split('/')[-1] or 'blob'}-x{f.times}",
)
def test_push_survives_transient_faults(proxy: FaultProxy, image: Image, fault: Fault) -> None:
    proxy.inject(fault)

    ref = pushed(proxy, image)

    assert not proxy.faults
    assert pull_all(ref) == expected(image)


def test_persistent_5xx_fails_with_a_clear_message_after_bounded_retries(proxy: FaultProxy, image: Image) -> None:
    ref = pushed(proxy, image)
    proxy.inject(Fault("status", "GET", MANIFEST, status=500, times=100))
    start = time.monotonic()

    with pytest.raises(RegistryError, match=rf"pulling {ref}: {proxy.host} answered HTTP 500 .*after 4 attempts"):
        open_image(ref, policy=FAST)

    assert time.monotonic() - start < 5
    assert len([s for *_, s in proxy.seen if s == -1]) == FAST.attempts


def test_a_registry_that_stalls_forever_times_out(proxy: FaultProxy, image: Image) -> None:
    ref = pushed(proxy, image)
    proxy.inject(Fault("slow", "GET", MANIFEST, delay=3, times=100))
    start = time.monotonic()

    with pytest.raises(RegistryError, match=rf"{proxy.host} did not answer within 1 s|kept failing"):
        open_image(ref, policy=FAST)

    assert time.monotonic() - start < FAST.attempts * (FAST.read_timeout + FAST.max_backoff) + 2


def test_a_blob_that_keeps_breaking_off_fails_after_bounded_resumes(proxy: FaultProxy, image: Image) -> None:
    ref = pushed(proxy, image)
    pulled = open_image(ref, policy=FAST)
    proxy.inject(Fault("reset-body", "GET", BLOB, keep=0, times=100))

    with pytest.raises(RegistryError, match=r"fetching blob sha256:\w+ of .*kept failing .* after 4 attempts"):
        pulled.layers[0].open().read()


def test_an_upload_from_a_stream_that_cannot_rewind_fails_clearly(proxy: FaultProxy, image: Image) -> None:
    desc = image.manifest.layers[0]
    proxy.inject(Fault("reset", "PUT", UPLOADS))

    with pytest.raises(RegistryError, match="upload broke off .* cannot be read again; run the push again"):
        RegistrySink(ref_via(proxy), policy=FAST).put_blob(desc, OneWay(image.open_blob(desc)))


def test_client_errors_are_never_retried(proxy: FaultProxy) -> None:
    ref = ref_via(proxy, "absent")
    with pytest.raises(ImageNotFoundError):
        open_image(ref, policy=FAST)
    assert [(m, s) for m, _, s in proxy.seen] == [("GET", 404)]


class OneWay(io.RawIOBase):
    """A stream that can only be read forward, like a pipe or a blob streamed from elsewhere."""

    def __init__(self, inner: BinaryIO | Any) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        return bytes(self._inner.read(n))
