"""The library facade: what `import layerkit` offers, each verb taking references as strings."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import layerkit


def test_copy_inspect_unpack_export_diff_through_the_facade(alpine_image_oci: Path, tmp_path: Path,
                                                            layerkit_home: Path) -> None:
    src = f"oci:{alpine_image_oci}:3.20"
    result = layerkit.copy(src, "demo:1")
    assert result.resolved_from == "oci"
    stored = layerkit.open_image("store:demo:1")
    assert stored.digest == result.descriptor.digest
    assert [layer.diff_id for layer in stored.layers] == [layer.diff_id for layer in layerkit.open_image(src).layers]

    doc = layerkit.inspect("demo:1").to_json()
    assert doc["layers"][0]["files"] > 400 and doc["config"]["Cmd"] == ["/bin/sh"]

    report = layerkit.unpack(src, tmp_path / "rootfs", rootless=True)
    assert report.files > 0 and (tmp_path / "rootfs" / "bin" / "busybox").is_file()

    out = io.BytesIO()
    layerkit.export("demo:1", out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert "etc/os-release" in tar.getnames()

    assert layerkit.diff(src, "demo:1").to_json()["identical"]


def test_public_names_are_pinned() -> None:
    expected = {
        "__version__", "Digest", "Image", "ImageSink", "Layer", "Compression", "Descriptor", "History",
        "ImageConfig", "Index", "Manifest", "Platform", "open_image", "open_index", "open_sink", "copy", "pull",
        "push", "build_image", "inspect", "diff", "unpack", "export", "open_store", "Union", "LayerWriter",
        "Entry", "EntryType", "Limits", *layerkit.errors.__all__,
    }
    assert set(layerkit.__all__) == expected
    for name in layerkit.__all__:
        assert getattr(layerkit, name) is not None
