"""The unpack policy for privileged entries, explicit and reported: as root everything is kept (a
runnable rootfs); ``--rootless``/``--no-privileged-bits`` strip setuid/setgid and capabilities;
device nodes are skipped with a report under ``--rootless`` and refused for a user (or a root) who
cannot create them, with an error pointing at ``--rootless``."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gaps_helpers import gzip_blob, layer_tar, member, oci_layout, shm_dir

REPO = Path(__file__).resolve().parents[2]
CAP_NET_RAW = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)


@pytest.fixture(scope="session")
def layout(tmp_path_factory: pytest.TempPathFactory, oci_validate: Any) -> Path:
    work = tmp_path_factory.mktemp("policy")
    tar = layer_tar(
        member("bin/", kind=tarfile.DIRTYPE, mode=0o755),
        member("bin/su", b"su", mode=0o4755),
        member("bin/ping", b"ping", mode=0o755, xattrs={"security.capability": CAP_NET_RAW}),
        member("usr/bin/wall", b"wall", mode=0o2755, gid=5),
        member("var/mail/", kind=tarfile.DIRTYPE, mode=0o2775, gid=8),  # directory setgid: not a privilege
        member("dev/", kind=tarfile.DIRTYPE, mode=0o755),
        member("dev/null", kind=tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        member("dev/initctl", kind=tarfile.FIFOTYPE, mode=0o600),
    )
    oci_layout(work / "layout", [gzip_blob(work, tar)], "policy", validate=oci_validate)
    return work / "layout"


@pytest.fixture
def shm() -> Iterator[Path]:
    with shm_dir("lk-policy-") as d:
        yield d


def _unpack(run_cli: Any, layout: Path, target: Path, *flags: str) -> tuple[dict[str, Any], str]:
    human = run_cli("unpack", *flags, f"oci:{layout}:policy", str(target.with_name(target.name + "-h")))
    assert human.exit_code == 0, human.output
    result = run_cli("unpack", "--json", *flags, f"oci:{layout}:policy", str(target))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), human.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="keeping owners, setuid bits and devices needs root")
def test_root_keeps_everything_for_a_runnable_rootfs(run_cli: Any, layerkit_home: Path, layout: Path,
                                                     shm: Path) -> None:
    doc, stderr = _unpack(run_cli, layout, shm / "root")
    root = shm / "root"
    assert (doc["skipped"], doc["stripped"]) == ([], [])
    assert "skipped" not in stderr and "stripped" not in stderr
    assert _mode(root / "bin/su") == 0o4755 and _mode(root / "usr/bin/wall") == 0o2755
    assert os.getxattr(root / "bin/ping", "security.capability") == CAP_NET_RAW
    st = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)


def test_no_privileged_bits_strips_and_reports(run_cli: Any, layerkit_home: Path, layout: Path, shm: Path) -> None:
    doc, stderr = _unpack(run_cli, layout, shm / "root", "--rootless", "--no-privileged-bits")
    root = shm / "root"
    assert _mode(root / "bin/su") == 0o755 and _mode(root / "usr/bin/wall") == 0o755
    assert _mode(root / "var/mail") == 0o2775
    with pytest.raises(OSError):
        os.getxattr(root / "bin/ping", "security.capability")
    assert doc["stripped"] == [{"path": "/bin/su", "layer": 0, "bits": ["setuid"]},
                               {"path": "/usr/bin/wall", "layer": 0, "bits": ["setgid"]}]
    assert "stripped: setuid bit: /bin/su" in stderr and "stripped: setgid bit: /usr/bin/wall" in stderr
    assert "skipped: xattr security.capability: file capabilities are a privileged bit: /bin/ping" in stderr


def test_rootless_skips_devices_with_a_report(run_cli: Any, layerkit_home: Path, layout: Path, shm: Path) -> None:
    doc, stderr = _unpack(run_cli, layout, shm / "root", "--rootless")
    root = shm / "root"
    assert not os.path.lexists(root / "dev/null")
    assert stat.S_ISFIFO(os.lstat(root / "dev/initctl").st_mode)  # a fifo needs no privilege
    assert {"path": "/dev/null", "layer": 0, "reason": "char device 1:3 needs root"} in doc["skipped"]
    assert "skipped: char device 1:3 needs root: /dev/null" in stderr
    assert _mode(root / "bin/su") == 0o755  # --rootless strips privileged bits too
    assert [s["path"] for s in doc["stripped"]] == ["/bin/su", "/usr/bin/wall"]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping CAP_MKNOD from a root process needs root")
def test_root_without_mknod_is_refused_with_the_fix(layout: Path, shm: Path) -> None:
    if shutil.which("capsh") is None:
        pytest.skip("capsh (Debian libcap2-bin) is not installed: cannot drop CAP_MKNOD")
    cmd = f"{sys.executable} -m layerkit unpack oci:{layout}:policy {shm / 'root'}"
    r = subprocess.run(["capsh", "--drop=cap_mknod", "--", "-c", cmd], capture_output=True, text=True,
                       timeout=120, check=False, cwd=REPO, env={**os.environ, "LAYERKIT_HOME": str(shm / "home")})
    assert r.returncode == 1, r.stderr
    assert "creating a char device" in r.stderr and "--rootless" in r.stderr and "Traceback" not in r.stderr


NOBODY_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from layerkit.errors import LayerError
from layerkit.sources.oci import open_image
from layerkit.union.unpack import unpack

image = open_image(sys.argv[2], "policy")
try:
    unpack(image, sys.argv[3] + "/refused")
    refused = ""
except LayerError as exc:
    refused = str(exc)
result = unpack(image, sys.argv[3] + "/rootless", rootless=True, no_privileged_bits=True)  # the CLI's --rootless
print(json.dumps({"refused": refused, "skipped": [s.path for s in result.skipped if "device" in s.reason],
                  "stripped": [s.path for s in result.stripped]}))
"""


def test_a_user_is_refused_devices_unless_rootless(layout: Path) -> None:
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not os.access(python, os.X_OK):
        pytest.skip("needs root, setpriv (util-linux) and a system python3 to run as 'nobody'")
    with shm_dir("lk-policy-nobody-") as base:
        base.chmod(0o777)
        shutil.copytree(layout, base / "layout")
        (base / "run.py").write_text(NOBODY_SCRIPT)
        subprocess.run(["chown", "-R", "nobody", str(base)], check=True)
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--reset-env", python,
                            "-I", str(base / "run.py"), str(REPO), str(base / "layout"), str(base)],
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr[-2000:]
        doc = json.loads(r.stdout.strip().splitlines()[-1])
        assert "--rootless" in doc["refused"] and not (base / "refused").exists()
        assert doc["skipped"] == ["/dev/null"] and doc["stripped"] == ["/bin/su", "/usr/bin/wall"]
        assert (base / "rootless/bin/su").stat().st_uid == 65534
