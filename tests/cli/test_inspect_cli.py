"""``layerkit inspect`` and ``layerkit blame`` from the command line, on the Alpine OCI fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

INSPECT_KEYS = {"reference", "source", "digest", "mediaType", "platform", "created", "author", "config", "history",
                "layers", "totals", "waste", "privileged"}
LAYER_KEYS = {"index", "digest", "diffId", "mediaType", "size", "uncompressedSize", "contentSize", "survivingSize",
              "wastedSize", "files", "added", "modified", "removed", "createdBy", "history", "privileged"}


@pytest.fixture
def ref(alpine_image_oci: Path) -> str:
    return f"oci:{alpine_image_oci}:3.20"


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def test_json_document_keys(run_cli, ref: str, alpine_image_oci: Path) -> None:
    result = run_cli("inspect", ref, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == INSPECT_KEYS
    assert doc["reference"] == ref and doc["platform"] == {"os": "linux", "architecture": "amd64"}
    assert doc["config"] == {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                             "Cmd": ["/bin/sh"]}
    assert [(h["emptyLayer"], h["layer"]) for h in doc["history"]] == [(False, 0), (True, None)]
    (layer,) = doc["layers"]
    assert set(layer) == LAYER_KEYS
    index = json.loads((alpine_image_oci / "index.json").read_text())
    manifest = json.loads(_blob(alpine_image_oci, index["manifests"][0]["digest"]))
    assert doc["digest"] == index["manifests"][0]["digest"]
    assert layer["digest"] == manifest["layers"][0]["digest"] and layer["size"] == manifest["layers"][0]["size"]
    assert layer["createdBy"].startswith("/bin/sh -c #(nop) ADD file:alpine-minirootfs")
    assert layer["uncompressedSize"] > layer["contentSize"] > layer["size"]
    assert layer["added"]["count"] == layer["files"] and layer["wastedSize"] == 0
    assert doc["waste"] == {"reclaimableBytes": 0, "paths": [],
                            "dive": {"efficiency": 1.0, "wastedBytes": 0, "userWastedPercent": None}}


@pytest.mark.parametrize("what", ["manifest", "config"])
def test_raw_prints_the_stored_document_byte_for_byte(run_cli, ref: str, alpine_image_oci: Path, what: str) -> None:
    index = json.loads((alpine_image_oci / "index.json").read_text())
    manifest_bytes = _blob(alpine_image_oci, index["manifests"][0]["digest"])
    want = manifest_bytes if what == "manifest" else _blob(alpine_image_oci, json.loads(manifest_bytes)["config"]["digest"])
    result = run_cli("inspect", ref, "--raw", what)
    assert result.exit_code == 0
    assert result.stdout_bytes == want


def test_human_views(run_cli, ref: str) -> None:
    result = run_cli("inspect", ref)
    assert result.exit_code == 0
    assert "history" in result.stdout and "ADD file:alpine-minirootfs" in result.stdout
    layers = run_cli("inspect", ref, "--layers").stdout
    assert "517/0/0" in layers  # added/modified/removed
    files = run_cli("inspect", ref, "--files", "--layer", "0").stdout
    assert "+ busybox" in files and "+ bin" in files
    waste = run_cli("inspect", ref, "--waste").stdout
    assert "reclaimable: 0 B" in waste and "efficiency 100.0000%" in waste


def test_layer_out_of_range_is_a_usage_error(run_cli, ref: str) -> None:
    result = run_cli("inspect", ref, "--files", "--layer", "3")
    assert result.exit_code == 2 and "layers 0-0" in result.output


def test_ci_rules_from_flags_and_file(run_cli, ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ok = run_cli("inspect", ref, "--ci")
    assert ok.exit_code == 0 and "PASS min-efficiency" in ok.stdout
    (tmp_path / ".layerkit-ci.yaml").write_text("min-efficiency: 1.01\n")
    failing = run_cli("inspect", ref, "--ci", "--json")
    assert failing.exit_code == 1
    doc = json.loads(failing.stdout)
    assert doc["ci"]["passed"] is False and doc["ci"]["rules"][0]["rule"] == "min-efficiency"
    assert run_cli("inspect", ref, "--ci", "--min-efficiency", "0.5").exit_code == 0  # flags override the file


def test_html_report_is_written(run_cli, ref: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = run_cli("inspect", ref, "--html", str(out), "--json")
    assert result.exit_code == 0
    assert 'id="layerkit-data"' in out.read_text()


def test_blame(run_cli, ref: str) -> None:
    result = run_cli("blame", ref, "/bin/busybox", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["provider"] == 0 and doc["exists"] is True and doc["overrides"] == []
    assert doc["versions"][0]["createdBy"].startswith("/bin/sh -c #(nop) ADD")
    missing = run_cli("blame", ref, "/nope")
    assert missing.exit_code == 1 and "no layer has this path" in missing.stderr
