"""Layer resource limits end to end: defaults that stop a decompression bomb early, flags and
LAYERKIT_MAX_* variables that raise them, and errors that say which flag to use."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gaps_helpers import gzip_blob, layer_tar, member, oci_layout, shm_dir, zeros_bomb

from layerkit.tarfs.limits import DEFAULT_LIMITS, default_limits

BOMB_SIZE = 2 << 30  # 2 GiB of zeros, ~2 MB of gzip


@pytest.fixture(scope="session")
def bomb_ref(tmp_path_factory: pytest.TempPathFactory, oci_validate: Any) -> str:
    work = tmp_path_factory.mktemp("bomb")
    blob = zeros_bomb(work, BOMB_SIZE)
    assert blob.path.stat().st_size < 4 << 20
    return oci_layout(work / "layout", [blob], "bomb", validate=oci_validate)


@pytest.fixture(scope="session")
def big_ref(tmp_path_factory: pytest.TempPathFactory, oci_validate: Any) -> str:
    """A legitimate layer of 40 MiB of incompressible data (moderately large, not a bomb)."""
    work = tmp_path_factory.mktemp("big")
    blob = gzip_blob(work, layer_tar(member("data/", kind=b"5", mode=0o755), member("data/blob", os.urandom(40 << 20))))
    return oci_layout(work / "layout", [blob], "big", validate=oci_validate)


@pytest.fixture
def shm() -> Iterator[Path]:
    with shm_dir("lk-limits-") as d:
        yield d


def _refused(result: Any, flag: str) -> str:
    assert result.exit_code == 1, result.output
    msg = result.stderr
    assert re.match(r"error: layer 0 \([0-9a-f]{12}\)", msg), msg  # names the layer (index and digest)
    assert flag in msg and "LAYERKIT_MAX_" in msg, msg  # and how to raise the limit
    assert "Traceback" not in msg
    return msg


def test_the_ratio_default_passes_real_layers_and_stops_a_bomb() -> None:
    # Alpine decompresses at 2.3:1 and a tar of zero-filled files reaches gzip's ~1030:1: only the
    # ratio past 1 GiB is limited, so no small layer trips it and no bomb reads more than ~1 GiB
    assert DEFAULT_LIMITS.ratio_cap(3_490_290) == 1 << 30
    assert DEFAULT_LIMITS.ratio_cap(50 << 20) == 100 * (50 << 20)
    assert DEFAULT_LIMITS.ratio_cap(None) is None


def test_unpack_stops_a_2gib_gzip_bomb_early(run_cli: Any, layerkit_home: Path, bomb_ref: str, shm: Path) -> None:
    start = time.monotonic()
    msg = _refused(run_cli("unpack", bomb_ref, str(shm / "root")), "--max-ratio")
    assert time.monotonic() - start < 10  # refused at the member's header, not after inflating 2 GiB
    assert "2147483648" in msg and "zeros" in msg  # the entry and its claimed size
    assert not any((shm / "root").iterdir())  # nothing was written


def test_inspect_stops_the_bomb_and_the_flag_lets_it_through(run_cli: Any, layerkit_home: Path, bomb_ref: str) -> None:
    _refused(run_cli("inspect", bomb_ref), "--max-ratio")
    _refused(run_cli("inspect", "--max-ratio", "2000", "--max-layer-size", "1GiB", bomb_ref), "--max-layer-size")
    result = run_cli("inspect", "--json", "--max-ratio", "2000", bomb_ref)
    assert result.exit_code == 0, result.output
    layer = json.loads(result.stdout)["layers"][0]
    assert layer["contentSize"] == BOMB_SIZE


@pytest.mark.parametrize("args", [
    ["ls", "{ref}"], ["cat", "{ref}", "/zeros"], ["export", "{ref}", "-o", "{tmp}/out.tar"], ["blame", "{ref}", "/zeros"],
    ["diff", "{ref}", "{ref}"],
], ids=lambda a: a[0])
def test_every_reader_command_refuses_the_bomb(run_cli: Any, layerkit_home: Path, bomb_ref: str, shm: Path,
                                               args: list[str]) -> None:
    _refused(run_cli(*[a.format(ref=bomb_ref, tmp=shm) for a in args]), "--max-ratio")
    assert not (shm / "out.tar").exists()


def test_copy_stops_the_bomb_when_recompressing(run_cli: Any, layerkit_home: Path, bomb_ref: str, shm: Path) -> None:
    # the copy reads the blob as a stream (no tar headers): it stops after ~1 GiB of output
    _refused(run_cli("copy", "--compression", "zstd", bomb_ref, f"oci:{shm}/copy:t"), "--max-ratio")


def test_the_environment_sets_limits_and_flags_override_it(run_cli: Any, layerkit_home: Path, bomb_ref: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERKIT_MAX_RATIO", "off")
    monkeypatch.setenv("LAYERKIT_MAX_LAYER_SIZE", "512MiB")
    assert default_limits().max_ratio is None
    _refused(run_cli("ls", bomb_ref), "--max-layer-size")
    result = run_cli("ls", "--max-layer-size", "3GiB", bomb_ref)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["zeros"]


def test_a_moderately_large_layer_passes_once_the_limit_is_raised(run_cli: Any, layerkit_home: Path, big_ref: str,
                                                                  shm: Path) -> None:
    msg = _refused(run_cli("unpack", "--max-layer-size", "16MiB", big_ref, str(shm / "small")), "--max-layer-size")
    assert "16777216" in msg
    result = run_cli("unpack", "--max-layer-size", "64MiB", big_ref, str(shm / "root"))
    assert result.exit_code == 0, result.output
    assert (shm / "root/data/blob").stat().st_size == 40 << 20


def test_entries_limit_names_its_flag(run_cli: Any, layerkit_home: Path, alpine_image_oci: Path) -> None:
    ref = f"oci:{alpine_image_oci}:3.20"
    msg = _refused(run_cli("inspect", "--max-entries", "50", ref), "--max-entries")
    assert "more than 50 entries" in msg
    assert run_cli("inspect", "--max-entries", "100000", ref).exit_code == 0


def test_bad_limit_values_are_usage_errors(run_cli: Any, bomb_ref: str) -> None:
    result = run_cli("ls", "--max-layer-size", "lots", bomb_ref)
    assert result.exit_code == 2
    assert "--max-layer-size" in result.stderr and "not a size" in result.stderr
