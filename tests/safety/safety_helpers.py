"""Helpers of the safety tests: running ``layerkit`` as a real process (to kill it), checking a store
with code independent of layerkit's, making small OCI layouts by hand, and fuzz corpora.

The store checks here re-implement the OCI layout rules with ``hashlib`` and ``json`` only, so a bug
in layerkit's own ``check`` cannot hide a bug in its writers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
REF_NAME = "org.opencontainers.image.ref.name"


# --- running layerkit ------------------------------------------------------------------------------


def layerkit_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``layerkit`` subprocess: this checkout importable, no colours, no
    credentials from the developer's ``~/.docker``, no inherited store or debug switch."""
    env = {k: v for k, v in os.environ.items() if k not in ("LAYERKIT_HOME", "LAYERKIT_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["NO_COLOR"] = "1"
    env["TERM"] = "dumb"
    env.update(extra or {})
    return env


def layerkit_argv(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "layerkit", "--home", str(home), *args]


def run_layerkit(home: Path, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(layerkit_argv(home, *args), capture_output=True, text=True, timeout=timeout, check=False,
                          env=layerkit_env(env), cwd=cwd or REPO)


def start_layerkit(home: Path, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(layerkit_argv(home, *args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=layerkit_env(env), cwd=REPO)


def ingest_bytes(home: Path) -> int:
    """Size of the biggest blob being written into the store (its ingest temp files)."""
    biggest = 0
    try:
        with os.scandir(home / "oci" / ".layerkit" / "ingest") as it:
            for e in it:
                try:
                    biggest = max(biggest, e.stat().st_size)
                except FileNotFoundError:
                    pass
    except FileNotFoundError:
        pass
    return biggest


def blob_count(home: Path) -> int:
    try:
        return len(os.listdir(home / "oci" / "blobs" / "sha256"))
    except FileNotFoundError:
        return 0


def store_created(home: Path) -> bool:
    return (home / "oci" / "oci-layout").exists()


@dataclass(frozen=True)
class KillPoint:
    """When to ``kill -9`` a writer: ``delay`` seconds after ``anchor(home)`` first holds (polled
    every millisecond; no anchor: the start), or at once when ``trigger(home)`` holds."""

    label: str
    delay: float
    anchor: Callable[[Path], bool] | None = None
    trigger: Callable[[Path], bool] | None = None

    def __str__(self) -> str:
        return self.label


def wait_for(proc: subprocess.Popen[bytes], home: Path, cond: Callable[[Path], bool] | None,
             deadline: float) -> float | None:
    """Poll until ``cond(home)`` (or the deadline); the time it held, None when ``proc`` ended first."""
    while proc.poll() is None:
        now = time.monotonic()
        if now >= deadline or (cond is not None and cond(home)):
            return now
        time.sleep(0.001)
    return None


def kill_at(proc: subprocess.Popen[bytes], home: Path, point: KillPoint, timeout: float = 60) -> bool:
    """Kill ``proc`` at ``point``; True when it was killed, False when it finished first."""
    start = time.monotonic()
    anchored = start if point.anchor is None else wait_for(proc, home, point.anchor, start + timeout)
    if anchored is not None and wait_for(proc, home, point.trigger, anchored + point.delay) is not None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout)
    return proc.returncode == -signal.SIGKILL


# --- checking a store without layerkit -------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class LayoutState:
    tags: dict[str, str]  # ref.name -> manifest digest
    entries: int  # index.json entries, tagged or not
    blobs: frozenset[str]  # digests of the files under blobs/


def verify_layout(root: Path) -> LayoutState:
    """Assert what a crash must never break in an OCI layout: every blob file hashes to its name,
    ``index.json`` is valid JSON, and every entry reaches only present blobs of the promised size
    whose documents parse. Returns the tags and blobs found."""
    blobs_dir = root / "blobs" / "sha256"
    blobs = set()
    for path in blobs_dir.iterdir() if blobs_dir.is_dir() else ():
        digest = "sha256:" + path.name
        assert sha256_file(path) == digest, f"{path} does not hash to its name"
        blobs.add(digest)
    index = json.loads((root / "index.json").read_bytes())
    assert isinstance(index.get("manifests"), list), index
    tags: dict[str, str] = {}
    for entry in index["manifests"]:
        name = (entry.get("annotations") or {}).get(REF_NAME)
        assert name not in tags, f"tag {name} appears twice in index.json"
        if name:
            tags[name] = entry["digest"]
        _verify_closure(root, entry, blobs)
    return LayoutState(tags, len(index["manifests"]), frozenset(blobs))


def _verify_closure(root: Path, top: Mapping[str, Any], blobs: set[str]) -> None:
    stack = [top]
    while stack:
        d = stack.pop()
        assert d["digest"] in blobs, f"{d['digest']} ({d.get('mediaType')}) referenced by {top['digest']} is missing"
        path = root / "blobs" / "sha256" / d["digest"].removeprefix("sha256:")
        assert path.stat().st_size == d["size"], f"{d['digest']} has the wrong size"
        if d.get("mediaType") in MANIFEST_TYPES:
            doc = json.loads(path.read_bytes())
            stack.append(doc["config"])
            stack.extend(doc["layers"])
        elif d.get("mediaType") in INDEX_TYPES:
            stack.extend(json.loads(path.read_bytes())["manifests"])
        elif d.get("mediaType") in (OCI_CONFIG, "application/vnd.docker.container.image.v1+json"):
            assert isinstance(json.loads(path.read_bytes()), dict)


def assert_store_sound(home: Path) -> LayoutState:
    """The store after a crash: ``layerkit check`` exits 0, ``layerkit images --json`` lists exactly
    the tags of ``index.json``, and the independent check above holds."""
    with ThreadPoolExecutor(2) as pool:  # two interpreters start faster side by side
        check_run = pool.submit(run_layerkit, home, "check")
        listed = run_layerkit(home, "images", "--json")
        check = check_run.result()
    assert check.returncode == 0, check.stdout + check.stderr
    assert listed.returncode == 0, listed.stderr
    state = verify_layout(home / "oci")
    images = {row["name"]: row["digest"] for row in json.loads(listed.stdout) if row["name"]}
    assert images == state.tags
    return state


def store_state(home: Path) -> LayoutState | None:
    """The store's tags and blobs, or None when no store was created."""
    return verify_layout(home / "oci") if (home / "oci" / "index.json").exists() else None


# --- hand-made OCI layouts -------------------------------------------------------------------------


def layer_tar_gz(files: Mapping[str, bytes]) -> tuple[bytes, str]:
    """A gzip layer with ``files`` (and their parent dirs) and its diff ID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def write_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest[7:]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def make_oci_image(layout: Path, tag: str, files: Mapping[str, bytes], *,
                   manifest_bytes: Callable[[dict[str, Any]], bytes] | None = None,
                   config_bytes: bytes | None = None) -> dict[str, str]:
    """Write (or add to) an OCI layout holding a one-layer image tagged ``tag``; hooks replace the
    manifest or config bytes to make malformed images. Returns the digests written by role."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    blob, diff_id = layer_tar_gz(files)
    layer = {"mediaType": OCI_LAYER_GZIP, **write_blob(layout, blob)}
    config_doc = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                  "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                  "history": [{"created_by": "safety test layer"}]}
    config = {"mediaType": OCI_CONFIG,
              **write_blob(layout, config_bytes if config_bytes is not None else json.dumps(config_doc).encode())}
    manifest_doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}
    raw = manifest_bytes(manifest_doc) if manifest_bytes else json.dumps(manifest_doc).encode()
    manifest = {"mediaType": OCI_MANIFEST, **write_blob(layout, raw), "annotations": {REF_NAME: tag}}
    index_file = layout / "index.json"
    index = json.loads(index_file.read_bytes()) if index_file.exists() else {
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != tag]
    index["manifests"].append(manifest)
    index_file.write_text(json.dumps(index))
    return {"layer": layer["digest"], "config": config["digest"], "manifest": manifest["digest"]}


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte (the middle one by default), keeping the size."""
    data = bytearray(path.read_bytes())
    pos = len(data) // 2 if offset is None else offset
    data[pos] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data[: int(len(data) * keep)])


# --- CLI output rules -------------------------------------------------------------------------------


def assert_one_error_line(result: subprocess.CompletedProcess[str], *names: str, code: int = 1) -> str:
    """Exit ``code``; no traceback anywhere; exactly one ``error: …`` line on stderr, and it names
    each of ``names``. Returns that line."""
    output = result.stdout + result.stderr
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{output}"
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, f"expected one error line, got:\n{result.stderr}"
    for name in names:
        assert name in errors[0], f"{name!r} not named in {errors[0]!r}"
    return errors[0]


# --- fuzz corpora ------------------------------------------------------------------------------------

DOCKERFILE_FRAGMENTS = [
    "FROM ", "FROM scratch\n", "FROM alpine:3.20 AS base\n", "FROM --platform=$BUILDPLATFORM a\n", "AS ",
    "RUN ", "RUN echo hi\n", "RUN [\"sh\", \"-c\", \"x\"]\n", "RUN --mount=type=cache,target=/c ", "RUN <<EOF\n",
    "EOF\n", "<<-EOT\n", "EOT\n", "COPY ", "COPY --from=base / /\n", "COPY --chown=1:1 --chmod=755 ", "ADD ",
    "ADD https://example.invalid/x /x\n", "ENV A=b C=\"d e\"\n", "ENV ", "ARG X=1\n", "ARG ", "LABEL a=b\n",
    "USER ", "WORKDIR /w\n", "EXPOSE 80/tcp\n", "VOLUME [\"/v\"]\n", "CMD [", "CMD [\"a\"]\n", "ENTRYPOINT ",
    "SHELL [\"/bin/bash\", \"-c\"]\n", "SHELL ", "STOPSIGNAL SIGTERM\n", "HEALTHCHECK --interval=5s CMD true\n",
    "HEALTHCHECK NONE\n", "ONBUILD ", "ONBUILD ONBUILD ", "MAINTAINER me\n", "# syntax=docker/dockerfile:1\n",
    "# escape=`\n", "# escape=\\\n", "# check=skip=all\n", "\\\n", "`\n", "# comment\n", "\n", " ", "\t", "$", "${",
    "${X:-", "${X:+y}", "}", "\"", "'", "[", "]", ",", "=", "--", "--from=", "--mount=", "\r\n", "\x00", "\\",
]

REFERENCE_FRAGMENTS = [
    "oci:", "docker://", "docker-archive:", "docker-daemon:", "store:", "oci-archive:", "alpine", "library/",
    "localhost", ":5000", "127.0.0.1", "[::1]", "/", "//", ":", "@", "@sha256:", "0" * 64, "sha256:", "a" * 64,
    "latest", ".", "..", "-", "_", "__", "UPPER", "@1", "@-1", ":tag", "docker.io/", "index.docker.io/", " ", "\x00",
    "é",
]


def sample_manifest() -> bytes:
    layer = {"mediaType": OCI_LAYER_GZIP, "digest": "sha256:" + "a" * 64, "size": 32,
             "annotations": {"k": "v"}, "urls": ["https://example.invalid/x"]}
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + "b" * 64, "size": 7},
                       "layers": [layer, dict(layer, digest="sha256:" + "c" * 64)],
                       "subject": {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "d" * 64, "size": 3},
                       "annotations": {"a": "b"}}).encode()


def sample_index() -> bytes:
    entry = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 32,
             "platform": {"architecture": "arm", "os": "linux", "variant": "v7", "os.features": ["x"]}}
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "annotations": {"a": "b"},
                       "manifests": [entry, dict(entry, platform={"architecture": "amd64", "os": "linux"})]}).encode()


def sample_config() -> bytes:
    return json.dumps({
        "architecture": "amd64", "os": "linux", "variant": "v1", "created": "2024-09-06T12:00:00Z", "author": "x",
        "config": {"Env": ["A=b"], "Cmd": ["/bin/sh"], "Entrypoint": ["tini"], "WorkingDir": "/w", "User": "1:1",
                   "Labels": {"a": "b"}, "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/v": {}},
                   "StopSignal": "SIGTERM", "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "e" * 64]},
        "history": [{"created": "2024-09-06T12:00:00Z", "created_by": "ADD x", "comment": "c", "author": "a"},
                    {"created_by": "CMD", "empty_layer": True}],
    }).encode()


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                       st.text(max_size=8), st.just("sha256:" + "f" * 64), st.just("sha256:xyz"))
_json_any = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                         max_leaves=6)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def json_shapes_of(kind: str) -> st.SearchStrategy[Any]:
    """A real manifest/index/config with one to three places replaced by any JSON value (or removed)."""
    base = json.loads({"manifest": sample_manifest, "index": sample_index, "config": sample_config}[kind]())
    paths = _paths(base)

    @st.composite
    def shapes(draw: st.DrawFn) -> Any:
        doc = base
        for _ in range(draw(st.integers(1, 3))):
            candidates = _paths(doc) if isinstance(doc, (dict, list)) else [()]
            path = draw(st.sampled_from(candidates or paths))
            delete = bool(path) and draw(st.booleans()) and draw(st.booleans())
            doc = _replace(doc, path, draw(_json_any), delete)
        return doc

    return shapes()


def sample_tars(workdir: Path) -> dict[str, bytes]:
    """Small real archives in every dialect the reader supports, with every entry type."""
    import zstandard

    out: dict[str, bytes] = {}
    long_name = "deep/" + "d" * 120 + "/file-with-a-long-name.txt"
    for kind, fmt in (("ustar", tarfile.USTAR_FORMAT), ("pax", tarfile.PAX_FORMAT), ("gnu", tarfile.GNU_FORMAT)):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
            def add(name: str, type_: bytes, data: bytes = b"", **kw: Any) -> None:
                info = tarfile.TarInfo(name)
                info.type, info.size, info.mtime, info.mode = type_, len(data), 1_700_000_000, 0o644
                for k, v in kw.items():
                    setattr(info, k, v)
                tar.addfile(info, io.BytesIO(data) if data else None)

            add("etc", tarfile.DIRTYPE, mode=0o755)
            add("etc/hosts", tarfile.REGTYPE, b"127.0.0.1 localhost\n" * 30)
            add("etc/link", tarfile.SYMTYPE, linkname="hosts")
            add("etc/hard", tarfile.LNKTYPE, linkname="etc/hosts")
            add("etc/.wh.gone", tarfile.REGTYPE)
            add("etc/sub/.wh..wh..opq", tarfile.REGTYPE)
            add("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)
            add("run/fifo", tarfile.FIFOTYPE)
            add("empty", tarfile.REGTYPE)
            if kind != "ustar":
                add(long_name, tarfile.REGTYPE, b"x" * 700)
                add("l" * 150, tarfile.SYMTYPE, linkname="t" * 150)
            if kind == "pax":
                info = tarfile.TarInfo("bin/ping")
                info.size, info.pax_headers = 3, {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
                                                  "mtime": "1700000000.123456789"}
                tar.addfile(info, io.BytesIO(b"elf"))
        out[kind] = raw.getvalue()
    out["gzip"] = gzip.compress(out["pax"], mtime=0)
    out["zstd"] = zstandard.ZstdCompressor(write_checksum=True).compress(out["gnu"])
    return out
