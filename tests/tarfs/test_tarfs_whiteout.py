"""Specification of OCI whiteout naming, including the hostile edge cases."""

from __future__ import annotations

import pytest

from layerkit.errors import InvalidWhiteoutError
from layerkit.tarfs import Entry, EntryType
from layerkit.tarfs.whiteout import (
    OPAQUE_WHITEOUT,
    is_opaque,
    is_whiteout,
    is_whiteout_meta,
    opaque_path,
    whiteout_path,
    whiteout_target,
)


def test_predicates() -> None:
    assert is_whiteout("a/.wh.b")
    assert is_whiteout(".wh.b")
    assert is_whiteout("a/.wh..wh..opq")
    assert not is_whiteout("a/b.wh.c")
    assert not is_whiteout(".wh/b")
    assert is_opaque("a/.wh..wh..opq") and is_opaque(OPAQUE_WHITEOUT)
    assert not is_opaque("a/.wh.opq")
    assert is_whiteout_meta("x/.wh..wh.plnk")
    assert not is_whiteout_meta("x/.wh.plnk")


@pytest.mark.parametrize(
    "path, target",
    [("a/.wh.b", "a/b"), (".wh.b", "b"), ("a/b/.wh.c.txt", "a/b/c.txt"), ("a/.wh....", "a/..."), (".wh. x", " x")],
)
def test_whiteout_target(path: str, target: str) -> None:
    assert whiteout_target(path) == target


@pytest.mark.parametrize(
    "path", [".wh.", "a/.wh.", ".wh..", "a/.wh..", ".wh...", "a/.wh...", "a/.wh..wh..opq", "a/.wh..wh.plnk", "a/b"]
)
def test_whiteout_target_refuses(path: str) -> None:
    with pytest.raises(InvalidWhiteoutError):
        whiteout_target(path)


def test_whiteout_path_round_trips() -> None:
    for p in ["a", "a/b", "a/b/c.d", "...", "a/ü"]:
        assert whiteout_target(whiteout_path(p)) == p


@pytest.mark.parametrize("path", [".", "", "a/.wh.b", ".wh.x", "a/.wh..wh..opq", ".."])
def test_whiteout_path_refuses_whiteout_of_whiteout_and_root(path: str) -> None:
    with pytest.raises(InvalidWhiteoutError):
        whiteout_path(path)


def test_opaque_path() -> None:
    assert opaque_path("a/b") == "a/b/.wh..wh..opq"
    assert opaque_path(".") == ".wh..wh..opq"
    with pytest.raises(InvalidWhiteoutError):
        opaque_path("a/.wh.b")


def test_entry_whiteout_helpers() -> None:
    e = Entry("etc/.wh.motd", EntryType.FILE, mode=0o600)
    assert e.is_whiteout and not e.is_opaque and e.whiteout_target == "etc/motd"
    o = Entry("etc/.wh..wh..opq", EntryType.FILE)
    assert o.is_whiteout and o.is_opaque
    d = Entry("etc", EntryType.DIR, mode=0o755)
    assert d.is_dir() and not d.is_whiteout and d.st_mode == 0o40755 and d.name == "etc"
