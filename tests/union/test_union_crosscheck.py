"""Cross-check unpack, export and ``ls -R`` against the real tools on images the real builders made.

One Alpine-based Dockerfile with the cases that matter (deletions, overwrites, ``rm -rf d && mkdir
d``, file<->directory swaps, symlinks, hard links into a lower layer, setuid, chown) is built by
Docker 20.10 (classic builder and BuildKit) and by buildah. Each image's merged tree from
``layerkit unpack`` must equal ``umoci unpack``'s rootfs and ``docker export`` of a container (minus
the runtime files Docker adds): paths, types, modes, owners, sizes, content hashes, link targets,
hard-link groups. ``layerkit ls -R`` must list exactly that tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerkit.union.unpack import unpack

pytestmark = pytest.mark.docker

DOCKERFILE = """\
FROM scratch
ADD alpine.tar.gz /
RUN rm -rf /etc/motd /usr/share/apk /etc/apk/protected_paths.d \\
 && echo overwritten > /etc/issue && mkdir -p /opt/d/sub && echo one > /opt/d/sub/f && echo keep > /opt/keep
RUN rm -rf /opt/d && mkdir /opt/d && echo two > /opt/d/g \\
 && rm /etc/fstab && mkdir /etc/fstab && echo inside > /etc/fstab/x \\
 && rm -rf /etc/apk/keys && echo nowfile > /etc/apk/keys \\
 && ln -s /etc/issue /opt/issue-link && ln -s ../../nowhere /opt/dangling \\
 && ln /bin/busybox /opt/bb-hard && ln /opt/keep /opt/keep-hard \\
 && chown 1000:1000 /opt/d/g && chmod 4755 /opt/d/g && chmod 0700 /opt/d
RUN rm /opt/keep && echo final >> /etc/issue
"""

#: what ``docker export`` adds at runtime (mount points and files the engine creates)
RUNTIME = {".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf", "dev", "proc", "sys"}


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """path -> (type, mode, uid, gid, size, sha256 | link target, hard-link group)."""
    out: dict[str, tuple[Any, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = p.lstat()
            kind = stat.S_IFMT(st.st_mode)
            extra: Any = ""
            group = ""
            if stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(p.read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    group = inodes.setdefault(st.st_ino, rel)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, extra, group)
    # hard-link groups: name each by its smallest member so walk order does not matter
    groups: dict[str, list[str]] = {}
    for rel, v in out.items():
        if v[6]:
            groups.setdefault(v[6], []).append(rel)
    canon = {g: min(members) for g, members in groups.items()}
    return {rel: v[:6] + (canon.get(v[6], ""),) for rel, v in out.items()}


def without_runtime(t: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    return {p: v for p, v in t.items() if p not in RUNTIME and p.split("/")[0] not in ("dev", "proc", "sys")}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="lk-xcheck-", dir="/dev/shm"))
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=True)


@pytest.fixture(scope="module")
def context(workdir: Path, alpine_tgz: Path) -> Path:
    ctx = workdir / "context"
    ctx.mkdir()
    shutil.copyfile(alpine_tgz, ctx / "alpine.tar.gz")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def _run(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module", params=["classic", "buildkit"])
def docker_image(request: pytest.FixtureRequest, docker_cli: str, context: Path, workdir: Path) -> tuple[str, Path]:
    """(image tag, docker-archive path) built by Docker 20.10 with the given builder."""
    tag = f"layerkit-xcheck-{request.param}:latest"
    env = dict(os.environ, DOCKER_BUILDKIT="1" if request.param == "buildkit" else "0")
    _run(docker_cli, "build", "--network", "none", "-q", "-t", tag, str(context), env=env)
    archive = workdir / f"{request.param}.tar"
    _run(docker_cli, "save", "-o", str(archive), tag)
    request.addfinalizer(lambda: subprocess.run([docker_cli, "rmi", "-f", tag], check=False, capture_output=True))
    return tag, archive


def _umoci_tree(image_ref: str, workdir: Path, name: str) -> dict[str, tuple[Any, ...]]:
    oci = workdir / f"{name}-oci"
    if not oci.exists():
        _run("skopeo", "copy", "--quiet", image_ref, f"oci:{oci}:x")
    bundle = workdir / f"{name}-bundle"
    if not bundle.exists():
        _run("umoci", "unpack", "--image", f"{oci}:x", str(bundle))
    return tree(bundle / "rootfs")


def _layerkit_tree(ref: str, workdir: Path, name: str) -> tuple[dict[str, tuple[Any, ...]], Any]:
    from layerkit.transport import open_image

    image = open_image(ref)
    target = workdir / f"{name}-layerkit"
    unpack(image, target)
    return tree(target), image


def test_docker_image_unpacks_like_umoci_and_docker_export(
    docker_image: tuple[str, Path], docker_cli: str, workdir: Path, run_cli: Any
) -> None:
    tag, archive = docker_image
    name = archive.stem
    ours, image = _layerkit_tree(f"docker-archive:{archive}", workdir, name)
    assert len(image.layers) == 4
    umoci = _umoci_tree(f"docker-archive:{archive}", workdir, name)
    assert ours == umoci

    cid = _run(docker_cli, "create", "--network", "none", tag, "/bin/true").strip()
    try:
        exported = workdir / f"{name}-export.tar"
        _run(docker_cli, "export", "-o", str(exported), cid)
    finally:
        subprocess.run([docker_cli, "rm", "-f", cid], check=False, capture_output=True)
    flat = workdir / f"{name}-docker-export"
    flat.mkdir()
    with tarfile.open(exported) as t:
        t.extractall(flat, numeric_owner=True, filter="fully_trusted")
    assert without_runtime(ours) == without_runtime(tree(flat))

    # the cases the Dockerfile exercises, spelled out
    assert "etc/motd" not in ours and "usr/share/apk" not in ours and "opt/keep" not in ours
    assert ours["etc/fstab"][0] == stat.S_IFDIR and ours["etc/apk/keys"][0] == stat.S_IFREG
    assert sorted(p for p in ours if p.startswith("opt/d/")) == ["opt/d/g"]
    assert ours["opt/d/g"][1:4] == (0o4755, 1000, 1000)
    assert ours["opt/bb-hard"][6] == ours["bin/busybox"][6] != ""
    assert ours["opt/keep-hard"][5] == hashlib.sha256(b"keep\n").hexdigest()

    result = run_cli("ls", f"docker-archive:{archive}", "/", "-R", "--json")
    assert result.exit_code == 0, result.output
    listed = {e["path"].lstrip("/") for e in json.loads(result.stdout)["entries"]}
    assert listed == set(ours)


def test_docker_export_tar_matches_unpack(docker_image: tuple[str, Path], workdir: Path, run_cli: Any) -> None:
    _, archive = docker_image
    out = workdir / f"{archive.stem}-layerkit-export.tar"
    result = run_cli("export", f"docker-archive:{archive}", "-o", str(out))
    assert result.exit_code == 0, result.output
    flat = workdir / f"{archive.stem}-layerkit-export"
    flat.mkdir()
    with tarfile.open(out) as t:
        names = t.getnames()
        assert not any(".wh." in n for n in names)
        t.extractall(flat, numeric_owner=True, filter="fully_trusted")
    unpacked = workdir / f"{archive.stem}-layerkit"
    if not unpacked.exists():
        _layerkit_tree(f"docker-archive:{archive}", workdir, archive.stem)
    assert tree(flat) == tree(unpacked)


def test_buildah_image_unpacks_like_umoci(context: Path, workdir: Path) -> None:
    if shutil.which("buildah") is None:
        pytest.fail("buildah is not installed (apt-get install buildah; .ci/run does this)")
    storage = workdir / "buildah-storage"
    common = ["buildah", "--storage-driver", "vfs", "--root", str(storage), "--runroot", str(workdir / "buildah-run")]
    _run(*common, "bud", "--layers", "--isolation", "oci", "--network", "none", "-q", "-t", "lk-xcheck-buildah", str(context))
    oci = workdir / "buildah-oci"
    _run(*common, "push", "-q", "lk-xcheck-buildah", f"oci:{oci}:x")
    ours, image = _layerkit_tree(f"oci:{oci}:x", workdir, "buildah")
    assert len(image.layers) == 4
    assert ours == _umoci_tree(f"oci:{oci}:x", workdir, "buildah")
    assert ours["opt/d/g"][1:4] == (0o4755, 1000, 1000)
