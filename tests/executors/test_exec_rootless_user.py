"""The rootless executor's last fallback as an unprivileged user: bwrap in a user namespace over a
rootless unpack, changes found by tree diff, owners mapped back to what the step saw.
(fuse-overlayfs and native without root: test_exec_unprivileged.py.)"""

from __future__ import annotations

from pathlib import Path

from exec_helpers import run_as_nobody


def test_rootless_step_as_unprivileged_user(nobody_dir: Path) -> None:
    doc = run_as_nobody(nobody_dir, "id -u; echo hi > /new; echo more >> /etc/profile; rm /etc/motd; "
                                    "mkdir -p /opt/x; ln -s /new /lnk", 0, "rootless-copy")
    assert doc["exit"] == 0 and doc["output"] == "0\n"
    e = doc["entries"]
    assert e["new"][:4] == ["file", 0o644, 0, 0]
    assert e["etc/profile"][2:4] == [0, 0]
    assert "etc/.wh.motd" in e and e["lnk"][0] == "symlink" and e["opt/x"][0] == "dir"
    assert e["work"][:4] == ["dir", 0o755, 0, 0]


def test_rootless_step_as_unprivileged_user_with_uid(nobody_dir: Path) -> None:
    doc = run_as_nobody(nobody_dir, "id -u; touch /tmp/mine; exit 0", 405, "rootless-copy")
    assert doc["output"] == "405\n"
    assert doc["entries"]["tmp/mine"][2:4] == [405, 405]
