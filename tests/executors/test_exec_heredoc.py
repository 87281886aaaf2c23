"""RUN heredocs run as BuildKit runs them (dispatchRun in dockerfile2llb/convert.go): a lone heredoc
with a shebang is an executable file under a read-only ``/dev/pipes``, a lone heredoc without one is
the shell's script, anything else is the command text with the bodies appended, read by the shell.

Docker 20.10's built-in Dockerfile frontend predates heredocs (it fails with "unknown instruction"),
so the comparison with BuildKit builds the equivalent Dockerfile that dispatchRun produces: exec-form
RUNs with the same argv, and a bind mount of the script at ``/dev/pipes``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from exec_helpers import docker_layers, layer_summary

from layerkit.build.builder import build
from layerkit.build.dockerfile.instructions import InlineFile, Run, parse_dockerfile
from layerkit.build.executors.heredoc import run_command
from layerkit.tarfs.reader import iter_entries, iter_layer
from layerkit.union import Union

SH = ("/bin/sh", "-c")

STEPS = [
    # (RUN text, what the body writes) — each a separate layer
    'RUN <<EOF\necho "plain $WHO" > /plain\nls /dev/pipes > /plain-pipes 2>&1 || true\nEOF\n',
    'RUN <<EOF\n#!/bin/sh -e\necho "shebang $0 $WHO" > /shebang\nls /dev/pipes >> /shebang\nEOF\n',
    "RUN <<-EOF sh\n\t\techo tabs > /tabs\n\tEOF\n",
    "RUN cat <<'RAW' > /raw && cat <<COOKED > /cooked\n$WHO\nRAW\n$WHO\nCOOKED\n",
    "RUN 3<<EOF\necho fd3 > /fd3\nEOF\n",
]


def _run(text: str) -> Run:
    (instr,) = parse_dockerfile("FROM scratch\n" + text, "Dockerfile").stages[0].instructions
    assert isinstance(instr, Run)
    return instr


@pytest.mark.parametrize(("text", "argv", "script"), [
    ("RUN <<EOF\necho hi\nEOF\n", (*SH, "echo hi\n"), None),
    ("RUN <<-EOF\n\techo hi\n\tEOF\n", (*SH, "echo hi\n"), None),  # <<- bodies are chomped
    ("RUN 3<<'EOF'\necho $X\nEOF\n", (*SH, "echo $X\n"), None),  # still "one heredoc word"; expand ignored
    ("RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n", (*SH, "/dev/pipes/EOF"),
     InlineFile("EOF", "#!/usr/bin/env python3\nprint(1)\n")),
    ("RUN python3 <<EOF\nprint(1)\nEOF\n", (*SH, "python3 <<EOF\nprint(1)\nEOF"), None),
    ("RUN <<A <<B\na\nA\nb\nB\n", (*SH, "<<A <<B\na\nA\nb\nB"), None),
    ("RUN <<EOF bash\n#!/bin/x\nEOF\n", (*SH, "<<EOF bash\n#!/bin/x\nEOF"), None),  # not alone: no file
    ('RUN ["cat", "<<EOF"]\n', ("cat", "<<EOF"), None),  # exec form: just text
])
def test_run_command_follows_buildkit(text: str, argv: tuple[str, ...], script: InlineFile | None) -> None:
    command = run_command(SH, _run(text))
    assert command.argv == argv
    assert command.script == script
    assert (command.key_parts() != []) is (script is not None)  # the script's text keys the cache


def test_shebang_body_is_part_of_the_cache_key() -> None:
    a = run_command(SH, _run("RUN <<EOF\n#!/bin/sh\necho a\nEOF\n"))
    b = run_command(SH, _run("RUN <<EOF\n#!/bin/sh\necho b\nEOF\n"))
    assert a.argv == b.argv and a.key_parts() != b.key_parts()


def _dockerfile(base: str) -> str:
    return f"FROM {base}\nENV WHO=world\n" + "".join(STEPS) + "RUN <<A <<B\na\nA\nb\nB\n"


def test_heredoc_forms_run_in_a_build(tmp_path: Path, layerkit_home: Path, alpine_image_oci: Path) -> None:
    (tmp_path / "Dockerfile").write_text(_dockerfile(f"oci:{alpine_image_oci}:3.20"))
    result = build(tmp_path, executor="native", home=layerkit_home)
    view = Union(result.image)
    assert view.read_bytes("/plain") == b"plain world\n"
    assert view.read_bytes("/plain-pipes").startswith(b"ls: /dev/pipes: No such file")  # only for scripts
    assert view.read_bytes("/shebang") == b"shebang /dev/pipes/EOF world\nEOF\n"
    assert view.read_bytes("/tabs") == b"tabs\n"
    assert view.read_bytes("/raw") == b"$WHO\n" and view.read_bytes("/cooked") == b"world\n"
    assert view.read_bytes("/fd3") == b"fd3\n"
    assert not view.exists("/dev/pipes")  # the script's mount never reaches a layer
    history = [h.created_by for h in result.image.config.history[-6:]]
    assert history[1] == "RUN /bin/sh -c /dev/pipes/EOF # buildkit"
    assert result.image.config.history[-1].empty_layer  # "<<A <<B" alone runs nothing


@pytest.mark.docker
def test_heredoc_layers_match_buildkit(tmp_path: Path, layerkit_home: Path, alpine_image_oci: Path,
                                       docker_client: Any, docker_cli: str) -> None:
    ours_ctx, theirs_ctx = tmp_path / "ours", tmp_path / "theirs"
    ours_ctx.mkdir()
    theirs_ctx.mkdir()
    (ours_ctx / "Dockerfile").write_text(_dockerfile(f"oci:{alpine_image_oci}:3.20"))
    ours = build(ours_ctx, executor="native", home=layerkit_home).image
    # what dispatchRun makes of each heredoc RUN, in syntax the 20.10 frontend knows
    base, tag = "lk-rungap-alpine:3.20", "lk-rungap-heredoc:1"
    lines = [f"FROM {base}", "ENV WHO=world"]
    for text in STEPS:
        command = run_command(SH, _run(text))
        mount = ""
        if command.script is not None:
            pipes = theirs_ctx / "pipes"
            pipes.mkdir()
            (pipes / command.script.name).write_text(command.script.content)
            (pipes / command.script.name).chmod(0o755)
            mount = "--mount=type=bind,source=pipes,target=/dev/pipes "
        lines.append(f"RUN {mount}{json.dumps(list(command.argv))}")
    (theirs_ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    subprocess.run(["skopeo", "copy", "-q", f"oci:{alpine_image_oci}:3.20", f"docker-daemon:{base}"], check=True)
    try:
        subprocess.run([docker_cli, "build", "-q", "--network=none", "-t", tag, str(theirs_ctx)], check=True,
                       capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})
        theirs = docker_layers(docker_client, tag)[1:]
    finally:
        for ref in (tag, base):
            try:
                docker_client.images.remove(ref, force=True)
            except docker.errors.ImageNotFound:  # a build that failed left nothing
                pass
    assert len(theirs) == len(STEPS)
    for n, layer in enumerate(ours.layers[1:1 + len(STEPS)]):
        with layer.open_tar() as f:
            mine = layer_summary(iter_layer(f))
        expected = layer_summary(iter_entries(io.BytesIO(theirs[n])))
        # BuildKit 0.8 (Engine 20.10) leaves its /etc/resolv.conf mount stub's parent in every RUN
        # layer, unchanged but for the mtime; later BuildKit (and layerkit) restore it
        if "etc" not in mine and expected.get("etc") == ("dir", 0o755, 0, 0, 0, "", ""):
            del expected["etc"]
        assert mine == expected, STEPS[n]
