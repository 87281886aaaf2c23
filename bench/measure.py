"""Timing one command: wall seconds and peak RSS (of the process tree it waited for)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: GNU time (Debian package ``time``), which reports its child's ``ru_maxrss`` (``%M``, KiB)
GNU_TIME = "/usr/bin/time"
#: where its report files go: tmpfs when there is one (creating a file on disk is slow here)
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


@dataclass(frozen=True)
class Sample:
    """One run of one command."""

    seconds: float
    #: the largest RSS of the command or any descendant it reaped; for a client of a daemon
    #: (``docker build``) that is the client only
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
    # The command's own peak RSS needs a small parent: a child of this process starts as a copy of it
    # (fork, or vfork's shared memory up to exec), and Linux keeps that size in the child's ru_maxrss,
    # so wait4 here would report at least this process's RSS. GNU time forks the command from ~2 MB.
    # Its report file exists before the clock starts (no file creation in the timed region).
    with tempfile.NamedTemporaryFile(prefix="bench-rss-", dir=_SCRATCH) as report:
        measured = [GNU_TIME, "-f", "%M", "-o", report.name, *cmd] if _has_gnu_time() else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(
            measured, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        reported = report.read().split()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = output.decode(errors="replace")[-2000:]
        raise CommandFailed(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    # GNU time's last word is %M in KiB; without it, wait4's figure (an upper bound, see above)
    kib = int(reported[-1]) if measured is not cmd else usage.ru_maxrss
    return Sample(seconds, kib / 1024)


def _has_gnu_time() -> bool:
    return os.access(GNU_TIME, os.X_OK)


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
