"""The build context: what COPY can see through ``.dockerignore``, symlinks resolved inside the
root, ownership reset to 0:0, and the stat cache that turns a no-change rebuild into a walk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerkit.build.context import BuildContext, StatCache
from layerkit.build.copy import expand_wildcards, fingerprint_sources
from layerkit.build.dockerignore import PatternMatcher
from layerkit.errors import BuildError


@pytest.fixture
def ctx_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print(1)\n")
    (root / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "notes.log").write_text("noise")
    (root / "vendor").mkdir()
    (root / "vendor" / "keep.txt").write_text("k")
    (root / "vendor" / "drop.txt").write_text("d")
    (root / "link-in").symlink_to("src/main.py")
    (root / "link-out").symlink_to("/etc/hostname")
    (root / "abs-in").symlink_to("/src")
    return root


def test_ignored_paths_do_not_exist(ctx_dir: Path) -> None:
    ctx = BuildContext(ctx_dir, PatternMatcher.from_patterns(["*.log", "vendor", "!vendor/keep.txt"]))
    assert ctx.lstat("notes.log") is None
    assert ctx.lstat("vendor/drop.txt") is None
    assert ctx.lstat("vendor/keep.txt") is not None
    assert ctx.listdir("vendor") == ["keep.txt"]
    assert "notes.log" not in ctx.listdir(".")
    assert "vendor" in ctx.listdir(".")  # excluded, but something below is re-included


def test_entries_are_owned_by_root_and_keep_mode_and_mtime(ctx_dir: Path) -> None:
    os.chmod(ctx_dir / "src" / "main.py", 0o751)
    os.utime(ctx_dir / "src" / "main.py", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    e = BuildContext(ctx_dir).lstat("src/main.py")
    assert e is not None
    assert (e.uid, e.gid, e.mode, e.mtime_ns) == (0, 0, 0o751, 1_600_000_000_123_456_789)


def test_symlinks_resolve_inside_the_context_root(ctx_dir: Path) -> None:
    ctx = BuildContext(ctx_dir)
    assert ctx.resolve("link-in") == "src/main.py"
    assert ctx.resolve("link-in", follow_last=False) == "link-in"
    assert ctx.resolve("abs-in/pkg/mod.py") == "src/pkg/mod.py"  # "/" is the context root
    assert ctx.resolve("link-out") is None  # /etc/hostname inside the context does not exist
    assert ctx.resolve("src/../../../src/main.py") == "src/main.py"


def test_wildcards_follow_go_rules(ctx_dir: Path) -> None:
    ctx = BuildContext(ctx_dir)
    assert expand_wildcards(ctx, "src/*.py") == ["src/main.py"]
    assert expand_wildcards(ctx, "src/*") == ["src/main.py", "src/pkg"]
    assert expand_wildcards(ctx, "*/pkg/*.py") == ["src/pkg/mod.py"]
    assert expand_wildcards(ctx, "nothing*") == []
    assert expand_wildcards(ctx, "src/main.py") is None  # a literal path is not a wildcard


def test_fingerprint_ignores_mtime_but_sees_content_and_mode(ctx_dir: Path) -> None:
    ctx = BuildContext(ctx_dir)
    first = fingerprint_sources(ctx, ["src"])
    os.utime(ctx_dir / "src" / "main.py", (1, 1))
    assert fingerprint_sources(BuildContext(ctx_dir), ["src"]) == first
    os.chmod(ctx_dir / "src" / "main.py", 0o700)
    second = fingerprint_sources(BuildContext(ctx_dir), ["src"])
    assert second != first
    (ctx_dir / "src" / "main.py").write_text("print(2)\n")
    assert fingerprint_sources(BuildContext(ctx_dir), ["src"]) != second
    with pytest.raises(BuildError, match="not found"):
        fingerprint_sources(ctx, ["missing.txt"])


def test_stat_cache_hashes_a_file_only_when_its_stat_changes(ctx_dir: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    ctx = BuildContext(ctx_dir, cache_dir=cache_dir)
    fingerprint_sources(ctx, ["."])
    ctx.close()
    assert ctx.stat_cache.misses == 5 and ctx.stat_cache.hits == 0

    again = BuildContext(ctx_dir, cache_dir=cache_dir)  # a new process: the cache file is read back
    fingerprint_sources(again, ["."])
    assert again.stat_cache.misses == 0 and again.stat_cache.hits == 5

    (ctx_dir / "src" / "main.py").write_text("changed\n")
    third = BuildContext(ctx_dir, cache_dir=cache_dir)
    fingerprint_sources(third, ["."])
    assert third.stat_cache.misses == 1


def test_stat_cache_survives_a_corrupt_file(tmp_path: Path, ctx_dir: Path) -> None:
    cache = StatCache(tmp_path, ctx_dir)
    assert cache._file is not None
    cache._file.parent.mkdir(parents=True)
    cache._file.write_text("{not json")
    assert StatCache(tmp_path, ctx_dir).hits == 0


def test_context_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="not a directory"):
        BuildContext(tmp_path / "missing")
