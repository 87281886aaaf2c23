"""COPY/ADD planning rules (``layerkit.build.copy``) that the builder tests do not spell out:
chmod arithmetic, destinations through the image's symlinks, hard links, ``--parents`` pivots and
refusals."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from layerkit.build.context import BuildContext
from layerkit.build.copy import (
    CopyPlanner,
    CopyRequest,
    CopySourceError,
    apply_chmod,
    parse_chmod,
)
from layerkit.errors import BuildError
from layerkit.tarfs.entry import EntryType
from layerkit.transport import open_image
from layerkit.union import Union


@pytest.mark.parametrize(
    ("spec", "mode", "is_dir", "expected"),
    [
        ("755", 0o644, False, 0o755),
        ("0600", 0o4755, False, 0o600),
        ("u+x", 0o644, False, 0o744),
        ("go-rwx", 0o777, False, 0o700),
        ("a=r", 0o777, False, 0o444),
        ("a+X", 0o644, False, 0o644),  # X only for directories or already executable files
        ("a+X", 0o644, True, 0o755),
        ("a+X", 0o744, False, 0o755),
        ("u=rw,g=r,o=", 0o777, False, 0o640),
        ("g=u", 0o750, False, 0o770),
        ("u+s", 0o755, False, 0o4755),
        ("+t", 0o777, True, 0o1777),
    ],
)
def test_chmod(spec: str, mode: int, is_dir: bool, expected: int) -> None:
    assert apply_chmod(spec, mode, is_dir) == expected


@pytest.mark.parametrize("spec", ["999", "u+q", "x=r", ""])
def test_bad_chmod(spec: str) -> None:
    with pytest.raises(BuildError):
        parse_chmod(spec)


@pytest.fixture(scope="module")
def alpine_union(alpine_image_oci: Path) -> Any:
    return Union(open_image(f"oci:{alpine_image_oci}:3.20"))


def plan(tmp_path: Path, lower: Any, sources: tuple[str, ...], dest: str, **kw: Any) -> dict[str, Any]:
    planner = CopyPlanner(lower)
    planner.add(BuildContext(tmp_path), CopyRequest(sources, dest, **kw))
    return {e.path: e for e in planner.plan.entries()}


def test_destination_follows_the_images_symlinks(tmp_path: Path, alpine_union: Any) -> None:
    (tmp_path / "pidfile").write_text("1")
    assert alpine_union.stat("var/run").entry.type is EntryType.SYMLINK  # /var/run -> /run in Alpine
    entries = plan(tmp_path, alpine_union, ("pidfile",), "/var/run/")
    assert "run/pidfile" in entries and "var/run/pidfile" not in entries
    assert entries["run"].type is EntryType.DIR  # the existing directory, as the overlay diff shows it


def test_file_onto_existing_directory_goes_inside_and_onto_a_file_replaces_it(tmp_path: Path,
                                                                              alpine_union: Any) -> None:
    (tmp_path / "motd").write_text("new")
    assert "etc/motd" in plan(tmp_path, alpine_union, ("motd",), "/etc")  # /etc exists: lands inside
    replaced = plan(tmp_path, alpine_union, ("motd",), "/etc/hostname")
    assert replaced["etc/hostname"].size == 3


def test_directory_onto_a_file_is_refused(tmp_path: Path, alpine_union: Any) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(CopySourceError, match="not a directory"):
        plan(tmp_path, alpine_union, ("d",), "/etc/hostname/")


def test_hard_links_inside_one_copy_stay_hard_links(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("same inode")
    os.link(tmp_path / "a", tmp_path / "b")
    entries = plan(tmp_path, None, (".",), "/out/")
    assert entries["out/a"].type is EntryType.FILE
    assert entries["out/b"].type is EntryType.HARDLINK and entries["out/b"].linkname == "out/a"


def test_symlinks_inside_a_copied_directory_are_kept(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "target").write_text("t")
    (tmp_path / "d" / "ln").symlink_to("target")
    entries = plan(tmp_path, None, ("d",), "/x")
    assert entries["x/ln"].type is EntryType.SYMLINK and entries["x/ln"].linkname == "target"


def test_parents_with_a_pivot(tmp_path: Path) -> None:
    (tmp_path / "repo" / "pkg" / "a").mkdir(parents=True)
    (tmp_path / "repo" / "pkg" / "a" / "go.mod").write_text("m")
    (tmp_path / "repo" / "pkg" / "a" / "main.go").write_text("g")
    entries = plan(tmp_path, None, ("repo/./pkg/*/go.mod",), "/src/", parents=True)
    assert set(entries) == {"src", "src/pkg", "src/pkg/a", "src/pkg/a/go.mod"}


def test_chown_applies_to_created_parents_and_chmod_only_to_copied_entries(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    entries = plan(tmp_path, None, ("f",), "/a/b/", chown=(7, 8), chmod="0600")
    assert (entries["a"].uid, entries["a"].gid, entries["a"].mode) == (7, 8, 0o755)
    assert (entries["a/b/f"].uid, entries["a/b/f"].mode) == (7, 0o600)


def test_missing_literal_source_is_an_error_but_empty_wildcard_is_not(tmp_path: Path) -> None:
    with pytest.raises(CopySourceError, match="not found"):
        plan(tmp_path, None, ("nope.txt",), "/x")
    assert plan(tmp_path, None, ("nope*.txt",), "/x/") == {}
