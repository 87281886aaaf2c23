"""atheris: manifest, index and config parsing on arbitrary bytes (seeded with real documents)."""

from __future__ import annotations

from _harness import fuzz, only_layerkit_errors

from layerkit.spec import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    parse_manifest_or_index,
)

MEDIA_TYPES = ("", "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.v2+json")


def _config(raw: bytes) -> None:
    config = ImageConfig.from_bytes(raw)
    config.to_bytes()
    config.platform  # noqa: B018 - what the CLI reads next


def _descriptor(raw: bytes) -> None:
    import json

    try:
        doc = json.loads(raw)
    except ValueError:
        return
    Descriptor.from_json(doc)


def test_one_input(data: bytes) -> None:
    for media_type in MEDIA_TYPES:
        only_layerkit_errors(lambda m=media_type: parse_manifest_or_index(data, m))
    only_layerkit_errors(lambda: Manifest.from_bytes(data))
    only_layerkit_errors(lambda: Index.from_bytes(data))
    only_layerkit_errors(lambda: _config(data))
    only_layerkit_errors(lambda: _descriptor(data))


if __name__ == "__main__":
    fuzz(test_one_input)
