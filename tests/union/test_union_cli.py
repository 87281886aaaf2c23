"""``layerkit ls``, ``cat``, ``export``, ``unpack`` on the Alpine fixture image."""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def ref(alpine_image_oci: Path) -> str:
    return f"oci:{alpine_image_oci}:3.20"


@pytest.fixture
def shm() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="lk-cli-", dir="/dev/shm"))
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=True)


def test_ls_lists_a_directory_with_providing_layer(run_cli: Any, ref: str) -> None:
    result = run_cli("ls", ref, "/etc", "-l")
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if ln.endswith(" alpine-release"))
    assert line.startswith("-rw-r--r--") and " L0 " in line


def test_ls_json_carries_layer_digest(run_cli: Any, ref: str) -> None:
    doc = json.loads(run_cli("ls", ref, "/bin/sh", "--json").stdout)
    (entry,) = doc["entries"]
    assert entry["type"] == "symlink" and entry["linkname"] == "/bin/busybox"
    assert entry["layer"] == 0 and entry["layer_digest"].startswith("sha256:")


def test_cat_follows_symlinks_inside_the_image(run_cli: Any, ref: str) -> None:
    assert run_cli("cat", ref, "/etc/alpine-release").stdout == "3.20.3\n"
    assert run_cli("cat", ref, "/bin/sh").stdout_bytes[:4] == b"\x7fELF"


def test_ls_of_a_stored_image_reads_its_layers_once(run_cli: Any, ref: str, layerkit_home: Path,
                                                     request: pytest.FixtureRequest) -> None:
    assert run_cli("copy", ref, "alpine:3.20").exit_code == 0
    opened = request.getfixturevalue("opened_layers")  # from here on
    first, second = (run_cli("ls", "alpine:3.20", "/etc", "-l") for _ in range(2))
    assert first.exit_code == second.exit_code == 0 and first.stdout == second.stdout
    assert len(opened) == 1  # the second listing took the layer's members from the store's cache
    assert run_cli("cat", "alpine:3.20", "/etc/alpine-release").stdout == "3.20.3\n"
    assert len(opened) == 2  # contents always come from the layer itself


def test_cat_missing_file_is_an_error(run_cli: Any, ref: str) -> None:
    result = run_cli("cat", ref, "/nope")
    assert result.exit_code == 1
    assert "error: /nope: no such file" in result.stderr


def test_export_and_unpack_agree(run_cli: Any, ref: str, shm: Path) -> None:
    out = shm / "flat.tar"
    assert run_cli("export", ref, "-o", str(out)).exit_code == 0
    with tarfile.open(out) as t:
        names = {n.rstrip("/").removeprefix("./") for n in t.getnames()} - {".", ""}
    result = run_cli("unpack", ref, str(shm / "root"), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["files"] > 50 and doc["skipped"] == []
    on_disk = {str(p.relative_to(shm / "root")) for p in (shm / "root").rglob("*")}
    assert names == on_disk


def test_export_to_stdout(run_cli: Any, ref: str) -> None:
    result = run_cli("export", ref, "-o", "-")
    assert result.exit_code == 0
    assert result.stdout_bytes[257:262] == b"ustar"
