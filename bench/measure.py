"""Timing one command: wall seconds and peak RSS (of the process tree it waited for)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    seconds: float
    #: the largest RSS of the command or any descendant it reaped (``wait4``'s ``ru_maxrss``); for a
    #: client of a daemon (``docker build``) that is the client only
    peak_rss_mb: float


class CommandFailed(RuntimeError):
    pass


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    shell: bool = False,
) -> Sample:
    """Run to completion; raise with the output tail when it fails (a benchmark of a failure is no figure).

    With ``shell`` the single string in ``argv`` runs under ``bash -o pipefail`` (floor pipelines).
    """
    full_env = {**os.environ, **(env or {})}
    cmd = ["/bin/bash", "-o", "pipefail", "-c", " ".join(argv)] if shell else list(argv)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = output.decode(errors="replace")[-2000:]
        raise CommandFailed(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return Sample(seconds, usage.ru_maxrss / 1024)


def run_quiet(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: str | None = None,
) -> str:
    """Untimed setup/cleanup step."""
    r = subprocess.run(
        list(argv),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and r.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv)} exited {r.returncode}:\n{r.stderr[-2000:]}"
        )
    return r.stdout
