"""A step's output reaches the builder's ``output`` callback while the step runs, on every executor,
and ``layerkit build --progress plain`` prints each line as it comes — not everything at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from exec_helpers import PATH, make_write_layer

from layerkit.build.executor import RunRequest
from layerkit.spec import host_platform
from layerkit.store import LocalStore

PAUSE = 1.5
SCRIPT = f"echo first; sleep {PAUSE}; echo second"


def test_first_line_arrives_before_the_step_ends(executor: Any, exec_store: LocalStore, alpine_image: Any) -> None:
    arrivals: list[tuple[float, bytes]] = []
    request = RunRequest(image=alpine_image, argv=("/bin/sh", "-c", SCRIPT), env=(PATH,), workdir="/", uid=0,
                         gid=0, platform=host_platform(), store=exec_store, network="none", step=f"RUN {SCRIPT}")
    outcome = executor.run(request, write_layer=make_write_layer(exec_store),
                           output=lambda chunk: arrivals.append((time.monotonic(), chunk)))
    ended = time.monotonic()
    assert outcome.exit_code == 0
    assert b"".join(c for _, c in arrivals) == b"first\nsecond\n"
    first = next(t for t, c in arrivals if b"first" in c)
    assert ended - first >= PAUSE * 0.8, "the first line came only when the step ended"


def test_cli_plain_progress_prints_lines_live(tmp_path: Path, alpine_image_oci: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM oci:{alpine_image_oci}:3.20\nRUN {SCRIPT}\n")
    env = {**os.environ, "LAYERKIT_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from layerkit.cli import main; main()", "build", "--progress", "plain",
         "--no-cache", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    assert proc.stderr is not None
    seen: dict[str, float] = {}
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            for word in ("first", "second"):
                if line.endswith(f" {word}"):
                    seen[word] = time.monotonic()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert proc.wait(timeout=120) == 0, "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    assert set(seen) == {"first", "second"}, "\n".join(lines)
    assert seen["second"] - seen["first"] >= PAUSE * 0.8, "lines were printed only at the end of the step"
