"""Size and waste figures of real images (docker classic, BuildKit, buildah) against an independent
computation from the layer tars with ``tarfile``, and dive's figures against ``dive --ci --json``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from layerkit.analyze import inspect_image
from layerkit.transport import open_image

pytestmark = pytest.mark.docker

# Overwrites, a deleted file and directory, an opaque directory (rm -rf d && mkdir d), links, an
# empty-layer step between RUNs: everything the waste figures must get right.
DOCKERFILE = """\
FROM alpine-fixture:3.20
RUN mkdir -p /data/d /data/keep && head -c 100000 /dev/urandom > /data/big \\
 && head -c 5000 /dev/urandom > /data/d/x && echo hi > /data/keep/k && ln -s big /data/link \\
 && head -c 3000 /dev/urandom > /data/h1 && ln /data/h1 /data/h2
RUN head -c 70000 /dev/urandom > /data/big && rm /data/d/x && rm -rf /etc/apk/keys
RUN rm -rf /data/keep && mkdir /data/keep && echo new > /data/keep/n
ENV FOO=bar
RUN rm -rf /data/d && mkdir /data/d && echo z > /data/d/z && rm -f /bin/busybox
"""

BUILDAH = ["buildah", "--storage-driver", "vfs"]


@pytest.fixture(scope="module")
def alpine_in_daemon(docker_cli: str, alpine_image_oci: Path) -> str:
    subprocess.run(["skopeo", "copy", "-q", f"oci:{alpine_image_oci}:3.20", "docker-daemon:alpine-fixture:3.20"],
                   check=True)
    return "alpine-fixture:3.20"


def _docker_archive(docker_cli: str, context: Path, tag: str, out: Path, buildkit: bool) -> Path:
    env = {**os.environ, "DOCKER_BUILDKIT": "1" if buildkit else "0"}
    subprocess.run([docker_cli, "build", "--network", "none", "-q", "-t", tag, str(context)], check=True, env=env,
                   capture_output=True)
    subprocess.run([docker_cli, "save", "-o", str(out), tag], check=True)
    return out


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, docker_cli: str, alpine_in_daemon: str) -> dict[str, Path]:
    """The same Dockerfile built by the classic builder, BuildKit and buildah, as docker-archives."""
    work = tmp_path_factory.mktemp("waste")
    ctx = work / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    out = {
        "classic": _docker_archive(docker_cli, ctx, "lk-analyze-waste:classic", work / "classic.tar", False),
        "buildkit": _docker_archive(docker_cli, ctx, "lk-analyze-waste:buildkit", work / "buildkit.tar", True),
    }
    store = ["--root", str(work / "buildah-root"), "--runroot", str(work / "buildah-run")]
    (ctx / "Containerfile").write_text(DOCKERFILE.replace("FROM alpine-fixture", "FROM docker-daemon:alpine-fixture"))
    subprocess.run([*BUILDAH, *store, "bud", "--layers", "--network", "none", "-q", "-f", str(ctx / "Containerfile"),
                    "-t", "lk-analyze-waste", str(ctx)], check=True, capture_output=True)
    subprocess.run([*BUILDAH, *store, "push", "-q", "lk-analyze-waste", f"docker-archive:{work / 'buildah.tar'}"],
                   check=True, capture_output=True)
    out["buildah"] = work / "buildah.tar"
    yield out
    subprocess.run([*BUILDAH, *store, "rm", "-a"], check=False, capture_output=True)
    subprocess.run([*BUILDAH, *store, "rmi", "-a", "-f"], check=False, capture_output=True)
    shutil.rmtree(work / "buildah-root", ignore_errors=True)


# --- the independent computation ---------------------------------------------------------------


def _layer_tars(archive: Path) -> list[bytes]:
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        return [outer.extractfile(name).read() for name in manifest[0]["Layers"]]  # type: ignore[union-attr]


def expected_figures(archive: Path) -> list[dict[str, int]]:
    """Apply the layers bottom-up with plain dicts: path -> (layer, size, is_dir)."""
    import io

    view: dict[str, tuple[int, int, bool]] = {}
    figures = []
    wasted = []
    for i, raw in enumerate(_layer_tars(archive)):
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            members = [(m.name.strip("/").removeprefix("./"), m) for m in tar.getmembers()]
        content = sum(m.size for _, m in members if m.isreg())
        deletions = []
        for name, _m in members:
            base = name.rpartition("/")[2]
            parent = name.rpartition("/")[0]
            if base == ".wh..wh..opq":
                deletions += [p for p in view if p.startswith(parent + "/")]
            elif base.startswith(".wh."):
                target = (parent + "/" if parent else "") + base[4:]
                deletions += [p for p in view if p == target or p.startswith(target + "/")]
        wasted.append(0)
        for p in set(deletions):
            layer, size, _ = view.pop(p)
            wasted[layer] += size
        paths = set()
        for name, m in members:
            if name in ("", ".") or name.rpartition("/")[2].startswith(".wh."):
                continue
            paths.add(name)
            old = view.get(name)
            if old is not None and not (old[2] and m.isdir()):
                wasted[old[0]] += old[1]
                if old[2]:  # a non-directory replaces a whole directory
                    for p in [p for p in view if p.startswith(name + "/")]:
                        wasted[view[p][0]] += view.pop(p)[1]
            view[name] = (i, m.size if m.isreg() else 0, m.isdir())
        figures.append({"uncompressedSize": len(raw), "contentSize": content, "files": len(paths)})
    for i, fig in enumerate(figures):
        fig["survivingSize"] = sum(size for layer, size, _ in view.values() if layer == i)
        fig["wastedSize"] = wasted[i]
    return figures


@pytest.mark.parametrize("builder", ["classic", "buildkit", "buildah"])
def test_every_size_figure_equals_an_independent_computation(archives: dict[str, Path], builder: str) -> None:
    archive = archives[builder]
    doc = inspect_image(open_image(f"docker-archive:{archive}")).to_json(top_waste=1000)
    want = expected_figures(archive)
    got = [{k: layer[k] for k in ("uncompressedSize", "contentSize", "files", "survivingSize", "wastedSize")}
           for layer in doc["layers"]]
    assert got == want
    for layer in doc["layers"]:
        assert layer["size"] == layer["uncompressedSize"]  # docker-archive layers are plain tars
        assert layer["contentSize"] == layer["survivingSize"] + layer["wastedSize"]
    assert doc["waste"]["reclaimableBytes"] == sum(f["wastedSize"] for f in want)
    assert doc["totals"]["survivingSize"] == sum(f["survivingSize"] for f in want)


def test_waste_names_each_hidden_copy_and_who_hid_it(archives: dict[str, Path]) -> None:
    doc = inspect_image(open_image(f"docker-archive:{archives['buildkit']}")).to_json(top_waste=1000)
    paths = {p["path"]: p for p in doc["waste"]["paths"]}
    assert paths["/data/big"]["copies"] == [{"layer": 1, "size": 100000, "hiddenBy": 2, "reason": "overwritten"}]
    assert paths["/data/d/x"]["copies"] == [{"layer": 1, "size": 5000, "hiddenBy": 2, "reason": "deleted"}]
    assert paths["/data/keep/k"]["copies"] == [{"layer": 1, "size": 3, "hiddenBy": 3, "reason": "opaque"}]
    assert paths["/bin/busybox"]["copies"][0]["hiddenBy"] == 4
    assert doc["waste"]["paths"][0]["path"] == "/bin/busybox"  # largest first


def test_changes_per_layer_mark_added_modified_and_removed(archives: dict[str, Path]) -> None:
    ins = inspect_image(open_image(f"docker-archive:{archives['buildkit']}"))
    changes = {c.path: c for c in ins.layers[2].changes}
    assert (changes["data/big"].kind, changes["data/big"].lower) == ("~", 1)
    assert (changes["data/d/x"].kind, changes["data/d/x"].reason) == ("-", "whiteout")
    assert changes["etc/apk/keys"].kind == "-"
    opaque = {c.path: c for c in ins.layers[3].changes}
    assert (opaque["data/keep/k"].kind, opaque["data/keep/k"].reason) == ("-", "opaque")
    assert opaque["data/keep/n"].kind == "+"
    assert ins.layers[2].removed[1] == 5000 + sum(
        c.size for c in ins.layers[2].changes if c.path.startswith("etc/apk/keys/"))


def _dive(archive: Path, out: Path) -> dict[str, Any]:
    subprocess.run(["dive", "--ci", "--json", str(out), "--source", "docker-archive", str(archive)],
                   check=False, capture_output=True, env={**os.environ, "CI": "true"})
    return json.loads(out.read_text())  # dive exits 1 when its default CI rules fail; the JSON is written


@pytest.mark.parametrize("builder", ["classic", "buildkit", "buildah"])
def test_dive_figures_equal_dive_output(archives: dict[str, Path], builder: str, tmp_path: Path) -> None:
    report = _dive(archives[builder], tmp_path / "dive.json")
    dive = inspect_image(open_image(f"docker-archive:{archives[builder]}")).to_json()["waste"]["dive"]
    sizes = [layer["sizeBytes"] for layer in report["layer"]]
    assert dive["efficiency"] == report["image"]["efficiencyScore"]
    assert dive["wastedBytes"] == report["image"]["inefficientBytes"]
    assert dive["userWastedPercent"] == report["image"]["inefficientBytes"] / sum(sizes[1:])


def test_blame_names_the_provider_and_what_it_overrides(archives: dict[str, Path]) -> None:
    from layerkit.analyze import blame

    ins = inspect_image(open_image(f"docker-archive:{archives['classic']}"))
    big = blame(ins, "/data/big")
    assert big.provider == 2
    assert [(v.layer, v.fate, v.hidden_by) for v in big.overrides] == [(1, "overwritten", 2)]
    assert "head -c 100000" in big.overrides[0].created_by
    gone = blame(ins, "/data/d/x")
    assert gone.provider is None and gone.versions[0].fate == "whited-out"


def _layer(*members: tuple[str, bytes | None]) -> Any:
    """An in-memory layer for ``Union``: ``(name, data)`` files, ``(name, None)`` directories."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
            ti.size = len(data or b"")
            t.addfile(ti, io.BytesIO(data) if data is not None else None)

    class Layer:
        def open_tar(self) -> Any:
            return io.BytesIO(buf.getvalue())

    return Layer()


def test_dive_figures_of_a_deeply_nested_layer() -> None:
    """dive's trees are built, stacked and visited without recursion: 1200 levels (deeper than
    Python's recursion limit) give the figures a shallow stack would."""
    from layerkit.analyze import dive_figures
    from layerkit.union import Union

    deep = "/".join(["n"] * 1200)
    layers = [_layer(("n", None), (f"{deep}/x", b"12345")), _layer((f"{deep}/x", b"1")),
              _layer((".wh.n", b""), ("y", b"22"))]
    got = dive_figures(Union(layers))
    # /deep/x: 5 + 1 bytes in two layers. The whiteout of /n counts 0: the second layer's implicit
    # parents carry no payload, so stacked /n is no longer a directory for dive
    assert (got.wasted_bytes, got.size_bytes, got.user_size_bytes) == (6, 8, 3)
    assert got.efficiency == pytest.approx((1 + 0 + 2) / (6 + 0 + 2))
