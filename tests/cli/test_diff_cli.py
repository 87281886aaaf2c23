"""``layerkit diff`` from the command line: images in OCI layouts, and raw layer files."""

from __future__ import annotations

import json
from pathlib import Path


def test_alpine_releases_as_images_packages_only(run_cli, alpine_image_oci: Path, alpine_old_image_oci: Path) -> None:
    result = run_cli("diff", f"oci:{alpine_old_image_oci}:3.19", f"oci:{alpine_image_oci}:3.20", "--type", "packages",
                     "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"a", "b", "identical", "sharedLayers", "packages"}
    changed = {p["name"]: (p["previousVersion"], p["version"]) for p in doc["packages"]["apk"]["changed"]}
    assert changed["busybox"][0].startswith("1.36.1") and changed["alpine-baselayout"][1] != changed["alpine-baselayout"][0]


def test_the_fixture_tarballs_diff_as_layer_files(run_cli, alpine_tgz: Path, alpine_old_tgz: Path) -> None:
    result = run_cli("diff", str(alpine_old_tgz), str(alpine_tgz), "--type", "file", "--type", "size", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    changed = {c["path"]: c["changes"] for c in doc["files"]["changed"]}
    assert "content" in changed["/etc/alpine-release"]
    assert "config" not in doc
    root = next(s for s in doc["sizes"] if s["path"] == "/")
    assert root["delta"] == root["after"] - root["before"] != 0
    deltas = [abs(s["delta"]) for s in doc["sizes"]]
    assert deltas == sorted(deltas, reverse=True)
    human = run_cli("diff", str(alpine_old_tgz), str(alpine_tgz)).stdout
    assert "~ /etc/alpine-release" in human and "apk" in human


def test_a_layer_against_itself_is_identical(run_cli, alpine_tgz: Path) -> None:
    result = run_cli("diff", str(alpine_tgz), str(alpine_tgz))
    assert result.exit_code == 0
    assert "no differences" in result.stdout
