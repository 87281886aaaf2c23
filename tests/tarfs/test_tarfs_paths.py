"""Specification of member-name cleaning and lexical symlink resolution."""

from __future__ import annotations

import pytest

from layerkit.errors import UnsafePathError
from layerkit.tarfs.paths import basename, clean_member, join_link, parent


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("a", "a"),
        ("./a//b/", "a/b"),
        ("/", "."),
        ("./", "."),
        (".", "."),
        ("/etc/passwd", "etc/passwd"),
        ("a/./b/.", "a/b"),
        ("a/b/../c", "a/c"),
        ("a/..", "."),
        ("...", "..."),
        ("a..b/c", "a..b/c"),
        ("dir/", "dir"),
        ("ü/ß", "ü/ß"),
        ("bad\udcffname", "bad\udcffname"),
    ],
)
def test_clean_member_normalises(raw: str, clean: str) -> None:
    assert clean_member(raw) == clean


@pytest.mark.parametrize(
    "raw",
    ["..", "../x", "a/../../x", "/../etc", "./..", "a\x00b", "", "x" * 256, "a/" + "é" * 128, "a/" * 2100],
)
def test_clean_member_refuses_unsafe(raw: str) -> None:
    with pytest.raises(UnsafePathError):
        clean_member(raw)


def test_component_limit_is_in_bytes() -> None:
    assert clean_member("x" * 255) == "x" * 255
    assert clean_member("/".join(["y" * 200] * 20)) == "/".join(["y" * 200] * 20)


def test_unsafe_error_names_member() -> None:
    with pytest.raises(UnsafePathError) as err:
        clean_member("../../etc/shadow")
    assert err.value.member == "../../etc/shadow"
    assert "'..'" in str(err.value)


@pytest.mark.parametrize(
    "member, target, resolved",
    [
        ("a/link", "b", "a/b"),
        ("a/link", "../b", "b"),
        ("a/b/link", "/etc/passwd", "etc/passwd"),
        ("link", ".", "."),
        ("link", "/", "."),
        ("a/link", "./x//y/", "a/x/y"),
        ("link", "..", None),
        ("a/link", "../../etc", None),
        ("a/link", "/../etc", None),
        ("a/link", "", None),
    ],
)
def test_join_link(member: str, target: str, resolved: str | None) -> None:
    assert join_link(member, target) == resolved


def test_parent_and_basename() -> None:
    assert parent("a/b/c") == "a/b"
    assert parent("a") == "."
    assert basename("a/b/c") == "c"
