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
        ("./bin/", "bin"),  # GNU tar's spelling, as in most base images
        ("./bin/busybox", "bin/busybox"),
        ("././a", "a"),
        (".//a", "a"),
        ("./a//", "a"),
        ("./.", "."),
        ("./a/.", "a"),
        ("ü/ß", "ü/ß"),
        ("bad\udcffname", "bad\udcffname"),
    ],
)
def test_clean_member_normalises(raw: str, clean: str) -> None:
    assert clean_member(raw) == clean


@pytest.mark.parametrize(
    "raw",
    ["..", "../x", "a/../../x", "/../etc", "./..", "./../x", "a\x00b", "", "x" * 256, "./" + "x" * 256,
     "a/" + "é" * 128, "a/" * 2100],
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


# -- resolve_in_root: one symlink walk for the context, the image being built and the union ----------

TREE = {  # path -> (is_dir, symlink target)
    "etc": (True, None),
    "etc/passwd": (False, None),
    "lib": (False, "usr/lib"),
    "usr": (True, None),
    "usr/lib": (True, None),
    "usr/lib/libc.so": (False, None),
    "abs": (False, "/etc"),
    "up": (False, "../../../etc"),
    "loop": (False, "loop"),
}


def _lookup(path: str):
    return TREE.get(path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("lib/libc.so", "usr/lib/libc.so"),
        ("/abs/passwd", "etc/passwd"),
        ("up/passwd", "etc/passwd"),  # '..' never climbs above the root
        ("usr/../etc/./passwd", "etc/passwd"),
        ("/", "."),
    ],
)
def test_resolve_in_root_follows_links_inside_the_root(path: str, expected: str) -> None:
    from layerkit.tarfs.paths import resolve_in_root

    found = resolve_in_root(path, _lookup)
    assert found.found and found.path == expected


def test_resolve_in_root_reports_where_it_stopped() -> None:
    from layerkit.tarfs.paths import resolve_in_root

    missing = resolve_in_root("lib/nope/x", _lookup)
    assert (missing.found, missing.path, missing.rest, missing.not_dir) == (False, "usr/lib", ("nope", "x"), "")
    blocked = resolve_in_root("etc/passwd/x", _lookup)
    assert (blocked.found, blocked.not_dir) == (False, "etc/passwd")
    assert resolve_in_root("lib", _lookup, follow_last=False).path == "lib"


def test_resolve_in_root_stops_loops() -> None:
    from layerkit.tarfs.paths import SymlinkLoopError, resolve_in_root

    with pytest.raises(SymlinkLoopError):
        resolve_in_root("loop/x", _lookup)
