"""Helpers for the safety-gap tests: hand-made layer tars and OCI layouts written with plain Python
(tarfile, gzip, hashlib — no layerkit code), so the thing under test never checks its own output."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Blob:
    """A layer blob on disk and the sha256 of its uncompressed tar."""

    path: Path
    diff_id: str


def member(name: str, data: bytes = b"", *, mode: int = 0o644, kind: bytes = tarfile.REGTYPE, uid: int = 0,
           gid: int = 0, linkname: str = "", dev: tuple[int, int] = (0, 0),
           xattrs: dict[str, bytes] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, 1_700_000_000
    info.linkname = linkname
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if xattrs:
        # tarfile writes PAX values as UTF-8 text; binary xattrs go through surrogateescape
        info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}
    return info, data


def layer_tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def gzip_blob(directory: Path, tar: bytes) -> Blob:
    path = directory / f"layer-{hashlib.sha256(tar).hexdigest()[:12]}.tar.gz"
    path.write_bytes(gzip.compress(tar, compresslevel=1, mtime=0))
    return Blob(path, "sha256:" + hashlib.sha256(tar).hexdigest())


def zeros_bomb(directory: Path, size: int) -> Blob:
    """A gzip layer of one file of ``size`` zero bytes, made by streaming: one 64 MiB gzip member of
    zeros is compressed once and repeated (a multi-member gzip is one valid stream). Never in memory."""
    chunk = 64 << 20
    assert size % chunk == 0
    hdr = tarfile.TarInfo("zeros")
    hdr.size, hdr.mtime = size, 1_700_000_000
    header = hdr.tobuf(format=tarfile.PAX_FORMAT)
    trailer = bytes(-size % 512) + bytes(1024)
    co = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    zeros = bytes(1 << 20)
    parts = [co.compress(zeros) for _ in range(chunk >> 20)]
    one = b"".join(parts) + co.flush()
    diff = hashlib.sha256(header)
    path = directory / "bomb.tar.gz"
    with open(path, "wb") as out:
        out.write(gzip.compress(header, mtime=0))
        out.writelines(one for _ in range(size // chunk))
        out.write(gzip.compress(trailer, mtime=0))
    for _ in range(size >> 20):
        diff.update(zeros)
    diff.update(trailer)
    return Blob(path, "sha256:" + diff.hexdigest())


def _put(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def _put_file(layout: Path, path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    shutil.copyfile(path, layout / "blobs" / "sha256" / h.hexdigest())
    return {"digest": "sha256:" + h.hexdigest(), "size": path.stat().st_size}


def oci_layout(layout: Path, blobs: list[Blob], tag: str = "t", validate: Any = None) -> str:
    """Write an OCI image layout holding one image of ``blobs`` (bottom first); returns ``oci:DIR:TAG``."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in blobs]},
              "history": [{"created_by": f"layer {i}"} for i in range(len(blobs))]}
    layers = [{"mediaType": GZIP_LAYER, **_put_file(layout, b.path)} for b in blobs]
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **_put(layout, json.dumps(config).encode())},
                "layers": layers}
    raw = json.dumps(manifest).encode()
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": manifest["mediaType"], **_put(layout, raw),
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (layout / "index.json").write_text(json.dumps(index))
    if validate is not None:
        validate("config", config)
        validate("manifest", manifest)
        validate("index", index)
    return f"oci:{layout}:{tag}"


@contextmanager
def shm_dir(prefix: str) -> Iterator[Path]:
    """A temp dir on /dev/shm (tmpfs: fast file creation), removed afterwards even when read-only."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm"))
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)
