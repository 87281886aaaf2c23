"""OCILayout: a spec-conformant layout, verified atomic blob ingestion, tags in index.json."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layerkit import mediatypes as mt
from layerkit.digest import Digest, sha256_bytes
from layerkit.errors import (
    BlobNotFoundError,
    DigestMismatchError,
    ImageNotFoundError,
    InvalidReferenceError,
    ManifestError,
    StoreError,
)
from layerkit.spec import ANNOTATION_REF_NAME, Descriptor, Index, Platform
from layerkit.store import OCILayout

MakeImage = Callable[..., Descriptor]


def ingest_leftovers(layout: OCILayout) -> list[str]:
    ingest = layout.root / ".layerkit" / "ingest"
    return sorted(p.name for p in ingest.iterdir()) if ingest.is_dir() else []


def blob_names(layout: OCILayout) -> set[str]:
    return {p.name for p in (layout.root / "blobs" / "sha256").iterdir()}


# --- the layout itself ---------------------------------------------------------------------------


def test_create_writes_a_layout_that_validates(tmp_path: Path, oci_validate: Any) -> None:
    layout = OCILayout(tmp_path / "new", create=True)
    oci_validate("layout", (layout.root / "oci-layout").read_bytes())
    oci_validate("index", (layout.root / "index.json").read_bytes())
    assert (layout.root / "blobs" / "sha256").is_dir()
    assert layout.tags() == {}


def test_opening_a_directory_that_is_not_a_layout_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not an OCI image layout"):
        OCILayout(tmp_path)


def test_an_unknown_layout_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"9.9"}')
    with pytest.raises(StoreError, match="only '1.0.0'"):
        OCILayout(tmp_path)


def test_image_round_trip_with_documents_that_validate(
    layout: OCILayout, oci_validate: Any, make_image: MakeImage
) -> None:
    desc = make_image(layout, {"etc/hello": b"world\n"}, "v1")
    image = layout.image("v1")
    assert image.digest == desc.digest
    assert image.reference == f"oci:{layout.root}:v1"
    assert image.config.config["Cmd"] == ["/bin/sh"]
    assert image.platform == Platform("linux", "amd64")
    (layer,) = image.layers
    with layer.open() as f, tarfile.open(fileobj=f, mode="r|gz") as tar:
        member = tar.next()
        assert member is not None and member.name == "etc/hello"
        assert tar.extractfile(member).read() == b"world\n"  # type: ignore[union-attr]
    oci_validate("index", (layout.root / "index.json").read_bytes())
    oci_validate("manifest", image.manifest.to_bytes())
    oci_validate("config", image.raw_config)
    assert ingest_leftovers(layout) == []


def test_peers_read_the_layout(layout: OCILayout, make_image: MakeImage) -> None:
    """skopeo and umoci (the real tools) accept what we write."""
    desc = make_image(layout, {"bin/tool": b"#!/bin/sh\necho hi\n"}, "peer")
    out = subprocess.run(["skopeo", "inspect", f"oci:{layout.root}:peer"], check=True,
                         capture_output=True, text=True).stdout
    assert json.loads(out)["Digest"] == desc.digest
    stat = subprocess.run(["umoci", "stat", "--image", f"{layout.root}:peer", "--json"], check=True,
                          capture_output=True, text=True).stdout
    assert json.loads(stat)["history"][0]["created_by"] == "test layer"


# --- blob ingestion -----------------------------------------------------------------------------


def test_put_blob_returns_digest_and_is_idempotent(layout: OCILayout) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # several chunks and a tail
    digest, size = layout.put_blob(io.BytesIO(data))
    assert (digest, size) == (sha256_bytes(data), len(data))
    path = layout.blob_path(digest)
    os.utime(path, (1, 1))
    inode = path.stat().st_ino

    class Unreadable(io.RawIOBase):
        def readinto(self, b: Any) -> int:
            raise AssertionError("an existing blob must not be read again")

    assert layout.put_blob(Unreadable(), Descriptor(mt.OCI_LAYER, digest, size)) == (digest, size)
    assert path.stat().st_ino == inode  # not rewritten
    assert path.stat().st_mtime > 1  # but refreshed: gc's grace period now covers the new user
    assert path.read_bytes() == data
    assert ingest_leftovers(layout) == []


def test_wrong_digest_raises_and_stores_nothing(layout: OCILayout) -> None:
    before = blob_names(layout)
    lie = Descriptor(mt.OCI_LAYER, sha256_bytes(b"something else"), 5)
    with pytest.raises(DigestMismatchError) as info:
        layout.put_blob(io.BytesIO(b"hello"), lie)
    assert info.value.expected == lie.digest
    assert blob_names(layout) == before
    assert ingest_leftovers(layout) == []


@pytest.mark.parametrize("actual", [b"hell", b"hello!"], ids=["short", "long"])
def test_wrong_size_raises_and_stores_nothing(layout: OCILayout, actual: bytes) -> None:
    expected = Descriptor(mt.OCI_LAYER, sha256_bytes(b"hello"), 5)
    with pytest.raises(DigestMismatchError, match="expected 5"):
        layout.put_blob(io.BytesIO(actual), expected)
    assert not layout.has_blob(expected.digest)
    assert ingest_leftovers(layout) == []


def test_overlong_stream_is_not_read_past_the_promised_size(layout: OCILayout) -> None:
    class Endless(io.RawIOBase):
        served = 0

        def readinto(self, b: Any) -> int:
            b[:] = b"x" * len(b)
            self.served += len(b)
            return len(b)

    stream = Endless()
    with pytest.raises(DigestMismatchError):
        layout.put_blob(stream, Descriptor(mt.OCI_LAYER, sha256_bytes(b"x" * 10), 10))
    assert stream.served == 11


def test_interrupted_stream_leaves_no_blob_and_no_temp_file(layout: OCILayout) -> None:
    class Breaks(io.RawIOBase):
        sent = 0

        def readinto(self, b: Any) -> int:
            if self.sent >= 2 << 20:
                raise ConnectionResetError("peer went away")
            b[:] = b"y" * len(b)
            self.sent += len(b)
            return len(b)

    before = blob_names(layout)
    with pytest.raises(ConnectionResetError):
        layout.put_blob(Breaks())
    assert blob_names(layout) == before
    assert ingest_leftovers(layout) == []


def test_blob_writer_hashes_while_streaming(layout: OCILayout) -> None:
    parts = [os.urandom(700_000) for _ in range(3)]
    with layout.blob_writer() as w:
        for p in parts:
            w.write(p)
        assert w.tell() == 2_100_000
        digest, size = w.commit()
    assert digest == sha256_bytes(b"".join(parts)) and size == 2_100_000
    assert layout.blob_path(digest).read_bytes() == b"".join(parts)


def test_blob_writer_without_commit_or_with_an_error_leaves_nothing(layout: OCILayout) -> None:
    before = blob_names(layout)
    with layout.blob_writer() as w:
        w.write(b"abandoned")
    with pytest.raises(RuntimeError), layout.blob_writer() as w:
        w.write(b"half a layer")
        raise RuntimeError("compressor crashed")
    with pytest.raises(DigestMismatchError), layout.blob_writer() as w:
        w.write(b"abc")
        w.commit(Descriptor(mt.OCI_LAYER, sha256_bytes(b"abd"), 3))
    assert blob_names(layout) == before
    assert ingest_leftovers(layout) == []


def test_put_json_keeps_given_bytes_and_renders_objects_canonically(layout: OCILayout) -> None:
    raw = b'{ "b": 1,\n  "a": 2 }'
    assert layout.put_json(raw)[0] == sha256_bytes(raw)
    assert layout.put_json({"b": 1, "a": 2})[0] == sha256_bytes(b'{"a":2,"b":1}')


def test_open_blob_of_an_absent_digest_names_it(layout: OCILayout) -> None:
    missing = sha256_bytes(b"nope")
    with pytest.raises(BlobNotFoundError, match=missing.hex):
        layout.open_blob(missing)


def test_a_flipped_byte_is_caught_when_the_image_reads_the_blob(layout: OCILayout, make_image: MakeImage) -> None:
    make_image(layout, {"data": os.urandom(4096)}, "v1")
    image = layout.image("v1")
    (layer,) = image.layers
    path = layout.blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match=layer.digest.hex), layer.open() as f:
        f.read()


# --- tags and index.json ------------------------------------------------------------------------


def test_tags_set_move_and_remove(layout: OCILayout, make_image: MakeImage) -> None:
    one = make_image(layout, {"f": b"1"}, "one")
    two = make_image(layout, {"f": b"2"}, "two")
    assert {k: v.digest for k, v in layout.tags().items()} == {"one": one.digest, "two": two.digest}
    layout.set_tag("one", two)  # move
    assert layout.resolve("one").digest == two.digest
    assert len(layout.entries()) == 2  # the old target of "one" is no longer listed
    assert [d.digest for d in layout.remove_tag("two")] == [two.digest]
    assert set(layout.tags()) == {"one"}
    with pytest.raises(ImageNotFoundError, match="tags: one"):
        layout.remove_tag("two")
    doc = json.loads((layout.root / "index.json").read_bytes())
    assert doc["manifests"][0]["annotations"][ANNOTATION_REF_NAME] == "one"


@pytest.mark.parametrize("bad", ["-lead", "two  spaces", "trail/", "a/../b"])
def test_tags_follow_the_image_spec_ref_name_grammar(layout: OCILayout, make_image: MakeImage, bad: str) -> None:
    desc = make_image(layout, {"f": b"x"}, index_entry=False)
    with pytest.raises(InvalidReferenceError, match="invalid tag"):
        layout.set_tag(bad, desc)
    for good in ("3.20", "v1.0-rc.1", "example.com/app:1", "a--b"):
        layout.set_tag(good, desc)
    assert len(layout.tags()) == 4


def test_a_tag_never_names_an_incomplete_image(layout: OCILayout, make_image: MakeImage) -> None:
    desc = make_image(layout, {"f": b"x"}, index_entry=False)
    layer = layout.image(desc.digest).layers[0]
    layout.blob_path(layer.digest).unlink()
    with pytest.raises(BlobNotFoundError, match=layer.digest.hex):
        layout.set_tag("broken", desc)
    assert layout.tags() == {}


def test_resolve_by_digest_and_the_only_untagged_entry(layout: OCILayout, make_image: MakeImage) -> None:
    desc = make_image(layout, {"f": b"x"})  # recorded in index.json without a name
    assert layout.tags() == {}
    assert layout.image().digest == desc.digest
    assert layout.image(desc.digest).digest == desc.digest
    assert layout.image(f"whatever@{desc.digest}").digest == desc.digest
    make_image(layout, {"f": b"y"}, "named")
    with pytest.raises(ImageNotFoundError, match="holds 2 images.*named"):
        layout.image()
    with pytest.raises(ImageNotFoundError, match="'nope' not found.*tags: named"):
        layout.image("nope")


def test_a_tagged_index_selects_the_platform(
    layout: OCILayout, oci_validate: Any, make_image: MakeImage
) -> None:
    amd = make_image(layout, {"arch": b"amd64"}, arch="amd64", index_entry=False)
    arm = make_image(layout, {"arch": b"arm64"}, arch="arm64", index_entry=False)
    index = Index(mt.OCI_INDEX, (amd, arm))
    desc = layout.put_manifest(index, "multi")
    oci_validate("index", layout.blob_path(desc.digest).read_bytes())
    assert layout.image("multi", Platform.parse("linux/arm64")).digest == arm.digest
    assert layout.image("multi", "linux/amd64").digest == amd.digest
    picked = layout.image("multi")  # this host
    assert picked.index is not None and picked.digest in (amd.digest, arm.digest)
    with pytest.raises(ManifestError, match="available: linux/amd64, linux/arm64"):
        layout.image("multi", "linux/s390x")
    assert layout.image(arm.digest).platform.architecture == "arm64"  # a child by digest


def test_a_single_platform_image_must_match_an_explicit_platform(layout: OCILayout, make_image: MakeImage) -> None:
    make_image(layout, {"f": b"x"}, "amd", arch="amd64")
    with pytest.raises(ManifestError, match="linux/amd64 image, not linux/arm64"):
        layout.image("amd", "linux/arm64")


@pytest.fixture
def two_tags(layout: OCILayout, make_image: MakeImage) -> Iterator[OCILayout]:
    make_image(layout, {"f": b"1"}, "a")
    make_image(layout, {"f": b"2"}, "b")
    yield layout


def test_summaries_report_size_created_and_platform(two_tags: OCILayout) -> None:
    rows = two_tags.summaries()
    assert [r.name for r in rows] == ["a", "b"]
    a = rows[0]
    image = two_tags.image("a")
    expected = a.descriptor.size + image.manifest.config.size + sum(x.size for x in image.layers)
    assert a.size == expected
    assert a.created == "2024-01-01T00:00:00Z"
    assert a.to_json()["platform"] == "linux/amd64"
    assert Digest(a.to_json()["digest"]) == image.digest


def test_reading_a_layout_and_unpacking_from_it_import_no_pathlib(alpine_image_oci: Path, tmp_path: Path) -> None:
    """pathlib (with urllib.parse and ipaddress) costs a command ~4 ms to import, and reading a layout
    needs none of it. The child runs without ``site``, which may load pathlib itself."""
    code = (
        "import os, sys\n"
        "from layerkit.store import OCILayout\n"
        "from layerkit.transport import open_image\n"
        "from layerkit.union.unpack import unpack\n"
        f"layout = OCILayout({str(alpine_image_oci)!r})\n"
        "assert layout.tags() and layout.name.startswith('oci:')\n"
        f"image = open_image('oci:{alpine_image_oci}:3.20')\n"
        f"result = unpack(image, {str(tmp_path / 'rootfs')!r}, rootless=os.geteuid() != 0)\n"
        "assert result.files > 50, result\n"
        "assert 'pathlib' not in sys.modules, 'pathlib was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert OCILayout(alpine_image_oci).root == alpine_image_oci  # the Path attributes are still there
