"""``kill -9`` at any moment of a pull, a copy or a build never damages the store.

Each command is first run to completion to learn how long it takes here; then it is started again
in fresh stores and killed at a spread of moments (fractions of that time) and at the first sight of
store activity (an ingest temp file of 1 MiB, the first blob). After each kill: ``layerkit check``
exits 0, ``layerkit images --json`` lists exactly the tags of ``index.json``, every tag reaches only
present blobs that hash to their names (checked without layerkit), no mount is left behind, and
running the same command again succeeds.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from safety_helpers import (
    KillPoint,
    assert_store_sound,
    blob_count,
    ingest_bytes,
    kill_at,
    run_layerkit,
    start_layerkit,
    store_created,
    verify_layout,
    wait_for,
)

FRACTIONS = (0.0, 0.12, 0.25, 0.37, 0.5, 0.62, 0.75, 0.87)


@dataclass(frozen=True)
class Command:
    args: tuple[str, ...]
    tag: str  # the store tag a complete run leaves


@pytest.fixture(scope="module")
def registry_alpine(registry: str, alpine_image_oci: Path) -> str:
    ref = f"{registry}/safety/crash-alpine:3.20"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{alpine_image_oci}:3.20",
                    f"docker://{ref}"], check=True, capture_output=True, timeout=120)
    return ref


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory, alpine_image_oci: Path) -> Path:
    ctx = tmp_path_factory.mktemp("crash-ctx")
    (ctx / "data").mkdir()
    for i in range(4):  # a few MB that do not compress, so the layer takes a while to write
        (ctx / "data" / f"blob{i}").write_bytes(os.urandom(1_500_000))
    (ctx / "Dockerfile").write_text(
        f"FROM oci:{alpine_image_oci}:3.20\n"
        "COPY data /data\n"
        "RUN ls -l /data > /listing && echo done > /marker\n"
    )
    return ctx


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line for line in f if f" {path}" in line]


def _timed_run(home: Path, args: tuple[str, ...]) -> tuple[float, float]:
    """Run to completion; seconds until the store exists, and from then until the end."""
    proc = start_layerkit(home, *args)
    start = time.monotonic()
    created = wait_for(proc, home, store_created, start + 120)
    _, stderr = proc.communicate(timeout=120)
    end = time.monotonic()
    assert proc.returncode == 0, stderr.decode()
    assert created is not None, "the store appeared only as the command ended"
    return created - start, end - created


def _kill_points(active: float) -> list[KillPoint]:
    """Kill moments spread over the time the command writes (after the store exists), plus the
    first sight of a big ingest file and of the first stored blob."""
    points = [KillPoint(f"{f:.0%} of the {active:.2f} s of writing", f * active, anchor=store_created)
              for f in FRACTIONS]
    points.append(KillPoint("ingest file of 1 MiB", 60, trigger=lambda h: ingest_bytes(h) >= 1 << 20))
    points.append(KillPoint("first blob stored", 60, trigger=lambda h: blob_count(h) >= 1))
    return points


def _crash_and_recover(tmp_path: Path, command: Command) -> None:
    # a complete run: the command works, and how long it writes decides when to kill the others
    reference = tmp_path / "reference"
    _, active = _timed_run(reference, command.args)
    assert command.tag in assert_store_sound(reference).tags

    killed = 0
    for n, point in enumerate(_kill_points(active)):
        home = tmp_path / f"kill-{n}"
        proc = start_layerkit(home, *command.args)
        was_killed = kill_at(proc, home, point)
        _, stderr = proc.communicate()
        assert was_killed or proc.returncode == 0, f"{point}: {stderr.decode()}"
        killed += was_killed
        assert not _mounts_under(home), f"{point}: mounts left behind"
        if home.exists():
            state = assert_store_sound(home)
            assert set(state.tags) <= {command.tag}, point
        again = run_layerkit(home, *command.args)
        assert again.returncode == 0, f"re-run after kill at {point}: {again.stderr}"
        assert command.tag in verify_layout(home / "oci").tags, point
    assert killed >= len(FRACTIONS) // 2, "most kill points came after the command had finished"


def test_kill_9_during_copy_from_an_oci_layout(tmp_path: Path, alpine_image_oci: Path) -> None:
    _crash_and_recover(tmp_path, Command(("copy", f"oci:{alpine_image_oci}:3.20", "safety/copied:1"),
                                          "safety/copied:1"))


def test_kill_9_during_pull_from_a_registry(tmp_path: Path, registry_alpine: str) -> None:
    _crash_and_recover(tmp_path, Command(("pull", registry_alpine), registry_alpine))


def test_kill_9_during_a_build_with_copy_and_run(tmp_path: Path, build_context: Path) -> None:
    _crash_and_recover(tmp_path, Command(("build", "-t", "safety/built:1", "--progress", "plain",
                                           str(build_context)), "safety/built:1"))
