"""The merged view: one test per overlay/OCI rule, on tiny layers built with tarfile."""

from __future__ import annotations

import pytest
from hostile import TarLayer, d, f, hl, opq, sym, tar, wh

from layerkit.errors import UnsafePathError
from layerkit.union import Fate, Union


def view(*layers: bytes) -> Union:
    return Union([TarLayer(b, f"L{i}") for i, b in enumerate(layers)])


def paths(u: Union) -> list[str]:
    return [n.path for n in u.walk() if n.path != "."]


BASE = tar(d("etc"), f("etc/passwd", "root"), f("etc/motd", "hi"), d("usr"), d("usr/lib"), f("usr/lib/a.so", "A"))


def test_single_layer_lists_sorted_depth_first() -> None:
    assert paths(view(BASE)) == ["etc", "etc/motd", "etc/passwd", "usr", "usr/lib", "usr/lib/a.so"]


def test_whiteout_hides_file_from_lower_layer() -> None:
    u = view(BASE, tar(wh("etc/motd")))
    assert not u.exists("/etc/motd")
    assert u.listdir("/etc") == ["passwd"]
    assert [(n.layer, n.fate) for n in u.history("etc/motd")] == [(0, Fate.WHITED_OUT)]


def test_whiteout_hides_directory_and_everything_below() -> None:
    u = view(BASE, tar(wh("usr")))
    assert paths(u) == ["etc", "etc/motd", "etc/passwd"]
    assert u.history("usr/lib/a.so")[0].fate is Fate.WHITED_OUT
    assert u.history("usr/lib/a.so")[0].by == 1


def test_whiteout_does_not_hide_sibling_in_same_layer() -> None:
    u = view(BASE, tar(f("etc/motd", "new"), wh("etc/motd")))  # tar order must not matter
    assert u.read_bytes("/etc/motd") == b"new"
    assert u.provider("/etc/motd") == 1


def test_whiteout_never_appears_in_view() -> None:
    u = view(BASE, tar(wh("etc/motd"), opq("usr")))
    assert not any(".wh." in p for p in paths(u))
    assert u.whiteouts(1) == ["etc/.wh.motd", "usr/.wh..wh..opq"]


def test_opaque_hides_lower_children_only() -> None:
    u = view(BASE, tar(d("usr"), opq("usr"), f("usr/new", "n")))
    assert u.listdir("/usr") == ["new"]
    assert u.history("usr/lib")[0].fate is Fate.OPAQUE_HIDDEN
    assert u.provider("/usr") == 1


def test_opaque_does_not_hide_siblings_in_same_layer_whatever_the_order() -> None:
    u = view(BASE, tar(d("usr"), f("usr/new", "n"), opq("usr")))
    assert u.listdir("/usr") == ["new"]


def test_rm_rf_then_mkdir_in_higher_layer() -> None:
    u = view(BASE, tar(wh("usr")), tar(d("usr"), f("usr/fresh", "f")))
    assert paths(u)[-2:] == ["usr", "usr/fresh"]


def test_file_over_directory_hides_whole_lower_subtree() -> None:
    u = view(BASE, tar(f("usr", "now a file")))
    assert u.stat("/usr").entry.is_file()
    assert not u.exists("/usr/lib/a.so")
    assert u.history("usr/lib/a.so")[0].fate is Fate.OVERWRITTEN


def test_file_over_directory_still_hides_when_itself_replaced_by_a_directory() -> None:
    u = view(BASE, tar(f("usr", "file")), tar(d("usr")))
    assert u.listdir("/usr") == []


def test_directory_over_file_replaces_it() -> None:
    u = view(tar(f("x", "file")), tar(d("x"), f("x/in", "i")))
    assert u.stat("/x").is_dir()
    assert u.listdir("/x") == ["in"]
    assert u.hidden("/x") == [0]


def test_directory_over_directory_merges_and_upper_metadata_wins() -> None:
    u = view(BASE, tar(d("etc", 0o700), f("etc/new", "n")))
    assert u.listdir("/etc") == ["motd", "new", "passwd"]
    assert u.stat("/etc").entry.mode == 0o700
    assert u.provider("/etc") == 1 and u.provider("/etc/passwd") == 0


def test_duplicate_entries_in_one_layer_last_wins() -> None:
    u = view(tar(f("dup", "first"), f("dup", "second")))
    assert u.read_bytes("/dup") == b"second"
    assert [n.fate for n in u.history("dup")] == [Fate.OVERWRITTEN, Fate.VISIBLE]


def test_overwrite_records_hidden_layers() -> None:
    u = view(BASE, tar(f("etc/passwd", "v2")), tar(f("etc/passwd", "v3")))
    assert u.provider("/etc/passwd") == 2
    assert u.hidden("/etc/passwd") == [0, 1]
    assert u.read_bytes("/etc/passwd") == b"v3"


def test_missing_parent_becomes_implicit_directory() -> None:
    u = view(tar(f("a/b/c", "x")))
    assert u.stat("/a/b").is_dir() and u.stat("/a/b").implicit
    assert u.stat("/a").entry.mode == 0o755


def test_lower_symlink_in_the_way_becomes_a_directory_never_followed() -> None:
    u = view(BASE, tar(sym("lnk", "/etc")), tar(f("lnk/passwd", "mine")))
    assert u.stat("/lnk").is_dir()
    assert u.read_bytes("/etc/passwd") == b"root"


def test_symlink_planted_in_same_layer_is_refused() -> None:
    with pytest.raises(UnsafePathError, match="lnk/x.*symlink created earlier in the same layer"):
        view(tar(sym("lnk", "/etc"), f("lnk/x", "x")))


def test_hard_link_within_layer() -> None:
    u = view(tar(f("a", "data"), hl("b", "a")))
    assert u.read_bytes("/b") == b"data"
    assert u.stat("/b").content is u.stat("/a")


def test_hard_link_to_lower_layer_survives_deletion_of_original() -> None:
    u = view(BASE, tar(hl("etc/pw2", "etc/passwd")), tar(wh("etc/passwd")))
    assert u.read_bytes("/etc/pw2") == b"root"
    assert u.stat("/etc/pw2").content.layer == 0


def test_hard_link_to_symlink_is_refused() -> None:
    with pytest.raises(UnsafePathError, match="only regular files"):
        view(tar(sym("s", "x"), hl("h", "s")))


def test_open_follows_symlinks_inside_the_root_only() -> None:
    u = view(BASE, tar(sym("up", "../../../../etc/passwd"), sym("abs", "/etc/passwd"), sym("loop", "loop")))
    assert u.read_bytes("/up") == b"root"  # '..' at the top stays at the image root
    assert u.read_bytes("/abs") == b"root"
    assert u.realpath("/abs") == "/etc/passwd"
    with pytest.raises(OSError, match="too many levels"):
        u.open("/loop")


def test_stat_does_not_follow_by_default() -> None:
    u = view(BASE, tar(sym("abs", "/etc/passwd")))
    assert u.stat("/abs").entry.is_symlink()
    assert u.stat("/abs", follow=True).path == "etc/passwd"


def test_listdir_through_symlinked_directory() -> None:
    u = view(BASE, tar(sym("lib", "usr/lib")))
    assert u.listdir("/lib") == ["a.so"]


def test_missing_path_raises_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        view(BASE).stat("/nope")


def test_layer_fates_count_wasted_bytes() -> None:
    u = view(BASE, tar(f("etc/passwd", "longer content")), tar(wh("usr")))
    fates = u.layer_fates()
    assert (fates[0].visible, fates[0].overwritten, fates[0].whited_out) == (2, 1, 3)
    assert fates[0].hidden_bytes == len("root") + len("A")
    assert fates[2].whiteouts == 1


def test_walk_is_iterative_for_deep_trees() -> None:
    names = ["/".join(["n"] * k) for k in range(1, 1100)]
    u = view(tar(*[d(n) for n in names]))
    assert sum(1 for _ in u.walk()) == 1100


def _successful_hostile_unions() -> list[Union]:
    from hostile import CASES

    out = []
    for case in CASES:
        if case.error is None:
            out.append(Union([TarLayer(b, f"L{i}") for i, b in enumerate(case.layers)]))
    return out


@pytest.mark.parametrize("layers", [
    (BASE,),
    (BASE, tar(wh("etc/motd"), opq("usr"))),
    (BASE, tar(wh("usr"))),
    (BASE, tar(f("usr", "a file where a directory was"))),
    (BASE, tar(d("etc/motd"), f("etc/motd/x", "a directory where a file was"))),
])
def test_len_counts_what_walk_shows(layers: tuple[bytes, ...]) -> None:
    u = view(*layers)
    assert len(u) == sum(1 for _ in u.walk())  # the root included: inspect's totals count len(u) - 1


def test_len_counts_what_walk_shows_on_every_accepted_hostile_layer() -> None:
    for u in _successful_hostile_unions():
        assert len(u) == sum(1 for _ in u.walk())
