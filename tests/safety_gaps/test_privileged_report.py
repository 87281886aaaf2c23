"""``layerkit inspect`` always reports privileged bits: setuid/setgid files, file capabilities
(decoded), device nodes and world-writable paths, per layer and for the merged image."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from gaps_helpers import Blob, gzip_blob, layer_tar, member, oci_layout, shm_dir

from layerkit.analyze.privileged import decode_capabilities


def _alpine_blob(alpine_image_oci: Path) -> Blob:
    index = json.loads((alpine_image_oci / "index.json").read_text())
    manifest = json.loads((alpine_image_oci / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    config = json.loads((alpine_image_oci / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes())
    return Blob(alpine_image_oci / "blobs/sha256" / manifest["layers"][0]["digest"][7:], config["rootfs"]["diff_ids"][0])


def cap_v2(permitted: int, inheritable: int = 0, effective: bool = True) -> bytes:
    return struct.pack("<5I", 0x02000000 | effective, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
                       permitted >> 32, inheritable >> 32)


CAP_NET_RAW = 1 << 13
CAP_NET_BIND_SERVICE = 1 << 10
CAP_V3_BIND = struct.pack("<6I", 0x03000001, CAP_NET_BIND_SERVICE, 0, 0, 0, 100000)

REG, DIR, LNK, SYM, CHR, BLK = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE,
                                tarfile.CHRTYPE, tarfile.BLKTYPE)


@pytest.fixture(scope="session")
def priv_ref(tmp_path_factory: pytest.TempPathFactory, alpine_image_oci: Path, oci_validate: Any) -> str:
    """Alpine + a layer with every kind of privileged entry + a layer deleting some of them."""
    work = tmp_path_factory.mktemp("priv")
    tools = layer_tar(
        member("bin/su", b"su", mode=0o4755),
        member("bin/su-again", kind=LNK, linkname="bin/su", mode=0o755),  # an inode's metadata is the file's
        member("usr/bin/wall", b"wall", mode=0o2755, gid=5),
        member("bin/ping", b"ping", mode=0o755, xattrs={"security.capability": cap_v2(CAP_NET_RAW)}),
        member("usr/sbin/httpd", b"httpd", mode=0o750, xattrs={"security.capability": CAP_V3_BIND}),
        member("usr/bin/broken", b"x", xattrs={"security.capability": b"\x02\x00"}),
        member("dev/", kind=DIR, mode=0o755),
        member("dev/null", kind=CHR, mode=0o666, dev=(1, 3)),
        member("dev/sda", kind=BLK, mode=0o660, gid=6, dev=(8, 0)),
        member("srv/drop/", kind=DIR, mode=0o777),
        member("srv/shared/", kind=DIR, mode=0o1777),  # sticky: the /tmp pattern, fine
        member("etc/motd", b"hi", mode=0o666),
        member("bin/link", kind=SYM, linkname="su", mode=0o777),  # symlink modes mean nothing
        member("usr/bin/newgrp", b"n", mode=0o4711),
    )
    cleanup = layer_tar(member("usr/bin/.wh.newgrp"), member("etc/motd", b"hi", mode=0o644))
    blobs = [_alpine_blob(alpine_image_oci), gzip_blob(work, tools), gzip_blob(work, cleanup)]
    return oci_layout(work / "layout", blobs, "priv", validate=oci_validate)


@pytest.fixture(scope="session")
def doc(priv_ref: str) -> dict[str, Any]:
    from click.testing import CliRunner

    from layerkit.cli import cli

    result = CliRunner().invoke(cli, ["inspect", "--json", priv_ref], obj={}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _paths(entries: list[dict[str, Any]]) -> list[str]:
    return [e["path"] for e in entries]


def test_merged_image_lists_only_what_it_shows(doc: dict[str, Any]) -> None:
    p = doc["privileged"]
    assert set(p) == {"setuid", "setgid", "capabilities", "devices", "worldWritable"}
    assert _paths(p["setuid"]) == ["/bin/su", "/bin/su-again"]  # /usr/bin/newgrp was deleted by layer 2
    assert p["setuid"][0] == {"path": "/bin/su", "mode": "4755", "uid": 0, "gid": 0, "layer": 1}
    assert p["setgid"] == [{"path": "/usr/bin/wall", "mode": "2755", "uid": 0, "gid": 5, "layer": 1}]
    assert _paths(p["devices"]) == ["/dev/null", "/dev/sda"]
    assert p["devices"][1]["type"] == "block" and p["devices"][1]["device"] == [8, 0]
    assert [(e["path"], e["type"]) for e in p["worldWritable"]] == [("/dev/null", "char"), ("/srv/drop", "dir")]


def test_capabilities_are_decoded(doc: dict[str, Any]) -> None:
    caps = {e["path"]: e for e in doc["privileged"]["capabilities"]}
    assert set(caps) == {"/bin/ping", "/usr/sbin/httpd", "/usr/bin/broken"}
    ping = caps["/bin/ping"]
    assert (ping["caps"], ping["effective"], ping["text"], ping["version"]) == (["cap_net_raw"], True, "cap_net_raw=ep", 2)
    httpd = caps["/usr/sbin/httpd"]
    assert (httpd["caps"], httpd["version"], httpd["rootid"]) == (["cap_net_bind_service"], 3, 100000)
    assert caps["/usr/bin/broken"]["caps"] == [] and "too short" in caps["/usr/bin/broken"]["error"]


def test_each_layer_lists_what_it_ships(doc: dict[str, Any]) -> None:
    base, tools, cleanup = (layer["privileged"] for layer in doc["layers"])
    assert all(not v for v in base.values())  # Alpine's minirootfs: /tmp is 1777, nothing else
    assert _paths(tools["setuid"]) == ["/bin/su", "/bin/su-again", "/usr/bin/newgrp"]
    assert "layer" not in tools["setuid"][0]
    assert _paths(tools["worldWritable"]) == ["/dev/null", "/etc/motd", "/srv/drop"]
    assert all(not v for v in cleanup.values())  # a whiteout and a chmod 644 add nothing


def test_human_view_always_shows_them(run_cli: Any, priv_ref: str, alpine_image_oci: Path) -> None:
    out = run_cli("inspect", priv_ref).stdout
    assert "privileged" in out
    for line in ("setuid /bin/su  4755 0:0  layer 1", "caps   /bin/ping  0755 0:0  layer 1  cap_net_raw=ep",
                 "block  /dev/sda  0660 0:6  layer 1  8:0", "o+w    /srv/drop  0777 0:0  layer 1  dir"):
        assert line in out, out
    assert "privileged: none" in run_cli("inspect", f"oci:{alpine_image_oci}:3.20").stdout
    layers = run_cli("inspect", "--layers", priv_ref).stdout
    assert "priv" in layers


@pytest.mark.parametrize("spec, permitted, inheritable, effective", [
    ("cap_net_raw,cap_net_bind_service=ep", ["cap_net_bind_service", "cap_net_raw"], [], True),
    ("cap_sys_admin+i cap_net_raw+p", ["cap_net_raw"], ["cap_sys_admin"], False),
    ("cap_checkpoint_restore,cap_chown+p", ["cap_chown", "cap_checkpoint_restore"], [], False),
])
def test_decoding_matches_what_setcap_writes(spec: str, permitted: list[str], inheritable: list[str],
                                            effective: bool) -> None:
    if shutil.which("setcap") is None or shutil.which("getcap") is None:
        pytest.skip("setcap/getcap (Debian libcap2-bin) are not installed: nothing to cross-check against")
    with shm_dir("lk-caps-") as d:
        target = d / "f"
        target.write_bytes(b"")
        subprocess.run(["setcap", spec, str(target)], check=True)
        caps = decode_capabilities(os.getxattr(target, "security.capability"))
        getcap = subprocess.run(["getcap", str(target)], check=True, capture_output=True, text=True).stdout
    assert (list(caps.permitted), list(caps.inheritable), caps.effective) == (permitted, inheritable, effective)
    if effective:  # one "=ep" group: libcap prints the same text
        assert getcap.split()[1] == caps.text()


def test_v1_and_malformed_values() -> None:
    v1 = decode_capabilities(struct.pack("<3I", 0x01000000, 1 << 0, 0))
    assert (v1.version, v1.permitted, v1.effective) == (1, ("cap_chown",), False)
    for bad in (b"", b"\x00\x00\x00\x09" + bytes(16), cap_v2(1) + b"\0"):
        with pytest.raises(ValueError):
            decode_capabilities(bad)
