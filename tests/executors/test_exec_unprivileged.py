"""native and rootless (fuse-overlayfs) without root: run as 'nobody' in a user namespace, they give
the same layer as native run by root — same entries, modes, owners (read back from the image for
files that existed), contents, link targets and whiteouts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from exec_helpers import load_executor, run_as_nobody, run_step

from layerkit.build.executors.native import explain_probe
from layerkit.store import LocalStore
from layerkit.tarfs.whiteout import is_whiteout

AS_ROOT = (
    "set -e; echo new > /newfile; echo mod >> /etc/profile; rm /etc/motd; "
    "rm -rf /etc/apk/protected_paths.d && mkdir /etc/apk/protected_paths.d; rm -rf /etc/opt && touch /etc/opt; "
    "rm /etc/shells && mkdir /etc/shells && echo in > /etc/shells/f; ln -s /newfile /lnk; "
    "ln /etc/passwd /hl-to-lower; echo x > /h1 && ln /h1 /h2; cp /bin/busybox /suid && chmod 4755 /suid; "
    "mkfifo /fifo; mkdir -p /d/e; chmod 600 /etc/shadow; touch /tmp/t && rm /tmp/t; mkdir /var/cache/x"
)
AS_USER = "set -e; touch /tmp/mine; mkdir -p /tmp/d/e; echo x > /tmp/d/e/f; ln -s f /tmp/d/e/l; id -u"


def _summary(step: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for path, e in step.entries.items():
        content = hashlib.sha256(step.content[path]).hexdigest() if path in step.content else ""
        out[path] = ["whiteout"] if is_whiteout(path) else [e.type.value, e.mode, e.uid, e.gid, content, e.linkname]
    return out


# fuse-overlayfs itself, not the rootless executor's choice: where 'nobody' cannot open /dev/fuse it would
# fall back to the copy (a layer that hides the same paths, spelled differently), and this test skips
@pytest.mark.parametrize("name", ["native", "rootless-fuse"])
@pytest.mark.parametrize(("script", "uid"), [(AS_ROOT, 0), (AS_USER, 405)], ids=["uid0", "uid405"])
def test_unprivileged_layer_equals_root_native(name: str, script: str, uid: int, nobody_dir: Path,
                                               exec_store: LocalStore, alpine_image: Any) -> None:
    theirs = run_step(load_executor("native"), exec_store, alpine_image, script, workdir="/work", uid=uid, gid=uid,
                      env=("PATH=/usr/bin:/bin:/usr/sbin:/sbin",))
    ours = run_as_nobody(nobody_dir, script, uid, name)
    assert ours["exit"] == theirs.outcome.exit_code == 0, ours["output"]
    assert ours["output"] == theirs.output.decode()
    assert ours["entries"] == _summary(theirs)
    if uid == 0:  # the owners the image gave, though every file on disk is nobody's
        assert ours["entries"]["etc/shadow"][1:4] == [0o600, 0, 42]


def test_unavailable_says_which_kernel_feature_is_missing() -> None:
    assert "sysctl user.max_user_namespaces" in explain_probe("creating a user namespace: unshare: [Errno 1]", True)
    assert "Linux >= 5.11" in explain_probe("mounting overlayfs in a user namespace: [Errno 22]", True)
    assert "--executor=rootless" in explain_probe("deleting a file on overlayfs: no whiteout", True)
    assert "privileged container" in explain_probe("creating namespaces: [Errno 1]", False)
