"""OCI/Docker documents: parsing, rendering, conversion, platforms, chain IDs."""

from __future__ import annotations

import json

import pytest

from layerkit import mediatypes as mt
from layerkit.digest import sha256_bytes
from layerkit.errors import ManifestError
from layerkit.spec import (
    Descriptor,
    History,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    canonical_json,
    chain_ids,
    parse_manifest_or_index,
)

D1 = sha256_bytes(b"one")
D2 = sha256_bytes(b"two")


def make_manifest(docker: bool = False) -> Manifest:
    return Manifest(
        media_type=mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST,
        config=Descriptor(mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, D1, 10),
        layers=(Descriptor(mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP, D2, 20),),
    )


def test_manifest_round_trips_and_keeps_raw_bytes() -> None:
    raw = b'{"schemaVersion": 2, "mediaType": "%s", "config": {"mediaType": "%s", "digest": "%s", "size": 10}, "layers": []}' % (
        mt.OCI_MANIFEST.encode(), mt.OCI_CONFIG.encode(), D1.encode())
    m = Manifest.from_bytes(raw)
    assert m.to_bytes() == raw and m.digest() == sha256_bytes(raw)
    again = Manifest.from_bytes(canonical_json(m.to_json()))
    assert again == m


def test_written_documents_validate_against_the_oci_schemas(oci_validate) -> None:
    m = make_manifest()
    oci_validate("manifest", m.to_bytes())
    idx = Index(mt.OCI_INDEX, (m.descriptor().with_annotations(**{"org.opencontainers.image.ref.name": "v1"}),))
    oci_validate("index", idx.to_bytes())
    cfg = ImageConfig(config={"Env": ["A=b"], "Cmd": ["/bin/sh"]}, diff_ids=(D2,),
                      history=(History(created="2024-01-01T00:00:00Z", created_by="ADD x /"),),
                      created="2024-01-01T00:00:00Z")
    oci_validate("config", cfg.to_bytes())
    oci_validate("layout", {"imageLayoutVersion": "1.0.0"})


def test_oci_and_docker_manifests_convert_both_ways() -> None:
    oci = make_manifest()
    docker = oci.convert(docker=True)
    assert docker.media_type == mt.DOCKER_MANIFEST
    assert docker.config.media_type == mt.DOCKER_CONFIG
    assert docker.layers[0].media_type == mt.DOCKER_LAYER_GZIP
    assert docker.layers[0].digest == oci.layers[0].digest
    assert docker.convert(docker=False) == oci


def test_zstd_layers_keep_the_oci_type_in_docker_manifests() -> None:
    m = Manifest(mt.OCI_MANIFEST, Descriptor(mt.OCI_CONFIG, D1, 1), (Descriptor(mt.OCI_LAYER_ZSTD, D2, 2),))
    assert m.convert(docker=True).layers[0].media_type == mt.OCI_LAYER_ZSTD


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"not json", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"schemaVersion": 1}', "schemaVersion"),
        (b'{"schemaVersion": 2, "mediaType": "%s", "layers": []}' % mt.OCI_MANIFEST.encode(), "descriptor"),
        (b'{"schemaVersion": 2, "config": {"digest": "sha256:00", "size": 1}, "layers": []}', "digest"),
        (b'{"schemaVersion": 2, "config": {"digest": "%s", "size": -1}, "layers": []}' % D1.encode(), "size"),
    ],
)
def test_malformed_manifests_are_clear_errors(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_bytes(raw)


def test_index_selects_the_platform() -> None:
    amd = Descriptor(mt.OCI_MANIFEST, D1, 1, platform=Platform("linux", "amd64"))
    arm = Descriptor(mt.OCI_MANIFEST, D2, 1, platform=Platform("linux", "arm64", "v8"))
    idx = Index(mt.OCI_INDEX, (amd, arm))
    assert idx.select(Platform.parse("linux/arm64")) == arm
    assert idx.select(Platform.parse("linux/amd64")) == amd
    with pytest.raises(ManifestError, match="available: linux/amd64, linux/arm64/v8"):
        idx.select(Platform.parse("linux/s390x"))


def test_manifest_list_is_recognised_as_an_index() -> None:
    doc = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": []}
    assert isinstance(parse_manifest_or_index(json.dumps(doc).encode()), Index)


def test_config_keeps_unknown_fields_and_oci_names() -> None:
    raw = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"], "Custom": 1},
                      "rootfs": {"type": "layers", "diff_ids": [D1]}, "container": "abc"}).encode()
    cfg = ImageConfig.from_bytes(raw)
    assert cfg.config["Env"] == ["A=1"] and cfg.extra == {"container": "abc"}
    rendered = json.loads(cfg.evolve(author="me").to_bytes())
    assert rendered["container"] == "abc" and rendered["config"]["Custom"] == 1 and rendered["author"] == "me"


def test_chain_ids_follow_the_spec() -> None:
    assert chain_ids([D1]) == [D1]
    assert chain_ids([D1, D2])[1] == sha256_bytes(f"{D1} {D2}".encode())


@pytest.mark.parametrize("value", [Platform("linux", "arm64", "v8"), History(created_by="RUN x", empty_layer=True)],
                         ids=["Platform", "History"])
def test_small_records_are_immutable_values(value: Platform | History) -> None:
    field = value._fields[0]
    with pytest.raises(AttributeError):
        setattr(value, field, "changed")
    assert value == type(value)(**value._asdict()) and hash(value) == hash(type(value)(**value._asdict()))
    assert getattr(value._replace(**{field: "changed"}), field) == "changed"
    assert getattr(value, field) != "changed"


def test_documents_compare_by_value_without_their_raw_bytes() -> None:
    m = make_manifest()
    parsed = Manifest.from_bytes(m.to_bytes())
    assert parsed.raw is not None and m.raw is None
    assert parsed == m
    assert parsed != make_manifest(docker=True)
    assert m.config != m  # another class of document: not equal, no error
    assert repr(m.config) == f"Descriptor(media_type={m.config.media_type!r}, digest={m.config.digest!r}, size=10, " \
        "annotations={}, platform=None, urls=(), artifact_type='')"
    assert "raw=" not in repr(parsed)
    with pytest.raises(TypeError, match="unhashable"):
        hash(m)
    with pytest.raises(AttributeError):
        m.config.size = 11  # type: ignore[misc]
