"""Bad input everywhere, through the real ``layerkit`` process: unknown references, missing tags,
registries that are down, refuse or lack the image, corrupt, truncated and malformed blobs and
layouts, broken Dockerfiles, bad flags.

Every case must end with exit 1 (2 for usage), one error line that names the culprit, no traceback,
and a store exactly as before: no new tag, still sound. The integrity cases also check that a
flipped byte is caught whichever transport it comes through, as a ``DigestMismatchError`` naming the
blob and where it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from safety_helpers import (
    assert_one_error_line,
    blob_path,
    flip_byte,
    make_oci_image,
    run_layerkit,
    store_state,
    truncate,
    verify_layout,
)

from layerkit.errors import DigestMismatchError
from layerkit.ops.copy import copy_image
from layerkit.store import OCILayout
from layerkit.transport import open_image, open_sink

BASE_TAG = "safety/base:1"
TARGET_TAG = "safety/never:1"  # what a failing copy or build would have tagged


@dataclass(frozen=True)
class World:
    """Everything the cases point at, made once per module."""

    home: Path  # a store holding BASE_TAG
    good: Path  # an OCI layout with tag v1
    bad: Path  # hand-written broken OCI layouts, one per directory, each with tag v1
    archive: Path  # a docker-archive holding safety/archive:1
    missing: Path  # a path that does not exist
    registry: str
    auth: str  # a registry that wants credentials
    closed: str  # 127.0.0.1:PORT where nothing listens
    docker_config: Path  # an empty $DOCKER_CONFIG: no credentials from the developer's machine

    def fill(self, text: str) -> str:
        return text.format(home=self.home, good=self.good, bad=self.bad, archive=self.archive,
                           missing=self.missing, registry=self.registry, auth=self.auth, closed=self.closed)

    def run(self, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run_layerkit(home or self.home, *args, env={"DOCKER_CONFIG": str(self.docker_config)})


def _closed_port() -> str:
    with socket.socket() as s:  # bound but never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _bad_layouts(root: Path) -> None:
    files = {"etc/motd": b"safety\n" * 500}

    def with_manifest(name: str, edit: Any) -> None:
        make_oci_image(root / name, "v1", files, manifest_bytes=lambda d: json.dumps(edit(d)).encode())

    make_oci_image(root / "manifest-not-json", "v1", files, manifest_bytes=lambda d: b'{"schemaVersion": 2, "layers": [')
    with_manifest("layers-not-a-list", lambda d: dict(d, layers="x"))
    with_manifest("schema-1", lambda d: dict(d, schemaVersion=1))
    with_manifest("media-type-a-list", lambda d: dict(d, mediaType=["x"]))
    with_manifest("config-digest-invalid", lambda d: dict(d, config=dict(d["config"], digest="sha256:xyz")))
    with_manifest("layer-missing", lambda d: dict(d, layers=[dict(d["layers"][0], digest="sha256:" + "0" * 64)]))
    with_manifest("layer-size-negative", lambda d: dict(d, layers=[dict(d["layers"][0], size=-1)]))
    make_oci_image(root / "config-not-json", "v1", files, config_bytes=b"not json")
    make_oci_image(root / "config-a-list", "v1", files, config_bytes=b"[1, 2]")
    make_oci_image(root / "config-diff-ids-a-string", "v1", files,
                   config_bytes=json.dumps({"architecture": "amd64", "os": "linux",
                                            "rootfs": {"type": "layers", "diff_ids": "sha256:x"}}).encode())
    make_oci_image(root / "config-without-diff-ids", "v1", files,
                   config_bytes=json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode())
    for name in ("index-not-json", "index-missing", "index-entry-a-string", "no-oci-layout-file",
                 "layer-corrupt", "layer-truncated", "config-corrupt", "manifest-corrupt", "manifest-size-wrong"):
        digests = make_oci_image(root / name, "v1", {"etc/motd": os.urandom(60_000)})
        layout = root / name
        if name == "index-not-json":
            (layout / "index.json").write_text("{")
        elif name == "index-missing":
            (layout / "index.json").unlink()
        elif name == "index-entry-a-string":
            (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": ["v1"]}')
        elif name == "no-oci-layout-file":
            (layout / "oci-layout").unlink()
        elif name == "layer-corrupt":
            flip_byte(blob_path(layout, digests["layer"]))
        elif name == "layer-truncated":
            truncate(blob_path(layout, digests["layer"]))
        elif name == "config-corrupt":
            flip_byte(blob_path(layout, digests["config"]))
        elif name == "manifest-corrupt":
            flip_byte(blob_path(layout, digests["manifest"]), 5)
        else:
            index = json.loads((layout / "index.json").read_bytes())
            index["manifests"][0]["size"] += 10
            (layout / "index.json").write_text(json.dumps(index))
        (layout / "digests.json").write_text(json.dumps(digests))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, registry: str, auth_registry: Any) -> World:
    root = tmp_path_factory.mktemp("cli-errors")
    good = root / "good"
    make_oci_image(good, "v1", {"etc/motd": b"a good image\n"})
    _bad_layouts(root / "bad")
    archive = root / "image.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{good}:v1", f"docker-archive:{archive}:safety/archive:1"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{good}:v1",
                    f"docker://{registry}/safety/errors:1"], check=True, capture_output=True, timeout=120)
    (root / "docker-config").mkdir()
    w = World(root / "home", good, root / "bad", archive, root / "does-not-exist", registry, auth_registry.host,
              _closed_port(), root / "docker-config")
    made = w.run("copy", f"oci:{good}:v1", BASE_TAG)
    assert made.returncode == 0, made.stderr
    return w


@pytest.fixture
def untouched(world: World) -> Any:
    """Asserts after the test that the store has the same tags as before and is still sound."""
    before = store_state(world.home)
    yield
    after = store_state(world.home)
    assert before is not None and after is not None
    assert after.tags == before.tags
    check = OCILayout(world.home / "oci").check()
    assert check.ok, check.problems


# --- every command, every bad reference ------------------------------------------------------------

#: (args, names the error line must contain); {placeholders} are World fields
REFERENCE_CASES = [
    (("inspect", "store:safety/nosuch:1"), ["safety/nosuch:1"]),
    (("copy", "store:safety/nosuch:1", TARGET_TAG), ["safety/nosuch:1"]),
    (("rmi", "safety/nosuch:1"), ["safety/nosuch:1"]),
    (("tag", "safety/nosuch:1", TARGET_TAG), ["safety/nosuch:1"]),
    (("copy", "oci:{missing}:1", TARGET_TAG), ["{missing}"]),
    (("copy", "oci:{good}:nosuchtag", TARGET_TAG), ["nosuchtag"]),
    (("ls", "oci:{good}:nosuchtag", "/"), ["nosuchtag"]),
    (("copy", "docker-archive:{missing}.tar", TARGET_TAG), ["{missing}.tar"]),
    (("copy", "docker-archive:{archive}:safety/nosuch:1", TARGET_TAG), ["safety/nosuch:1"]),
    (("copy", "docker-archive:{archive}:@7", TARGET_TAG), ["@7"]),
    (("pull", "Bad Ref!!"), ["Bad Ref!!"]),
    (("copy", "oci:", TARGET_TAG), ["oci:"]),
    (("copy", "oci:{good}:v1", "docker-archive:{archive}:@1"), ["@1"]),
    (("cat", "oci:{good}:v1", "/no/such/file"), ["/no/such/file"]),
    (("ls", "oci:{good}:v1", "/no/such/dir"), ["/no/such/dir"]),
    (("export", "oci:{good}:v1", "-o", "{missing}/out.tar"), ["{missing}/out.tar"]),
    (("unpack", "oci:{good}:v1", "/proc/no-such-dir"), ["/proc/no-such-dir"]),
    (("unpack", "oci:{good}:v1", "{archive}/below-a-file"), ["{archive}/below-a-file"]),
    # registries: down, refusing, without the image
    (("pull", "{closed}/safety/x:1"), ["{closed}"]),
    (("inspect", "docker://{closed}/safety/x:1"), ["{closed}"]),
    (("push", BASE_TAG, "{closed}/safety/x:1"), ["{closed}"]),
    (("pull", "{auth}/safety/private:1"), ["{auth}"]),
    (("push", BASE_TAG, "{auth}/safety/private:1"), ["{auth}"]),
    (("pull", "{registry}/safety/nosuch:1"), ["{registry}/safety/nosuch:1"]),
    (("pull", "{registry}/safety/errors:nosuchtag"), ["nosuchtag"]),
    (("pull", "{registry}/safety/errors@sha256:" + "0" * 64), ["sha256:" + "0" * 64]),
    (("ls", "docker://{registry}/safety/nosuch:1", "/"), ["{registry}/safety/nosuch:1"]),
]


@pytest.mark.parametrize(("args", "names"), REFERENCE_CASES, ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_bad_references_and_unreachable_sources(world: World, untouched: None, args: tuple[str, ...],
                                                names: list[str]) -> None:
    result = world.run(*(world.fill(a) for a in args))
    assert_one_error_line(result, *(world.fill(n) for n in names))


# --- broken OCI layouts: corrupt, truncated, malformed ----------------------------------------------

#: layout -> what the error must name besides the layout ("layer", "config", "manifest": that digest)
BAD_LAYOUTS = {
    "manifest-not-json": ["manifest"], "layers-not-a-list": ["manifest"], "schema-1": ["manifest"],
    "media-type-a-list": ["manifest"], "config-digest-invalid": ["manifest"],
    "layer-missing": ["sha256:" + "0" * 64], "layer-size-negative": ["manifest"],
    "config-not-json": ["config"], "config-a-list": ["config"], "config-diff-ids-a-string": ["config"],
    "config-without-diff-ids": [], "index-not-json": ["index.json"], "index-missing": ["index.json"],
    "index-entry-a-string": ["index.json"], "no-oci-layout-file": ["oci-layout"],
    "layer-corrupt": ["layer"], "layer-truncated": ["layer"], "config-corrupt": ["config"],
    "manifest-corrupt": ["manifest"], "manifest-size-wrong": ["manifest"],
}


def _expected_names(world: World, layout: str) -> list[str]:
    path = world.bad / layout
    digests = json.loads((path / "digests.json").read_text()) if (path / "digests.json").exists() else {}
    return [str(path), *(digests.get(n, n) for n in BAD_LAYOUTS[layout])]


@pytest.mark.parametrize("command", ["copy", "inspect", "ls"])
@pytest.mark.parametrize("layout", sorted(BAD_LAYOUTS))
def test_broken_oci_layouts(world: World, untouched: None, layout: str, command: str) -> None:
    ref = f"oci:{world.bad / layout}:v1"
    args = {"copy": ("copy", ref, TARGET_TAG), "inspect": ("inspect", ref), "ls": ("ls", ref, "/etc")}[command]
    assert_one_error_line(world.run(*args), *_expected_names(world, layout))


# --- integrity across transports ----------------------------------------------------------------------


@dataclass(frozen=True)
class Corrupted:
    ref: str  # where to read the image from
    layer: str  # the digest of the flipped blob
    source: str  # how the error names where it came from
    home: Path  # the store to run in (the one read from, for store:)


@pytest.fixture(scope="module")
def corrupted(world: World, tmp_path_factory: pytest.TempPathFactory, registry_server: Any) -> dict[str, Corrupted]:
    """One image per transport, each with its own random layer (so corrupting it in the registry's
    storage touches no other test), and one byte of that layer flipped at the source."""
    root = tmp_path_factory.mktemp("corrupted")
    out: dict[str, Corrupted] = {}

    def image(name: str) -> tuple[Path, str]:
        layout = root / f"{name}-src"
        return layout, make_oci_image(layout, "v1", {"etc/data": os.urandom(300_000)})["layer"]

    layout, layer = image("oci")
    flip_byte(blob_path(layout, layer))
    out["oci"] = Corrupted(f"oci:{layout}:v1", layer, f"oci:{layout}", world.home)

    layout, layer = image("archive")  # gzip layer kept: skopeo writes it as it is
    archive = root / "corrupt.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:v1", f"docker-archive:{archive}:safety/corrupt:1"],
                   check=True, capture_output=True, timeout=120)
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.size > 200_000)
        extracted = tar.extractfile(member)
        assert extracted is not None
        layer = "sha256:" + hashlib.sha256(extracted.read()).hexdigest()  # skopeo stores it uncompressed
    flip_byte(archive, member.offset_data + member.size // 2)
    out["docker-archive"] = Corrupted(f"docker-archive:{archive}", layer, f"docker-archive:{archive}", world.home)

    layout, layer = image("store")
    store_home = root / "source-store"
    made = world.run("copy", f"oci:{layout}:v1", "safety/corrupt:1", home=store_home)
    assert made.returncode == 0, made.stderr
    flip_byte(blob_path(store_home / "oci", layer))
    out["store"] = Corrupted("store:safety/corrupt:1", layer, str(store_home), store_home)

    layout, layer = image("registry")
    registry = registry_server.host
    ref = f"{registry}/safety/corrupt-{os.getpid()}:1"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}"],
                   check=True, capture_output=True, timeout=120)
    storage = registry_server.storage  # the registry serves what it stores without re-hashing it
    hexpart = layer.removeprefix("sha256:")
    flip_byte(storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2] / hexpart / "data")
    out["registry"] = Corrupted(f"docker://{ref}", layer, f"{registry}/safety/corrupt-", world.home)
    return out


TRANSPORTS = ["oci", "docker-archive", "store", "registry"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_flipped_byte_is_a_digest_mismatch_naming_blob_and_source(
    corrupted: dict[str, Corrupted], transport: str, tmp_path: Path
) -> None:
    case = corrupted[transport]
    image = open_image(case.ref, home=case.home)
    sink = open_sink(f"oci:{tmp_path / 'out'}:copied")
    with pytest.raises(DigestMismatchError) as info:
        copy_image(image, sink)
    sink.close()
    assert info.value.expected == case.layer
    assert case.layer in str(info.value) and case.source in str(info.value)
    assert verify_layout(tmp_path / "out").tags == {}  # nothing unverified was tagged


@pytest.mark.parametrize("command", ["copy", "inspect", "ls"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_flipped_byte_via_the_cli(world: World, corrupted: dict[str, Corrupted], transport: str,
                                    command: str, tmp_path: Path) -> None:
    case = corrupted[transport]
    # from the (damaged on purpose) source store, copy into an OCI layout; from anywhere else, into the store
    dest = f"oci:{tmp_path / 'out'}:copied" if transport == "store" else TARGET_TAG
    before = store_state(world.home)
    args = {"copy": ("copy", case.ref, dest), "inspect": ("inspect", case.ref), "ls": ("ls", case.ref, "/etc")}
    line = assert_one_error_line(world.run(*args[command], home=case.home), case.layer, case.source)
    assert "corrupt" in line
    after = store_state(world.home)
    assert before is not None and after is not None and after.tags == before.tags
    assert OCILayout(world.home / "oci").check().ok
    if (tmp_path / "out").exists():
        assert verify_layout(tmp_path / "out").tags == {}


# --- broken Dockerfiles -----------------------------------------------------------------------------

DOCKERFILES = [
    ("FOO bar\n", 1, "unknown instruction"),
    ("FROM\n", 1, "FROM"),
    ("", None, "no instructions"),
    ("RUN echo hi\n", 1, "RUN"),
    ("FROM scratch\nRUN <<EOF\necho\n", 2, "heredoc"),
    ("FROM scratch\nCOPY --nope a.txt /\n", 2, "--nope"),
    ("FROM scratch\nCOPY missing.txt /x\n", 2, "missing.txt"),
    ("FROM oci:{missing}:1\n", 1, "{missing}"),
    ("FROM scratch\nENV\n", 2, "ENV"),
    ("FROM scratch\nHEALTHCHECK --interval=xx CMD true\n", 2, "--interval"),
    ("FROM scratch\nEXPOSE abc\n", 2, "abc"),
    ("FROM $NOPE\n", 1, "FROM"),
    ("FROM scratch AS a\nFROM scratch AS a\n", 2, "'a'"),
    ("\x00\x01\x02\n", 1, "unknown instruction"),
    ("FROM scratch\nONBUILD FROM x\n", 2, "ONBUILD"),
    ("FROM scratch\nCOPY --from=nosuchstage / /\n", 2, "nosuchstage"),
]


@pytest.mark.parametrize(("dockerfile", "line", "name"), DOCKERFILES, ids=[repr(d[0][:30]) for d in DOCKERFILES])
def test_broken_dockerfiles(world: World, untouched: None, tmp_path: Path, dockerfile: str, line: int | None,
                            name: str) -> None:
    (tmp_path / "Dockerfile").write_text(world.fill(dockerfile) if "{" in dockerfile else dockerfile)
    (tmp_path / "a.txt").write_text("a")
    result = world.run("build", "-t", TARGET_TAG, "--progress", "plain", str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # build errors are one located line like every other error: "error: Dockerfile:LINE: …"
    where = f"error: Dockerfile:{line}: " if line is not None else "error: Dockerfile: "
    located = [ln for ln in result.stderr.splitlines() if ln.startswith(where)]
    assert len(located) == 1, result.stderr
    assert world.fill(name) in located[0]


def test_missing_dockerfile_and_context(world: World, untouched: None, tmp_path: Path) -> None:
    result = world.run("build", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(tmp_path / "Dockerfile") in result.stderr
    result = world.run("build", str(tmp_path / "nope"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(tmp_path / "nope") in result.stderr


# --- usage errors --------------------------------------------------------------------------------------

USAGE = [
    ("copy", "--nope", "a", "b"),
    ("copy", "onlyone"),
    ("build", "--progress", "weird", "."),
    ("gc", "--grace", "-1"),
    ("copy", "--all-platforms", "--platform", "linux/amd64", "a", "b"),
    ("copy", "--format", "rpm", "a", "b"),
    ("nosuchcommand",),
    ("images", "--json", "extra"),
]


@pytest.mark.parametrize("args", USAGE, ids=" ".join)
def test_usage_errors_exit_2(world: World, untouched: None, args: tuple[str, ...]) -> None:
    result = world.run(*args)
    assert_one_error_line(result, code=2)
    assert "Usage:" in result.stderr


def test_a_fresh_home_stays_empty_after_failures(tmp_path: Path, world: World) -> None:
    """A failed first command must not leave a half-made image behind in a new store."""
    home = tmp_path / "home"
    for args in (("copy", f"oci:{world.bad / 'layer-corrupt'}:v1", TARGET_TAG),
                 ("pull", f"{world.registry}/safety/nosuch:1")):
        assert_one_error_line(world.run(*args, home=home))
    state = store_state(home)
    assert state is None or state.tags == {}
    shutil.rmtree(home, ignore_errors=True)
