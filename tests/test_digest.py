"""Digest values and verified streams."""

from __future__ import annotations

import io

import pytest

from layerkit.digest import Digest, Hasher, VerifyingReader, sha256_bytes, sha256_file
from layerkit.errors import DigestMismatchError, InvalidDigestError

ABC = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_digest_parses_and_exposes_parts() -> None:
    d = Digest(ABC)
    assert d.algorithm == "sha256" and d.hex.startswith("ba7816") and d.short == "ba7816bf8f01"
    assert d == ABC and Digest(d) is d


@pytest.mark.parametrize(
    "bad", ["", "sha256:", "sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "SHA256:" + "0" * 64, ABC + " "]
)
def test_invalid_digests_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidDigestError):
        Digest(bad)


def test_sha256_helpers_agree(tmp_path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_bytes(b"abc") == ABC
    assert sha256_file(str(p)) == (ABC, 3)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 65536])
def test_sha256_file_is_the_same_whole_or_in_chunks(tmp_path, size: int) -> None:
    p = tmp_path / "f"
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    p.write_bytes(data)
    expected = (sha256_bytes(data), size)
    assert sha256_file(str(p)) == expected  # smaller than a chunk: read whole
    assert sha256_file(str(p), chunk=1000) == expected  # larger: chunked reads


def test_hasher_forwards_and_counts() -> None:
    sink = io.BytesIO()
    h = Hasher(sink)
    h.write(b"ab")
    h.write(memoryview(b"c"))
    assert (h.digest(), h.size, sink.getvalue()) == (ABC, 3, b"abc")


def test_verifying_reader_passes_good_bytes_in_any_chunking() -> None:
    r = VerifyingReader(io.BytesIO(b"abc"), ABC, 3)
    assert r.read(1) + r.read(5) + r.read() == b"abc"


def test_verifying_reader_catches_a_flipped_byte_at_eof() -> None:
    r = VerifyingReader(io.BytesIO(b"abd"), ABC, 3, source="test")
    with pytest.raises(DigestMismatchError, match="is corrupt"):
        r.read()


def test_verifying_reader_catches_truncation_and_overrun() -> None:
    with pytest.raises(DigestMismatchError):
        VerifyingReader(io.BytesIO(b"ab"), ABC, 3).read()
    r = VerifyingReader(io.BytesIO(b"abcabc"), ABC, 3)
    with pytest.raises(DigestMismatchError):
        while r.read(2):
            pass
