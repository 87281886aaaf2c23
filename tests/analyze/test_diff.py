"""``diff`` of real images and layer files: exactly the differences, nothing else."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from layerkit.analyze.diff import diff_sides, image_side, is_layer_file, layer_file_side
from layerkit.analyze.packages import (
    diff_packages,
    parse_apk_installed,
    parse_dpkg_status,
    parse_python_metadata,
)
from layerkit.transport import open_image

BASE = """\
FROM alpine-fixture:3.20
RUN mkdir -p /opt/app && echo one > /opt/app/a && head -c 4000 /dev/zero > /opt/app/same
"""
# the second RUN differs: another version file and a simulated apk upgrade of one package
STEP_1 = "RUN echo 1.0 > /opt/app/version\n"
STEP_2 = ("RUN echo 2.0 > /opt/app/version && awk '/^P:/{p=$0} p==\"P:musl\" && /^V:/{$0=\"V:1.2.5-r9\"} {print}' "
          "/lib/apk/db/installed > /tmp/db && cat /tmp/db > /lib/apk/db/installed && rm /tmp/db\n")


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, docker_cli: str, alpine_image_oci: Path) -> dict[str, str]:
    subprocess.run(["skopeo", "copy", "-q", f"oci:{alpine_image_oci}:3.20", "docker-daemon:alpine-fixture:3.20"],
                   check=True)
    work = tmp_path_factory.mktemp("diff")
    refs = {}
    for name, step in (("one", STEP_1), ("two", STEP_2)):
        ctx = work / name
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(BASE + step)
        subprocess.run([docker_cli, "build", "--network", "none", "-q", "-t", f"lk-analyze-diff:{name}", str(ctx)],
                       check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})
        subprocess.run([docker_cli, "save", "-o", str(work / f"{name}.tar"), f"lk-analyze-diff:{name}"], check=True)
        refs[name] = f"docker-archive:{work / name}.tar"
        refs[f"{name}-daemon"] = f"docker-daemon:lk-analyze-diff:{name}"
    return refs


def _diff(a: str, b: str) -> dict:
    return diff_sides(image_side(open_image(a), a), image_side(open_image(b), b)).to_json()


@pytest.mark.docker
def test_one_changed_run_step_reports_exactly_its_files_and_the_apk_change(builds: dict[str, str]) -> None:
    doc = _diff(builds["one"], builds["two"])
    assert doc["identical"] is False
    assert doc["files"]["added"] == [] and doc["files"]["removed"] == []
    assert [(c["path"], c["changes"]) for c in doc["files"]["changed"]] == [
        ("/lib/apk/db/installed", ["content"]),
        ("/opt/app/version", ["content"]),
    ]
    assert doc["packages"] == {"apk": {"added": [], "removed": [],
                                       "changed": [{"name": "musl", "version": "1.2.5-r9",
                                                    "previousVersion": "1.2.5-r0"}]}}
    assert doc["sizes"] == [] and doc["config"] == {}
    assert doc["history"]["removed"] == ["RUN /bin/sh -c " + STEP_1[4:].strip() + " # buildkit"]
    assert len(doc["history"]["added"]) == 1
    assert [(s["a"], s["b"]) for s in doc["sharedLayers"]] == [(0, 0), (1, 1)]


@pytest.mark.docker
def test_the_same_image_from_two_transports_has_no_difference(builds: dict[str, str]) -> None:
    doc = _diff(builds["one"], builds["one-daemon"])
    assert doc["identical"] is True
    assert doc["files"] == {"added": [], "removed": [], "changed": []}
    assert len(doc["sharedLayers"]) == 3


@pytest.mark.docker
def test_the_same_layers_under_another_manifest_have_no_difference(builds: dict[str, str], tmp_path: Path) -> None:
    subprocess.run(["skopeo", "copy", "-q", builds["one"], f"oci:{tmp_path}:one"], check=True)
    doc = _diff(builds["one"], f"oci:{tmp_path}:one")
    assert doc["a"]["digest"] != doc["b"]["digest"]
    assert doc["identical"] is True, doc


def test_alpine_releases_differ_in_packages_config_free(alpine_image_oci: Path, alpine_old_image_oci: Path) -> None:
    doc = _diff(f"oci:{alpine_old_image_oci}:3.19", f"oci:{alpine_image_oci}:3.20")
    apk = doc["packages"]["apk"]
    musl = next(p for p in apk["changed"] if p["name"] == "musl")
    assert musl["previousVersion"].startswith("1.2.4") and musl["version"].startswith("1.2.5")
    added = {f["path"] for f in doc["files"]["added"]}
    assert {"/etc/os-release"} <= {f["path"] for f in doc["files"]["changed"]}
    assert not added & {f["path"] for f in doc["files"]["removed"]}
    assert doc["sharedLayers"] == [] and doc["config"] == {}


def _write_layer(path: Path, files: dict[str, bytes], compress: bool = False) -> Path:
    import io

    opener = gzip.open if compress else open
    with opener(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[operator]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1000 + len(name)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_two_layer_files_compare_by_content_not_mtime(tmp_path: Path) -> None:
    a = _write_layer(tmp_path / "a.tar", {"etc/x": b"same", "etc/y": b"old!", "etc/w": b"longer", "gone": b"1",
                                          "etc/.wh.z": b""})
    b = _write_layer(tmp_path / "b.tar.gz", {"etc/x": b"same", "etc/y": b"new!", "etc/w": b"", "new": b"22"},
                     compress=True)
    assert is_layer_file(str(a)) and is_layer_file(str(b))
    doc = diff_sides(layer_file_side(str(a)), layer_file_side(str(b))).to_json()
    assert [f["path"] for f in doc["files"]["added"]] == ["/new"]
    assert [(f["path"], f["type"]) for f in doc["files"]["removed"]] == [("/etc/.wh.z", "whiteout"), ("/gone", "file")]
    assert [(c["path"], c["changes"]) for c in doc["files"]["changed"]] == [
        ("/etc/w", ["size", "content"]), ("/etc/y", ["content"])]
    assert "config" in doc and doc["config"] == {}


def test_an_image_archive_is_not_a_layer_file(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        tar.addfile(info)
    assert not is_layer_file(str(archive))
    assert not is_layer_file(str(tmp_path / "missing.tar"))


# --- package database parsers ------------------------------------------------------------------


def test_apk_dpkg_and_python_parsers() -> None:
    apk = b"C:Q1x\nP:musl\nV:1.2.5-r0\nA:x86_64\n\nP:busybox\nV:1.36.1-r29\n"
    assert parse_apk_installed(apk) == {"musl": "1.2.5-r0", "busybox": "1.36.1-r29"}
    dpkg = (b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nDescription: x\n more\n\n"
            b"Package: old\nStatus: deinstall ok config-files\nVersion: 1\n")
    assert parse_dpkg_status(dpkg) == {"libc6": "2.36-9"}
    meta = b"Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0\n\nName: not-a-header\n"
    assert parse_python_metadata(meta) == {"foo-bar": "1.0"}
    assert diff_packages({"a": "1", "b": "1"}, {"b": "2", "c": "3"}) == {
        "added": [{"name": "c", "version": "3"}],
        "removed": [{"name": "a", "version": "1"}],
        "changed": [{"name": "b", "version": "2", "previousVersion": "1"}],
    }


def test_python_packages_in_site_packages_are_diffed(tmp_path: Path) -> None:
    site = "usr/lib/python3.11/site-packages"
    a = _write_layer(tmp_path / "a.tar", {f"{site}/foo-1.0.dist-info/METADATA": b"Name: foo\nVersion: 1.0\n"})
    b = _write_layer(tmp_path / "b.tar", {f"{site}/foo-1.1.dist-info/METADATA": b"Name: foo\nVersion: 1.1\n",
                                          f"{site}/bar-2.dist-info/METADATA": b"Name: bar\nVersion: 2\n"})
    doc = diff_sides(layer_file_side(str(a)), layer_file_side(str(b)), ["packages"]).to_json()
    assert doc["packages"] == {"python": {"added": [{"name": "bar", "version": "2"}], "removed": [],
                                          "changed": [{"name": "foo", "version": "1.1", "previousVersion": "1.0"}]}}
    assert "files" not in doc
    shutil.rmtree(tmp_path, ignore_errors=True)
    json.dumps(doc)
