"""The rootless executor as an unprivileged user: bwrap in a user namespace over a rootless unpack,
changes found by tree diff, owners mapped back to what the step saw."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from layerkit.build.executor import RunRequest
from layerkit.build.executors import rootless
from layerkit.mediatypes import Compression
from layerkit.sources.oci import open_image
from layerkit.spec import host_platform
from layerkit.store import open_store
from layerkit.tarfs.reader import iter_layer
from layerkit.tarfs.writer import LayerWriter

store = open_store(sys.argv[2])
image = open_image(sys.argv[3], "3.20")
executor = rootless.create_executor()
reason = executor.unavailable()
if reason:
    print(json.dumps({"unavailable": reason}))
    sys.exit(0)

def write_layer(fill):
    with store.blob_writer() as sink:
        writer = LayerWriter(sink, Compression.GZIP)
        fill(writer)
        result = writer.close()
        sink.commit(result.digest)
    return result

out = []
request = RunRequest(image=image, argv=("/bin/sh", "-c", sys.argv[4]), env=("PATH=/usr/bin:/bin",),
                     workdir="/work", uid=int(sys.argv[5]), gid=int(sys.argv[5]), platform=host_platform(),
                     store=store, network="none")
outcome = executor.run(request, write_layer=write_layer, output=out.append)
entries = {}
if outcome.layer:
    with store.open_blob(outcome.layer.digest) as f:
        for e, c in iter_layer(f):
            entries[e.path] = [e.type.value, e.mode, e.uid, e.gid, c.read().decode() if c else ""]
print(json.dumps({"exit": outcome.exit_code, "output": b"".join(out).decode(), "entries": entries}))
'''


def _unprivileged_python() -> str | None:
    """An interpreter an unprivileged user can run (the test venv may live in root's home)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def nobody_dir(alpine_image_oci: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root (the suite runs rootless as this user then)")
    python = _unprivileged_python()
    if shutil.which("setpriv") is None or python is None:
        pytest.skip("needs setpriv (util-linux) and a system python3 to run as 'nobody'")
    base = Path(tempfile.mkdtemp(prefix="lk-exec-nobody-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    base.chmod(0o777)
    shutil.copytree(alpine_image_oci, base / "alpine")
    (base / "run.py").write_text(SCRIPT)
    subprocess.run(["chown", "-R", "nobody", str(base)], check=True)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _run_as_nobody(base: Path, script: str, uid: int) -> dict:  # type: ignore[type-arg]
    python = _unprivileged_python()
    assert python is not None
    r = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--reset-env", python, "-I",
         str(base / "run.py"), str(REPO), str(base / "home"), str(base / "alpine"), script, str(uid)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc: dict = json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[type-arg]
    if "unavailable" in doc:
        pytest.skip(f"rootless cannot run as 'nobody' here: {doc['unavailable']}")
    return doc


def test_rootless_step_as_unprivileged_user(nobody_dir: Path) -> None:
    doc = _run_as_nobody(nobody_dir, "id -u; echo hi > /new; echo more >> /etc/profile; rm /etc/motd; "
                                     "mkdir -p /opt/x; ln -s /new /lnk", uid=0)
    assert doc["exit"] == 0 and doc["output"] == "0\n"
    e = doc["entries"]
    assert e["new"] == ["file", 0o644, 0, 0, "hi\n"]
    assert e["etc/profile"][2:4] == [0, 0] and e["etc/profile"][4].endswith("more\n")
    assert "etc/.wh.motd" in e and e["lnk"][0] == "symlink" and e["opt/x"][0] == "dir"
    assert e["work"][:4] == ["dir", 0o755, 0, 0]


def test_rootless_step_as_unprivileged_user_with_uid(nobody_dir: Path) -> None:
    doc = _run_as_nobody(nobody_dir, "id -u; touch /tmp/mine; exit 0", uid=405)
    assert doc["output"] == "405\n"
    assert doc["entries"]["tmp/mine"][2:4] == [405, 405]
