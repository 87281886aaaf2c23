"""The Image/Layer model: lazy, verified, the same whatever the source."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import threading
from collections.abc import Callable
from typing import BinaryIO

import pytest

from layerkit import mediatypes as mt
from layerkit.digest import sha256_bytes
from layerkit.errors import DigestMismatchError, ManifestError
from layerkit.image import HASH_THREAD_FROM, WHOLE_BLOB_MAX, WHOLE_TAR_MAX, Image
from layerkit.spec import Descriptor, ImageConfig, Manifest


class DictSource:
    """A BlobSource over a dict, counting opens (to prove laziness)."""

    name = "memory"

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.opened: list[str] = []

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        self.opened.append(descriptor.digest)
        return io.BytesIO(self.blobs[descriptor.digest])


def layer_tar(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("data")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def make(payload: bytes = b"x" * 50_000, *, corrupt_layer: bool = False, extra_diff_id: bool = False,
         wrong_diff_id: bool = False, encode: Callable[[bytes], bytes] = lambda tar: gzip.compress(tar, mtime=0)):
    tar = layer_tar(payload)
    blob = encode(tar)
    diff_ids = (sha256_bytes(tar + b"!" if wrong_diff_id else tar),) + ((sha256_bytes(b"extra"),) if extra_diff_id else ())
    cfg = ImageConfig(config={"Cmd": ["/bin/sh"]}, diff_ids=diff_ids).to_bytes()
    stored = bytearray(blob)
    if corrupt_layer:
        stored[40] ^= 0xFF
    source = DictSource({sha256_bytes(blob): bytes(stored), sha256_bytes(cfg): cfg})
    manifest = Manifest(
        mt.OCI_MANIFEST,
        Descriptor(mt.OCI_CONFIG, sha256_bytes(cfg), len(cfg)),
        (Descriptor(mt.OCI_LAYER_GZIP, sha256_bytes(blob), len(blob)),),
    )
    return Image(manifest, source, reference="test"), source, tar


def test_nothing_is_read_until_asked() -> None:
    image, source, _ = make()
    assert image.digest.startswith("sha256:")
    assert source.opened == []
    assert image.config.config["Cmd"] == ["/bin/sh"]
    assert len(source.opened) == 1  # the config only


def test_open_tar_gives_the_verified_uncompressed_layer() -> None:
    image, _, tar = make()
    with image.layers[0].open_tar() as f:
        assert f.read() == tar


def test_a_corrupt_layer_blob_is_a_digest_error_not_a_codec_error() -> None:
    image, _, _ = make(corrupt_layer=True)
    with pytest.raises(DigestMismatchError, match=image.layers[0].digest):
        image.layers[0].open_tar().read()


#: incompressible: the blob is over HASH_THREAD_FROM, so its tar is hashed in a thread of its own
BIG = os.urandom(HASH_THREAD_FROM + 4096)


@pytest.mark.parametrize("payload", [b"x" * 50_000, BIG], ids=["hashed-inline", "hashed-in-a-thread"])
def test_a_diff_id_that_does_not_match_the_tar_is_caught_at_its_end(payload: bytes) -> None:
    image, _, tar = make(payload)
    assert (image.layers[0].size >= HASH_THREAD_FROM) == (payload is BIG)
    with image.layers[0].open_tar() as f:
        assert f.read() == tar
    image, _, _ = make(payload, wrong_diff_id=True)
    with pytest.raises(DigestMismatchError, match="diff ID"), image.layers[0].open_tar() as f:
        while f.read(65536):
            pass


def _two_members(tar: bytes) -> bytes:
    return gzip.compress(tar[:1000], mtime=0) + gzip.compress(tar[1000:], mtime=0)


@pytest.mark.parametrize("payload, encode", [
    (b"x" * 50_000, lambda tar: gzip.compress(tar, mtime=0)),
    (b"x" * 50_000, _two_members),
    (bytes(WHOLE_TAR_MAX + 1), lambda tar: gzip.compress(tar, mtime=0)),
    (b"x" * 20_000, lambda tar: tar),
    (os.urandom(WHOLE_BLOB_MAX + 1), lambda tar: gzip.compress(tar, mtime=0)),
], ids=["one-member-whole", "two-members-streamed", "big-tar-streamed", "uncompressed-whole", "big-blob-streamed"])
def test_a_layer_reads_the_same_whether_small_enough_to_take_whole_or_not(
        payload: bytes, encode: Callable[[bytes], bytes]) -> None:
    image, _, tar = make(payload, encode=encode)
    with image.layers[0].open_tar() as f:
        assert f.read() == tar
    image, _, _ = make(payload, encode=encode, wrong_diff_id=True)
    with pytest.raises(DigestMismatchError, match="diff ID"), image.layers[0].open_tar() as f:
        while f.read(65536):
            pass


def test_a_small_corrupt_blob_is_caught_as_it_is_opened() -> None:
    image, _, _ = make(corrupt_layer=True)
    assert image.layers[0].size <= WHOLE_BLOB_MAX
    with pytest.raises(DigestMismatchError, match=image.layers[0].digest):
        image.layers[0].open_tar()


class _Unclosable(io.BytesIO):
    def close(self) -> None:  # so the test can ask how far the reader got
        pass


def test_a_small_blob_is_not_read_past_its_size() -> None:
    image, source, _ = make()
    digest = image.layers[0].digest
    source.blobs[digest] += bytes(64 << 20)  # a source that keeps sending
    served = _Unclosable(source.blobs[digest])
    source.open_blob = lambda descriptor: served  # type: ignore[method-assign]
    with pytest.raises(DigestMismatchError, match="bytes, expected"):
        image.layers[0].open_tar()
    assert served.tell() <= image.layers[0].size + 1


def test_closing_a_big_layer_half_read_ends_its_hashing_thread() -> None:
    image, _, _ = make(BIG)
    before = threading.active_count()
    f = image.layers[0].open_tar()
    assert f.read(1 << 16)
    assert threading.active_count() == before + 1
    f.close()
    assert threading.active_count() == before


def test_diff_ids_must_match_the_manifest_layers() -> None:
    image, _, _ = make(extra_diff_id=True)
    with pytest.raises(ManifestError, match="1 layers but the config has 2 diff IDs"):
        image.layers  # noqa: B018 - the property is what raises


def test_a_tampered_config_is_caught() -> None:
    image, source, _ = make()
    cfg = image.manifest.config.digest
    source.blobs[cfg] = source.blobs[cfg].replace(b"/bin/sh", b"/bin/xx")
    with pytest.raises(DigestMismatchError, match="config"):
        image.config  # noqa: B018
