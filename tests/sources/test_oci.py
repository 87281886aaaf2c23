"""The ``oci:DIR[:TAG]`` transport: reading layouts (ours and hand-made) and writing them as a sink."""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from layerkit import mediatypes as mt
from layerkit.errors import BlobNotFoundError, DigestMismatchError, ImageNotFoundError
from layerkit.image import Image, ImageSink
from layerkit.sources.oci import OCILayoutSink, open_image
from layerkit.spec import Index, Manifest, Platform, canonical_json
from layerkit.store import OCILayout, open_store


def copy_into(image: Image, sink: OCILayoutSink) -> None:
    for desc in image.blobs():
        if not sink.has_blob(desc):
            with image.open_blob(desc) as f:
                sink.put_blob(desc, f)  # type: ignore[arg-type]
    sink.put_image(image)


def test_open_image_by_tag_reads_a_hand_made_layout_without_writing_to_it(alpine_image_oci: Path) -> None:
    image = open_image(alpine_image_oci, "3.20")
    index = json.loads((alpine_image_oci / "index.json").read_bytes())
    assert image.digest == index["manifests"][0]["digest"]
    assert image.reference == f"oci:{alpine_image_oci}:3.20"
    assert image.config.config["Cmd"] == ["/bin/sh"]
    assert len(image.layers) == 1
    assert not (alpine_image_oci / ".layerkit").exists()


def test_without_a_tag_the_only_image_is_used(alpine_image_oci: Path) -> None:
    assert open_image(alpine_image_oci).digest == open_image(alpine_image_oci, "3.20").digest


def test_an_unknown_tag_lists_the_tags_there(alpine_image_oci: Path) -> None:
    with pytest.raises(ImageNotFoundError, match=r"'3\.99' not found .*tags: 3\.20"):
        open_image(alpine_image_oci, "3.99")


def test_a_directory_that_is_not_a_layout_is_image_not_found(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFoundError, match="not an OCI image layout"):
        open_image(tmp_path)


def test_sink_copies_an_image_that_peers_and_schemas_accept(
    alpine_image_oci: Path, tmp_path: Path, oci_validate: Any
) -> None:
    source = open_image(alpine_image_oci, "3.20")
    target = tmp_path / "copy"
    with OCILayoutSink(target, "copied") as sink:
        assert isinstance(sink, ImageSink)
        copy_into(source, sink)
    copied = open_image(target, "copied")
    assert copied.digest == source.digest
    assert copied.raw_config == source.raw_config
    for name, kind in (("oci-layout", "layout"), ("index.json", "index")):
        oci_validate(kind, (target / name).read_bytes())
    oci_validate("manifest", copied.manifest.to_bytes())
    oci_validate("config", copied.raw_config)
    assert json.loads((target / "index.json").read_bytes())["manifests"][0]["platform"] == {
        "architecture": "amd64", "os": "linux"}
    skopeo = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{target}:copied"], check=True,
                                       capture_output=True, text=True).stdout)
    assert skopeo["Digest"] == source.digest and skopeo["Layers"] == [source.layers[0].digest]
    umoci = json.loads(subprocess.run(["umoci", "stat", "--image", f"{target}:copied", "--json"], check=True,
                                      capture_output=True, text=True).stdout)
    assert [h["created_by"] for h in umoci["history"]] == [h.created_by for h in source.config.history]


def test_sink_rejects_bytes_that_do_not_match_and_never_tags_an_incomplete_image(
    alpine_image_oci: Path, tmp_path: Path
) -> None:
    source = open_image(alpine_image_oci, "3.20")
    layer = source.layers[0].descriptor
    with OCILayoutSink(tmp_path / "t", "x") as sink:
        with pytest.raises(DigestMismatchError, match=layer.digest.hex):
            sink.put_blob(layer, io.BytesIO(b"\x1f\x8b not the layer"))
        assert not sink.has_blob(layer)
        with pytest.raises(BlobNotFoundError, match=layer.digest.hex):
            sink.put_image(source)  # the config gets written, the layer is missing: no tag
    assert OCILayout(tmp_path / "t").tags() == {}


def test_the_local_store_sink_is_the_same_class(alpine_image_oci: Path, layerkit_home: Path) -> None:
    source = open_image(alpine_image_oci, "3.20")
    store = open_store()
    with OCILayoutSink(store, "docker.io/library/alpine:3.20") as sink:
        assert sink.name == "alpine:3.20"
        copy_into(source, sink)
    assert set(store.tags()) == {"alpine:3.20"}
    assert store.image("alpine:3.20").reference == "alpine:3.20"
    assert store.root == layerkit_home / "oci"


def test_a_multi_platform_copy_tags_the_index_last(alpine_image_oci: Path, tmp_path: Path) -> None:
    amd = open_image(alpine_image_oci, "3.20")
    # a second "platform": same layer, config claiming arm64 (a new config blob and manifest)
    arm_config = amd.config.evolve(architecture="arm64", variant="v8").to_bytes()
    layout = OCILayout(tmp_path / "multi", create=True)
    cfg_digest, cfg_size = layout.put_json(arm_config)
    arm_manifest = Manifest(mt.OCI_MANIFEST, replace(amd.manifest.config, digest=cfg_digest, size=cfg_size),
                            amd.manifest.layers)
    arm = Image(Manifest.from_bytes(canonical_json(arm_manifest.to_json())), layout)
    with OCILayoutSink(layout, "multi") as sink:
        children = []
        for image in (amd, arm):
            for desc in image.blobs():
                if not sink.has_blob(desc):
                    with image.open_blob(desc) as f:
                        sink.put_blob(desc, f)  # type: ignore[arg-type]
            children.append(sink.put_child(image))
            assert layout.tags() == {}
        sink.put_index(Index(mt.OCI_INDEX, tuple(children)))
    assert layout.image("multi", "linux/arm64").config.architecture == "arm64"
    assert layout.image("multi", Platform("linux", "amd64")).digest == amd.digest
