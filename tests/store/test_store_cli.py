"""The store commands as a user runs them: images, tag, rmi, gc, check (human and --json output)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from layerkit.cli.store import ago, human_size
from layerkit.spec import Descriptor
from layerkit.store import LocalStore, open_store

MakeImage = Callable[..., Descriptor]


@pytest.fixture
def store(layerkit_home: Path, make_image: MakeImage) -> LocalStore:
    """A store with ``demo:latest`` and ``localhost:5000/app:1``."""
    s = open_store()
    make_image(s, {"demo": b"demo"}, "demo")
    make_image(s, {"app": b"app" * 1000}, "localhost:5000/app:1", arch="arm64")
    return s


def make_old(store: LocalStore) -> None:
    old = time.time() - 3600
    for p in (store.root / "blobs" / "sha256").iterdir():
        os.utime(p, (old, old))


def test_images_table(store: LocalStore, run_cli: Any) -> None:
    result = run_cli("images")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DIGEST", "CREATED", "SIZE", "PLATFORM"]
    demo = store.resolve("demo")
    assert lines[1].split()[:2] == ["demo:latest", demo.digest.short]
    assert lines[1].split()[-1] == "linux/amd64"
    assert lines[2].split()[0] == "localhost:5000/app:1" and lines[2].split()[-1] == "linux/arm64"


def test_images_piped_output_is_never_cropped(store: LocalStore, run_cli: Any) -> None:
    long_name = "registry.example.com:5000/" + "/".join(["team"] * 12) + "/app:" + "v" * 60
    run_cli("tag", "demo", long_name)
    assert any(line.startswith(long_name + " ") for line in run_cli("images").stdout.splitlines())


def test_images_json(store: LocalStore, run_cli: Any) -> None:
    result = run_cli("images", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert [d["name"] for d in doc] == ["demo:latest", "localhost:5000/app:1"]
    image = store.image("demo")
    assert doc[0] == {
        "name": "demo:latest",
        "digest": image.digest,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "created": "2024-01-01T00:00:00Z",
        "size": store.resolve("demo").size + image.manifest.config.size + image.layers[0].size,
        "platform": "linux/amd64",
    }


def test_images_of_an_empty_store(layerkit_home: Path, run_cli: Any) -> None:
    assert json.loads(run_cli("images", "--json").stdout) == []


@pytest.mark.parametrize("spelling", ["demo", "demo:latest", "docker.io/library/demo:latest"])
def test_tag_accepts_every_spelling_of_a_name(store: LocalStore, run_cli: Any, spelling: str) -> None:
    result = run_cli("tag", spelling, "docker.io/library/copy", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "copy:latest"
    assert store.resolve("copy").digest == store.resolve("demo").digest


def test_tag_by_short_digest(store: LocalStore, run_cli: Any) -> None:
    digest = store.resolve("localhost:5000/app:1").digest
    result = run_cli("tag", digest.short, "app2:v1")
    assert result.exit_code == 0 and "tagged app2:v1" in result.stdout
    assert store.resolve("app2:v1").digest == digest


def test_tag_of_an_unknown_image_fails_with_the_tags_listed(store: LocalStore, run_cli: Any) -> None:
    result = run_cli("tag", "ghost", "x")
    assert result.exit_code == 1
    assert "error: image 'ghost' not found" in result.stderr and "demo:latest" in result.stderr


def test_rmi_untags_and_gc_reclaims(store: LocalStore, run_cli: Any) -> None:
    app_blobs = {d.digest for d in store.image("localhost:5000/app:1").blobs()}
    result = run_cli("rmi", "localhost:5000/app:1")
    assert result.exit_code == 0 and result.stdout == "untagged: localhost:5000/app:1\n"
    assert all(store.has_blob(d) for d in app_blobs)  # untagging deletes nothing by itself
    make_old(store)
    result = run_cli("gc", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert app_blobs < set(doc["removed"]) and doc["freedBytes"] > 0 and doc["dryRun"] is False
    assert not any(store.has_blob(d) for d in app_blobs)
    assert json.loads(run_cli("check", "--json").stdout)["ok"] is True


def test_rmi_of_unknown_refs_fails_but_removes_the_known_ones(store: LocalStore, run_cli: Any) -> None:
    result = run_cli("rmi", "ghost", "demo")
    assert result.exit_code == 1
    assert "error: image 'ghost' not found" in result.stderr
    assert "untagged: demo:latest" in result.stdout
    assert set(store.tags()) == {"localhost:5000/app:1"}


def test_rmi_by_digest_removes_every_name(store: LocalStore, run_cli: Any) -> None:
    digest = store.resolve("demo").digest
    run_cli("tag", "demo", "other")
    result = run_cli("rmi", str(digest), "--json")
    assert result.exit_code == 0
    assert sorted(u["name"] for u in json.loads(result.stdout)["untagged"]) == ["demo:latest", "other:latest"]


def test_gc_dry_run_and_grace(store: LocalStore, run_cli: Any) -> None:
    run_cli("rmi", "demo")
    fresh = run_cli("gc")
    assert fresh.exit_code == 0 and fresh.stdout.startswith("removed 0 blobs")
    assert "younger than 600 s" in fresh.stderr
    dry = run_cli("gc", "--dry-run", "--grace", "0")
    assert dry.stdout.startswith("would remove 3 blobs")
    assert len(store.gc(dry_run=True, grace=0).removed) == 3  # still there
    assert run_cli("gc", "--grace", "0").stdout.startswith("removed 3 blobs")


def test_check_lists_each_problem_and_exits_1(store: LocalStore, run_cli: Any) -> None:
    ok = run_cli("check")
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: 6 blobs")
    layer = store.image("demo").layers[0]
    path = store.blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = run_cli("check")
    assert bad.exit_code == 1
    assert f"blob {layer.digest} is corrupt" in bad.stdout
    assert f"image demo:latest: layer 0 {layer.digest} is corrupt" in bad.stdout
    assert "layerkit check --repair" in bad.stderr
    doc = json.loads(run_cli("check", "--json").stdout)
    assert doc["ok"] is False and len(doc["problems"]) == 2
    repaired = run_cli("check", "--repair", "--json")
    assert repaired.exit_code == 1 and json.loads(repaired.stdout)["repaired"] == [layer.digest]
    assert not store.has_blob(layer.digest)
    assert "is missing" in run_cli("check").stdout


def test_home_option_selects_the_store(tmp_path: Path, make_image: MakeImage, run_cli: Any,
                                       layerkit_home: Path) -> None:
    make_image(open_store(tmp_path / "elsewhere"), {"f": b"x"}, "elsewhere")
    result = run_cli("--home", str(tmp_path / "elsewhere"), "images", "--json")
    assert [d["name"] for d in json.loads(result.stdout)] == ["elsewhere:latest"]


def test_human_formats() -> None:
    assert [human_size(n) for n in (999, 1000, 3_491_267, 2_500_000_000)] == ["999 B", "1.0 kB", "3.5 MB", "2.5 GB"]
    now = datetime(2024, 1, 8, tzinfo=UTC)
    assert ago("2024-01-01T00:00:00Z", now) == "1 week ago"
    assert ago("2024-01-07T21:00:00.123456789Z", now) == "2 hours ago"
    assert ago("not a time", now) == "not a time"
