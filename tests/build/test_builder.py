"""Specification of ``layerkit build``: each instruction's effect on config, history and layers,
stage selection, the step cache, reproducibility and error reporting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from layerkit.build.builder import BuildEvent, build
from layerkit.errors import BuildError, DockerfileSyntaxError
from layerkit.tarfs.reader import iter_entries

EMPTY_TAR_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def make_context(root: Path, dockerfile: str, files: dict[str, str | bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def layer_entries(layer: Any) -> dict[str, tuple[str, int, int, int, int, str, bytes]]:
    """path -> (type, mode, uid, gid, size, linkname, content) of one layer."""
    out = {}
    with layer.open_tar() as tar:
        for entry, content in iter_entries(tar):
            data = content.read() if content is not None else b""
            out[entry.path] = (entry.type.value, entry.mode, entry.uid, entry.gid, entry.size, entry.linkname, data)
    return out


def config_of(result: Any) -> dict[str, Any]:
    return json.loads(result.image.raw_config)  # type: ignore[no-any-return]


@pytest.fixture
def alpine(alpine_image_oci: Path) -> str:
    return f"oci:{alpine_image_oci}:3.20"


# -- metadata instructions ---------------------------------------------------------------------------


def test_metadata_instructions_set_config_and_history_like_buildkit(tmp_path: Path, layerkit_home: Path,
                                                                     alpine: str) -> None:
    ctx = make_context(tmp_path / "ctx", f"""\
FROM {alpine}
ENV A=b C="d e"
ENV D=${{A}}x
LABEL k=v "x y"=z
USER nobody
EXPOSE 80 443/udp 8000-8001
VOLUME /data
VOLUME ["/logs"]
CMD ["sh"]
ENTRYPOINT echo hi
SHELL ["/bin/sh", "-ec"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=1s --retries=3 CMD true
ONBUILD RUN echo child
MAINTAINER me@example.com
""")
    result = build(ctx)
    doc = config_of(result)
    cfg = doc["config"]
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=b", "C=d e", "D=bx"]
    assert cfg["Labels"] == {"k": "v", "x y": "z"}
    assert cfg["User"] == "nobody"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "443/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert cfg["Volumes"] == {"/data": {}, "/logs": {}}
    assert cfg["Cmd"] == ["sh"]  # set in this stage, so ENTRYPOINT keeps it
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "echo hi"]
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["StopSignal"] == "SIGTERM"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000,
                                  "Timeout": 1_000_000_000, "Retries": 3}
    assert cfg["OnBuild"] == ["RUN echo child"]
    assert doc["author"] == "me@example.com"
    created_by = [h["created_by"] for h in doc["history"][2:]]
    assert created_by == [
        "ENV A=b C=d e", "ENV D=bx", "LABEL k=v x y=z", "USER nobody",
        "EXPOSE map[443/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{}]", "VOLUME [/data]", "VOLUME [/logs]", 'CMD ["sh"]',
        'ENTRYPOINT ["/bin/sh" "-c" "echo hi"]', "SHELL [/bin/sh -ec]", "STOPSIGNAL SIGTERM",
        """HEALTHCHECK &{["CMD-SHELL" "true"] "5s" "1s" "0s" '\\x03'}""", "MAINTAINER me@example.com",
    ]
    assert all(h["empty_layer"] for h in doc["history"][2:])
    assert len(result.image.layers) == 1  # only the base layer


def test_entrypoint_resets_an_inherited_cmd(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    ctx = make_context(tmp_path / "ctx", f'FROM {alpine}\nENTRYPOINT ["/bin/echo"]\n')
    cfg = config_of(build(ctx))["config"]
    assert cfg["Entrypoint"] == ["/bin/echo"]
    assert "Cmd" not in cfg


def test_healthcheck_none_and_shell_changes_shell_form(tmp_path: Path, layerkit_home: Path) -> None:
    ctx = make_context(tmp_path / "ctx", 'FROM scratch\nHEALTHCHECK NONE\nSHELL ["/bin/bash", "-xc"]\nCMD run me\n')
    cfg = config_of(build(ctx))["config"]
    assert cfg["Healthcheck"] == {"Test": ["NONE"]}
    assert cfg["Cmd"] == ["/bin/bash", "-xc", "run me"]


def test_scratch_gets_default_path_and_platform(tmp_path: Path, layerkit_home: Path) -> None:
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nLABEL a=b\n")
    doc = config_of(build(ctx, platform="linux/arm64"))
    assert doc["architecture"] == "arm64" and doc["os"] == "linux"
    assert doc["config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert doc["rootfs"]["diff_ids"] == []


# -- ARG scoping -------------------------------------------------------------------------------------


def test_arg_scoping_follows_buildkit(tmp_path: Path, layerkit_home: Path, alpine_image_oci: Path) -> None:
    ctx = make_context(tmp_path / "ctx", """\
ARG BASE
ARG GLOBAL=g
FROM ${BASE}
LABEL before=[${GLOBAL}]
ARG GLOBAL
ARG TARGETARCH
ARG LOCAL=l-${GLOBAL}
ENV LOCAL=env-wins
LABEL after=${GLOBAL} arch=${TARGETARCH} local=${LOCAL} override=${OVR}
ARG OVR=default
LABEL ovr=${OVR}
""")
    result = build(ctx, build_args={"BASE": f"oci:{alpine_image_oci}:3.20", "OVR": "cli"}, platform="linux/amd64")
    labels = config_of(result)["config"]["Labels"]
    assert labels == {"before": "[]", "after": "g", "arch": "amd64", "local": "env-wins", "override": "",
                      "ovr": "cli"}
    assert "ARG LOCAL=l-g" in [h["created_by"] for h in config_of(result)["history"]]
    assert not any(e.startswith(("GLOBAL=", "OVR=")) for e in config_of(result)["config"]["Env"])


# -- filesystem instructions ------------------------------------------------------------------------------


def test_workdir_creates_the_directory_in_a_layer(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    ctx = make_context(tmp_path / "ctx", f"FROM {alpine}\nWORKDIR /app/sub\nWORKDIR ..\nWORKDIR /\n")
    result = build(ctx)
    doc = config_of(result)
    assert doc["config"]["WorkingDir"] == "/"
    assert [h["created_by"] for h in doc["history"][2:]] == ["WORKDIR /app/sub", "WORKDIR /app", "WORKDIR /"]
    assert [h.get("empty_layer", False) for h in doc["history"][2:]] == [False, False, True]
    first, second = result.image.layers[1:]
    assert set(layer_entries(first)) == {"app", "app/sub"}
    assert layer_entries(first)["app"][:4] == ("dir", 0o755, 0, 0)
    assert second.diff_id == EMPTY_TAR_DIFF_ID  # the directory existed: an empty layer, as Docker 20.10 keeps


def test_copy_rules(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    files = {"a.txt": "hello\n", "sub/b.txt": "world\n", "sub/deep/c.txt": "deep\n", "x.md": "md"}
    ctx = make_context(tmp_path / "ctx", f"""\
FROM {alpine}
WORKDIR /srv
COPY a.txt .
COPY sub /dst/
COPY sub/deep /srv/renamed
COPY a.txt /etc/newname
COPY --chown=nobody:nogroup --chmod=640 a.txt link /own/
COPY --chmod=u+x,go-r a.txt /sym
COPY nomatch* /empty/
COPY *.txt x.* /glob/
""", files)
    (ctx / "sub" / "b.txt").chmod(0o755)
    (ctx / "link").symlink_to("a.txt")
    layers = build(ctx).image.layers[2:]
    assert layer_entries(layers[0]) == {
        "srv": ("dir", 0o755, 0, 0, 0, "", b""),
        "srv/a.txt": ("file", 0o644, 0, 0, 6, "", b"hello\n"),
    }
    assert {k: v[:5] for k, v in layer_entries(layers[1]).items()} == {
        "dst": ("dir", 0o755, 0, 0, 0),
        "dst/b.txt": ("file", 0o755, 0, 0, 6),
        "dst/deep": ("dir", 0o755, 0, 0, 0),
        "dst/deep/c.txt": ("file", 0o644, 0, 0, 5),
    }
    assert set(layer_entries(layers[2])) == {"srv", "srv/renamed", "srv/renamed/c.txt"}
    etc = layer_entries(layers[3])
    assert set(etc) == {"etc", "etc/newname"} and etc["etc"][0] == "dir"  # the parent is part of the diff
    own = layer_entries(layers[4])
    assert own["own"][:4] == ("dir", 0o755, 65534, 65533)  # created by the copy: owned, not chmod'ed
    assert own["own/a.txt"][:4] == ("file", 0o640, 65534, 65533)
    assert own["own/link"][0] == "file" and own["own/link"][6] == b"hello\n"  # a named symlink is followed
    assert layer_entries(layers[5])["sym"][1] == 0o700
    assert layer_entries(layers[6]) == {}  # no match: nothing, not even /empty
    assert set(layer_entries(layers[7])) == {"glob", "glob/a.txt", "glob/x.md"}


def test_copy_more_sources_needs_a_directory_dest(tmp_path: Path, layerkit_home: Path) -> None:
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY a b /file\n", {"a": "1", "b": "2"})
    with pytest.raises(BuildError, match=r"^Dockerfile:2: .*must be a directory and end with a /"):
        build(ctx)


def test_copy_heredoc_parents_exclude_and_link(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    files = {"src/a/one.txt": "1", "src/a/two.log": "2", "src/b/three.txt": "3", "keep.txt": "k", "drop.txt": "d"}
    ctx = make_context(tmp_path / "ctx", f"""\
FROM {alpine}
ARG WHO=world
COPY <<EOF /greet.txt
hello ${{WHO}}
EOF
COPY <<'EOF' /raw.txt
hello ${{WHO}}
EOF
COPY --parents src/*/*.txt /out/
COPY --exclude=drop.txt --exclude=**/*.log . /ctx/
COPY --link keep.txt /linked/
""", files)
    layers = build(ctx).image.layers[1:]
    assert layer_entries(layers[0])["greet.txt"][6] == b"hello world\n"
    assert layer_entries(layers[1])["raw.txt"][6] == b"hello ${WHO}\n"
    assert set(layer_entries(layers[2])) == {"out", "out/src", "out/src/a", "out/src/a/one.txt", "out/src/b",
                                             "out/src/b/three.txt"}
    copied = set(layer_entries(layers[3]))
    assert "ctx/keep.txt" in copied and "ctx/src/a/one.txt" in copied
    assert "ctx/drop.txt" not in copied and "ctx/src/a/two.log" not in copied
    assert set(layer_entries(layers[4])) == {"linked", "linked/keep.txt"}


def test_copy_from_stage_keeps_ownership_and_index_refs(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    ctx = make_context(tmp_path / "ctx", f"""\
FROM scratch AS files
COPY --chown=1000:1000 a.txt /data/a.txt
FROM {alpine} AS unused
COPY missing-but-never-built /x
FROM {alpine}
COPY --from=files /data /copied
COPY --from=0 /data/a.txt /byindex.txt
COPY --from=files --chown=nobody /data/a.txt /chowned.txt
""", {"a.txt": "A"})
    result = build(ctx)
    layers = result.image.layers[1:]
    assert layer_entries(layers[0])["copied/a.txt"][2:4] == (1000, 1000)
    assert layer_entries(layers[1])["byindex.txt"][6] == b"A"
    assert layer_entries(layers[2])["chowned.txt"][2:4] == (65534, 65534)
    assert result.target == "2"


def test_target_builds_only_what_it_needs(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    ctx = make_context(tmp_path / "ctx", f"""\
FROM scratch AS one
COPY a.txt /a
FROM one AS two
COPY b.txt /b
FROM {alpine} AS broken
COPY nothing-here /x
""", {"a.txt": "a", "b.txt": "b"})
    result = build(ctx, target="two")
    assert result.target == "two"
    assert len(result.image.layers) == 2
    with pytest.raises(BuildError, match="no such stage"):
        build(ctx, target="three")


def test_add_extracts_local_archives_and_downloads_urls(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    import http.server
    import io
    import tarfile
    import threading

    def tar_bytes(mode: str) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as t:
            info = tarfile.TarInfo("inside/file.txt")
            info.size, info.uid, info.mode = 3, 42, 0o600
            t.addfile(info, io.BytesIO(b"abc"))
        return buf.getvalue()

    files = {"plain.tar": tar_bytes("w"), "z.tar.gz": tar_bytes("w:gz"), "z.tar.bz2": tar_bytes("w:bz2"),
             "z.tar.xz": tar_bytes("w:xz"), "notatar.gz": b"\x1f\x8b garbage"}

    payload = b"downloaded\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/files/data.bin"
    import hashlib

    good = "sha256:" + hashlib.sha256(payload).hexdigest()
    try:
        ctx = make_context(tmp_path / "ctx", f"""\
FROM {alpine}
ADD plain.tar /p/
ADD z.tar.gz z.tar.bz2 z.tar.xz /z/
ADD notatar.gz /raw/
ADD --checksum={good} {url} /dl/
ADD {url} /dl-renamed
""", files)
        layers = build(ctx).image.layers[1:]
        assert layer_entries(layers[0])["p/inside/file.txt"][1:4] == (0o600, 42, 0)
        assert set(layer_entries(layers[1])) == {"z", "z/inside", "z/inside/file.txt"}
        assert layer_entries(layers[2])["raw/notatar.gz"][0] == "file"
        dl = layer_entries(layers[3])["dl/data.bin"]
        assert dl[1] == 0o600 and dl[6] == payload
        assert layer_entries(layers[4])["dl-renamed"][6] == payload
        bad = make_context(tmp_path / "bad", f"FROM scratch\nADD --checksum=sha256:{'0' * 64} {url} /x\n")
        with pytest.raises(BuildError, match="^Dockerfile:2: ADD failed: .*digest mismatch"):
            build(bad)
        git = make_context(tmp_path / "git", "FROM scratch\nADD https://github.com/x/y.git /src\n")
        with pytest.raises(BuildError, match="not supported yet"):
            build(git)
    finally:
        server.shutdown()
        server.server_close()


def test_onbuild_triggers_run_in_the_child_build(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    parent = make_context(tmp_path / "parent", f"FROM {alpine}\nONBUILD COPY hello.txt /from-trigger\n"
                                               "ONBUILD LABEL triggered=yes\n")
    build(parent, tags=["onbuild-parent:1"])
    child = make_context(tmp_path / "child", "FROM onbuild-parent:1\nLABEL child=yes\n", {"hello.txt": "hi"})
    result = build(child)
    doc = config_of(result)
    assert doc["config"]["Labels"] == {"triggered": "yes", "child": "yes"}
    assert "OnBuild" not in doc["config"]
    assert "from-trigger" in layer_entries(result.image.layers[-1])


# -- cache -----------------------------------------------------------------------------------------------


def test_unchanged_rebuild_hits_the_cache_on_every_step(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    ctx = make_context(tmp_path / "ctx", f"""\
FROM {alpine}
WORKDIR /app
COPY a.txt .
COPY b.txt .
ADD dir /dir
""", {"a.txt": "a", "b.txt": "b", "dir/x": "x"})
    first = build(ctx)
    assert len(first.executed_steps) == 4 and first.cached_steps == ()
    events: list[BuildEvent] = []
    second = build(ctx, progress=events.append)
    assert second.executed_steps == () and len(second.cached_steps) == 4
    assert sum(e.kind == "cached" for e in events) == 4
    assert [x.digest for x in second.image.layers] == [x.digest for x in first.image.layers]

    (ctx / "b.txt").write_text("changed")
    third = build(ctx)
    assert third.cached_steps == ("WORKDIR /app", "COPY a.txt .")
    assert third.executed_steps == ("COPY b.txt .", "ADD dir /dir")

    fourth = build(ctx, no_cache=True)
    assert fourth.cached_steps == () and len(fourth.executed_steps) == 4


def test_cached_copy_from_reads_no_layer_of_the_source(tmp_path: Path, layerkit_home: Path, alpine: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The key of ``COPY --from`` is the source's chain ID: a hit neither indexes the source's layers
    nor reads /etc/passwd for ``--chown``."""
    import layerkit.union

    ctx = make_context(tmp_path / "ctx", f"""\
FROM {alpine} AS files
COPY a.txt /data/a.txt
FROM {alpine}
COPY --from=files --chown=nobody /data /copied
""", {"a.txt": "A"})
    first = build(ctx)

    def no_union(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cached build indexed layers")

    monkeypatch.setattr(layerkit.union, "Union", no_union)
    second = build(ctx)
    assert second.executed_steps == () and len(second.cached_steps) == 2
    assert second.digest == first.digest


def test_a_copy_after_a_context_change_does_not_read_the_base_again(tmp_path: Path, layerkit_home: Path,
                                                                     alpine: str, request: pytest.FixtureRequest) -> None:
    """Planning a COPY needs the headers of every layer below it; a rebuild takes those of layers read
    before from the store's cache of member lists instead of decompressing the base image again."""
    ctx = make_context(tmp_path / "ctx", f"""\
FROM {alpine}
COPY a.txt /etc/a.txt
COPY b.txt /etc/b.txt
""", {"a.txt": "a", "b.txt": "b"})
    build(ctx)
    opened = request.getfixturevalue("opened_layers")  # from here on
    (ctx / "a.txt").write_text("changed")
    again = build(ctx)
    assert again.executed_steps == ("COPY a.txt /etc/a.txt", "COPY b.txt /etc/b.txt")
    base, new_copy = (str(layer.digest) for layer in again.image.layers[:2])
    assert opened == [new_copy]  # the second COPY plans on the layer the first one just wrote
    assert base not in opened


def test_unchanged_rebuild_rewrites_no_blob(tmp_path: Path, layerkit_home: Path) -> None:
    """Config and manifest of an unchanged rebuild are already stored: reused, not written again."""
    from layerkit.store import open_store

    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY a.txt /a\n", {"a.txt": "a"})
    first = build(ctx, tags=["lk-build-same:1"])
    store = open_store()
    blobs = [store.blob_path(first.digest), store.blob_path(first.image.manifest.config.digest)]
    inodes = [b.stat().st_ino for b in blobs]
    second = build(ctx, tags=["lk-build-same:1"])
    assert second.digest == first.digest
    assert [b.stat().st_ino for b in blobs] == inodes


def test_mtime_only_change_is_still_a_cache_hit(tmp_path: Path, layerkit_home: Path) -> None:
    import os

    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY a.txt /a\n", {"a.txt": "same"})
    build(ctx)
    os.utime(ctx / "a.txt", (1_000_000, 1_000_000))
    assert build(ctx).cached_steps == ("COPY a.txt /a",)


def test_dockerignore_applies_and_changes_to_ignored_files_keep_the_cache(tmp_path: Path, layerkit_home: Path) -> None:
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY . /src/\n",
                       {".dockerignore": "# comment\n*.log\n!keep.log\n/build\n", "a.txt": "a", "x.log": "x",
                        "keep.log": "k", "build/out": "o"})
    result = build(ctx)
    assert set(layer_entries(result.image.layers[0])) == {"src", "src/.dockerignore", "src/Dockerfile",
                                                         "src/a.txt", "src/keep.log"}
    (ctx / "x.log").write_text("changed")
    assert build(ctx).cached_steps == ("COPY . /src/",)
    (ctx / "Dockerfile.dockerignore").write_text("*\n!a.txt\n")  # the Dockerfile-specific file wins
    assert set(layer_entries(build(ctx).image.layers[0])) == {"src", "src/a.txt"}


# -- reproducibility -------------------------------------------------------------------------------------


def test_source_date_epoch_builds_are_bit_for_bit_identical(tmp_path: Path, alpine: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    digests = []
    for n in (1, 2):
        monkeypatch.setenv("LAYERKIT_HOME", str(tmp_path / f"home{n}"))
        ctx = make_context(tmp_path / f"ctx{n}", f"FROM {alpine}\nWORKDIR /app\nCOPY . /app/\nENV X=1\n",
                           {"a.txt": "a", "d/b.txt": "b"})
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
        result = build(ctx, no_cache=True)
        doc = config_of(result)
        assert doc["created"] == "2023-11-14T22:13:20Z"
        assert {h["created"] for h in doc["history"][2:]} == {"2023-11-14T22:13:20Z"}
        for layer in result.image.layers[1:]:
            with layer.open_tar() as tar:
                assert all(e.mtime_ns <= 1_700_000_000 * 10**9 for e, _ in iter_entries(tar))
        digests.append(result.digest)
    assert digests[0] == digests[1]


def test_without_epoch_created_is_now(tmp_path: Path, layerkit_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nLABEL a=b\n")
    created = config_of(build(ctx))["created"]
    when = datetime.datetime.fromisoformat(created)
    assert abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) < 60


# -- outputs ---------------------------------------------------------------------------------------------


def test_tags_and_outputs(tmp_path: Path, layerkit_home: Path, alpine: str) -> None:
    from layerkit.store import open_store
    from layerkit.transport import open_image

    ctx = make_context(tmp_path / "ctx", f"FROM {alpine}\nCOPY a.txt /a.txt\n", {"a.txt": "a"})
    out_dir = tmp_path / "layout"
    archive = tmp_path / "image.tar"
    rootfs = tmp_path / "rootfs"
    flat = tmp_path / "flat.tar"
    result = build(ctx, tags=["demo:1", "demo:latest"],
                   outputs=[f"oci:{out_dir}:v1", f"type=docker,dest={archive},name=demo:2",
                            f"type=local,dest={rootfs}", f"type=tar,dest={flat}"])
    assert set(result.tags) == {"demo:1", "demo:latest"}
    assert open_store().image("demo:1").digest == result.digest
    assert open_image(f"oci:{out_dir}:v1").config.diff_ids == result.image.config.diff_ids
    assert open_image(f"docker-archive:{archive}").config.diff_ids == result.image.config.diff_ids
    assert (rootfs / "a.txt").read_text() == "a" and (rootfs / "etc" / "alpine-release").exists()
    import tarfile

    with tarfile.open(flat) as t:
        assert "a.txt" in t.getnames()


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dockerfile", "line", "message"),
    [
        ("FROM scratch\nFOO bar\n", 2, "unknown instruction: FOO"),
        ('FROM scratch\nSHELL ["/bin/sh", -c]\n', 2, "SHELL requires the arguments to be in JSON form"),
        ("FROM scratch\nCOPY --from=nosuchstage /a /b\n", 2, "no stage named 'nosuchstage'"),
        ("FROM scratch\n\nCOPY missing.txt /x\n", 3, "not found"),
        ("FROM {alpine}\nCOPY --chown=nosuchuser a.txt /x\n", 2, "unknown user 'nosuchuser'"),
        ("FROM {alpine}\nCOPY --chown=root:nosuchgroup a.txt /x\n", 2, "unknown group 'nosuchgroup'"),
    ],
)
def test_bad_dockerfiles_exit_1_with_file_and_line(tmp_path: Path, layerkit_home: Path, alpine: str, run_cli: Any,
                                                   dockerfile: str, line: int, message: str) -> None:
    ctx = make_context(tmp_path / "ctx", dockerfile.format(alpine=alpine), {"a.txt": "a"})
    result = run_cli("build", str(ctx), "--progress", "plain")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: Dockerfile:{line}: ")
    assert message in last
    assert "Traceback" not in result.stderr


def test_library_errors_carry_the_location(tmp_path: Path, layerkit_home: Path) -> None:
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nWORKDIR /x\nNOPE\n")
    with pytest.raises(DockerfileSyntaxError) as info:
        build(ctx)
    assert info.value.line == 3


def test_run_without_an_executor_says_what_to_install(tmp_path: Path, layerkit_home: Path) -> None:
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nRUN true\n")
    with pytest.raises(BuildError, match=r"^Dockerfile:2: .*(executor|exit code)"):
        build(ctx, executor="no_such_executor")


# -- CLI -------------------------------------------------------------------------------------------------


def test_cli_plain_progress_json_progress_and_iidfile(tmp_path: Path, layerkit_home: Path, run_cli: Any) -> None:
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nCOPY a.txt /a\nLABEL x=y\n", {"a.txt": "a"})
    iid = tmp_path / "iid"
    first = run_cli("build", str(ctx), "--progress", "plain", "-t", "cli:1", "--iidfile", str(iid),
                    "--label", "extra=1")
    assert first.exit_code == 0, first.stderr
    assert "#1 [0 1/1] FROM scratch" in first.stderr
    assert "#2 [0 1/1] COPY a.txt /a" in first.stderr
    assert iid.read_text() == first.stdout.strip()
    second = run_cli("build", str(ctx), "--progress", "json", "--label", "extra=1")
    events = [json.loads(line) for line in second.stderr.splitlines()]
    assert {"event": "cached", "step": 2, "text": "COPY a.txt /a"}.items() <= events[3].items() or any(
        e["event"] == "cached" for e in events)
    assert events[-1]["event"] == "result" and events[-1]["digest"] == second.stdout.strip()
    assert second.stdout.strip() == first.stdout.strip()  # same inputs, same labels, cached: same image


def test_cli_dockerfile_dump(tmp_path: Path, run_cli: Any) -> None:
    df = tmp_path / "Dockerfile"
    df.write_text("FROM alpine AS base\nRUN echo hi\n")
    result = run_cli("dockerfile", "dump", str(df))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ['(from "alpine" "AS" "base")', '(run "echo hi")']


def test_plain_progress_prints_a_last_output_line_without_newline() -> None:
    from types import SimpleNamespace

    from layerkit.cli.build import _PlainRenderer

    lines: list[str] = []
    render = _PlainRenderer(lines.append)
    render(SimpleNamespace(kind="output", step=3, data=b"first\nta"))
    render(SimpleNamespace(kind="output", step=3, data=b"il"))
    render(SimpleNamespace(kind="done", step=3, seconds=0.25))
    assert lines == ["#3 first", "#3 tail", "#3 DONE 0.2s"]


def test_hard_links_survive_copy_from_the_context_and_from_a_stage(tmp_path: Path, layerkit_home: Path) -> None:
    ctx = make_context(tmp_path / "ctx", """\
FROM scratch AS files
COPY src /src
FROM scratch
COPY --from=files /src /app
""", {"src/a.txt": "hello\n"})
    (ctx / "src" / "hard").hardlink_to(ctx / "src" / "a.txt")
    result = build(ctx)
    copied = layer_entries(result.image.layers[0])
    assert copied["app/a.txt"][0] == "file" and copied["app/hard"][0] == "hardlink"
    assert copied["app/hard"][5] == "app/a.txt"  # a link to the copy, not a second file
