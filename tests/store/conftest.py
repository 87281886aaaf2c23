"""Helpers for store tests: small real images written through the layout API (plain tarfile + gzip
for the layer, no tarfs), so each test states only what it varies."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from layerkit import mediatypes as mt
from layerkit.spec import Descriptor, Platform
from layerkit.store import OCILayout

MakeImage = Callable[..., Descriptor]


def layer_bytes(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip layer holding ``files`` and its diff ID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def write_image(layout: OCILayout, files: dict[str, bytes], tag: str = "", *, arch: str = "amd64",
                created: str = "2024-01-01T00:00:00Z", index_entry: bool = True) -> Descriptor:
    """Write a one-layer image (layer, config, manifest) and, with ``index_entry``, tag it."""
    blob, diff_id = layer_bytes(files)
    layer_digest, layer_size = layout.put_blob(io.BytesIO(blob))
    config = {"architecture": arch, "os": "linux", "created": created, "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "history": [{"created": created, "created_by": "test layer"}]}
    cfg_digest, cfg_size = layout.put_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size}],
    }
    data = json.dumps(manifest).encode()
    if index_entry:
        return layout.put_manifest(data, tag, platform=Platform("linux", arch))
    digest, size = layout.put_json(data)
    return Descriptor(mt.OCI_MANIFEST, digest, size, platform=Platform("linux", arch))


@pytest.fixture
def layout(tmp_path: Path) -> OCILayout:
    return OCILayout(tmp_path / "layout", create=True)


@pytest.fixture
def make_image() -> MakeImage:
    return write_image
